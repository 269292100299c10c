"""Dice loss on a predicted foreground mask (LPD, Burkov et al. 2020, section 3.2)."""

from __future__ import annotations

from torch import Tensor, nn

from talkinghead.networks.blocks import assert_shape

__all__ = ["DiceLoss"]


class DiceLoss(nn.Module):
    """1 - Dice(m, m*) = 1 - (2 sum m m* + eps) / (sum m + sum m* + eps), per image, averaged over the batch.

    Args:
        eps: smoothing added to numerator and denominator, so an empty target with an empty prediction scores 0.
    """

    def __init__(self, eps: float = 1.0) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, mask: Tensor, target: Tensor) -> Tensor:
        """Args: mask (b, 1, h, w) in [0, 1] (soft); target (b, 1, h, w) in {0, 1}. Returns: scalar."""
        assert_shape(target, "b 1 h w", **assert_shape(mask, "b 1 h w"))
        overlap = (mask * target).flatten(1).sum(1)
        total = mask.flatten(1).sum(1) + target.flatten(1).sum(1)
        return (1 - (2 * overlap + self.eps) / (total + self.eps)).mean()
