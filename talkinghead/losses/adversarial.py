"""Hinge GAN losses and discriminator feature matching (pix2pixHD / face-vid2vid 3.3).

Every loss here takes discriminator outputs as
:class:`~talkinghead.networks.discriminators.MultiScalePatchDiscriminator` returns them, a list over scales of {"features": [maps], "logits": (b, 1, h, w)}; a single dict or a bare logits
tensor (or a list of tensors) also works, so other discriminators (projection D) can reuse them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.losses.layout import in_memory_order

__all__ = ["GeneratorHingeLoss", "DiscriminatorHingeLoss", "FeatureMatchingLoss"]


def _scales(outputs: Any) -> list[Any]:
    """Discriminator outputs as a list over scales."""
    if isinstance(outputs, (Tensor, Mapping)):
        return [outputs]
    return list(outputs)


def _logits(outputs: Any) -> list[Tensor]:
    """The logits of every scale."""
    return [scale["logits"] if isinstance(scale, Mapping) else scale for scale in _scales(outputs)]


class GeneratorHingeLoss(nn.Module):
    """L_G, the generator side of the hinge GAN loss (Lim & Ye 2017; face-vid2vid 3.3): -mean D(G(x)).

    The mean over each scale's logits, averaged over scales.
    """

    def forward(self, fake: Any) -> Tensor:
        """Args:
            fake: discriminator outputs for generated images (list over scales, logits (b, 1, h, w)).

        Returns:
            scalar.
        """
        logits = _logits(fake)
        return sum(-scale.mean() for scale in logits) / len(logits)


class DiscriminatorHingeLoss(nn.Module):
    """L_D, the discriminator side of the hinge GAN loss: mean relu(1 - D(real)) + mean relu(1 + D(fake)).

    Averaged over scales; zero when every real logit is >= 1 and every fake logit <= -1.
    """

    def forward(self, real: Any, fake: Any) -> Tensor:
        """Args:
            real: discriminator outputs for real images (list over scales, logits (b, 1, h, w)).
            fake: discriminator outputs for generated images (the same structure).

        Returns:
            scalar.
        """
        real_logits, fake_logits = _logits(real), _logits(fake)
        if len(real_logits) != len(fake_logits):
            raise ValueError(f"{len(real_logits)} real scales but {len(fake_logits)} fake scales")
        total = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
        return total / len(real_logits)


class FeatureMatchingLoss(nn.Module):
    """L_FM, discriminator feature matching (pix2pixHD, Wang et al. 2018; face-vid2vid 3.3).

    mean |D_l(real) - D_l(fake)| per intermediate layer l, averaged over layers and then over scales; the real
    features carry no gradient.
    """

    def forward(self, real: Sequence[Mapping[str, Any]], fake: Sequence[Mapping[str, Any]]) -> Tensor:
        """Args:
            real: discriminator outputs for real images, list over scales of {"features": [(b, c, h, w)]}.
            fake: discriminator outputs for generated images, the same structure.

        Returns:
            scalar.
        """
        real_scales, fake_scales = _scales(real), _scales(fake)
        if len(real_scales) != len(fake_scales):
            raise ValueError(f"{len(real_scales)} real scales but {len(fake_scales)} fake scales")
        total = 0.0
        for real_scale, fake_scale in zip(real_scales, fake_scales):
            real_features, fake_features = real_scale["features"], fake_scale["features"]
            if len(real_features) != len(fake_features) or not real_features:
                raise ValueError("real and fake outputs need the same, non-zero number of feature maps")
            pairs = [in_memory_order(f, r.detach()) for r, f in zip(real_features, fake_features)]
            layers = [(f - r).abs().mean() for f, r in pairs]
            total = total + sum(layers) / len(layers)
        return total / len(real_scales)
