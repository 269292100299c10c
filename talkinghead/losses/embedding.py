"""Embedding match: keeps an embedder's output close to a learned per-video (or per-person) embedding."""

from __future__ import annotations

from torch import Tensor, nn

from talkinghead.networks.blocks import assert_shape

__all__ = ["EmbeddingMatchLoss"]


class EmbeddingMatchLoss(nn.Module):
    """L_MCH of FSTH (Zakharov et al. 2019, 3.2), also LPD's identity embedding match: |W_i - e_i|_1.

    The L1 distance is averaged over the embedding's dimensions (and the batch) rather than summed, so the
    paper's weight (80 in FSTH) does not scale with the embedding size; the gradient direction is the same.
    """

    def forward(self, embedding: Tensor, target: Tensor) -> Tensor:
        """Args:
            embedding: (b, d), e.g. the video embedding e_i averaged over K frames.
            target: (b, d), e.g. the discriminator's column W_i.

        Returns:
            scalar.
        """
        assert_shape(target, "b d", **assert_shape(embedding, "b d"))
        return (embedding - target).abs().mean()
