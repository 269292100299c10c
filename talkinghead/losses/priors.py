"""Keypoint and deformation priors of face-vid2vid (Wang et al. 2021, 3.3)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KeypointPriorLoss", "DeformationPriorLoss"]


class KeypointPriorLoss(nn.Module):
    """L_P, the keypoint prior: keypoints spread out, at a target mean depth (face-vid2vid 3.3).

    L = sum over ordered pairs i != j of max(0, D_t - |x_i - x_j|^2) + |mean_k z_k - z_t|, per sample, averaged
    over the batch. The double sum counts each unordered pair twice, as the paper's formula does.

    Args:
        distance_threshold: D_t, the squared distance below which two keypoints are pushed apart.
        depth_target: z_t, the target mean depth of the keypoints.
    """

    def __init__(self, distance_threshold: float = 0.1, depth_target: float = 0.33) -> None:
        super().__init__()
        self.distance_threshold = distance_threshold
        self.depth_target = depth_target

    def forward(self, keypoints: Tensor) -> Tensor:
        """Args:
            keypoints: (b, k, 3) x, y, z in normalised coordinates.

        Returns:
            scalar.
        """
        if keypoints.dim() != 3 or keypoints.shape[-1] != 3:
            raise ValueError(f"expected keypoints (b, k, 3), got {tuple(keypoints.shape)}")
        squared = (keypoints.unsqueeze(2) - keypoints.unsqueeze(1)).pow(2).sum(-1)  # (b, k, k)
        penalty = F.relu(self.distance_threshold - squared)
        # The diagonal (i = j) would add D_t per keypoint: leave it out.
        off_diagonal = penalty.sum((1, 2)) - penalty.diagonal(dim1=1, dim2=2).sum(-1)
        depth = (keypoints[..., 2].mean(-1) - self.depth_target).abs()
        return (off_diagonal + depth).mean()


class DeformationPriorLoss(nn.Module):
    """L_Δ, the deformation prior: the L1 norm of the expression deltas δ (face-vid2vid 3.3).

    |δ_k|_1 (summed over x, y, z) averaged over keypoints and the batch.
    """

    def forward(self, deltas: Tensor) -> Tensor:
        """Args:
            deltas: (b, k, 3) expression deformations δ.

        Returns:
            scalar.
        """
        if deltas.dim() != 3 or deltas.shape[-1] != 3:
            raise ValueError(f"expected deltas (b, k, 3), got {tuple(deltas.shape)}")
        return deltas.abs().sum(-1).mean()
