"""Perceptual losses: VGG19 on an image pyramid (face-vid2vid, FOMM) and the single-scale face-VGG term."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.losses.layout import in_memory_order

__all__ = ["PerceptualPyramidLoss", "FaceVGGLoss", "image_pyramid"]


def image_pyramid(image: Tensor, scales: Sequence[float]) -> list[Tensor]:
    """The image at each relative scale, by antialiased bilinear downsampling of the full-size image.

    Args:
        image: (b, c, h, w).
        scales: relative sizes, e.g. (1, 0.5, 0.25, 0.125).

    Returns:
        one (b, c, round(h s), round(w s)) image per scale.
    """
    levels = []
    for scale in scales:
        if scale == 1:
            levels.append(image)
        else:
            size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
            # PyTorch's CPU kernel of antialiased resizing has no bfloat16/half version (bf16-mixed on the CPU)
            reduced = image.device.type == "cpu" and image.dtype in (torch.bfloat16, torch.float16)
            level = F.interpolate(image.float() if reduced else image, size=size, mode="bilinear",
                                  align_corners=False, antialias=True)
            levels.append(level.to(image.dtype))
    return levels


class PerceptualPyramidLoss(nn.Module):
    """L_P, the multi-scale perceptual loss of face-vid2vid (Wang et al. 2021, 3.3; FOMM, Siarohin et al. 2019).

    sum over pyramid scales s and layers l of w_l * mean |phi_l(x_s) - phi_l(y_s)|, where phi is a frozen feature
    network and the target's features carry no gradient.

    Args:
        features: (image (b, 3, h, w) in [0, 1], num_layers) -> list of the first num_layers feature maps, e.g.
            :class:`~talkinghead.networks.vgg.VGG19Features`.
        layer_weights: w_l per map from the first (relu1_1 ... relu5_1 for VGG19); fewer weights than maps use
            (and compute) only the first ones.
        scales: relative image sizes of the pyramid (256, 128, 64, 32 px at 256).
    """

    def __init__(
        self,
        features: nn.Module,
        layer_weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
        scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
    ) -> None:
        super().__init__()
        self.features = features
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.scales = tuple(float(s) for s in scales)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The loss between two image batches.

        Args:
            prediction: (b, 3, h, w) in [0, 1], the generated images.
            target: (b, 3, h, w) in [0, 1], the ground truth (no gradient flows into it).

        Returns:
            scalar.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
        total = prediction.new_zeros(())
        for x, y in zip(image_pyramid(prediction, self.scales), image_pyramid(target.detach(), self.scales)):
            x_features = self.features(x, len(self.layer_weights))
            with torch.no_grad():
                y_features = self.features(y, len(self.layer_weights))
            if len(x_features) != len(self.layer_weights):
                raise ValueError(f"{len(x_features)} feature maps but {len(self.layer_weights)} layer weights")
            for weight, fx, fy in zip(self.layer_weights, x_features, y_features):
                fx, fy = in_memory_order(fx, fy)
                total = total + weight * (fx - fy).abs().mean()
        return total


class FaceVGGLoss(PerceptualPyramidLoss):
    """The face-VGG perceptual term of face-vid2vid (3.3): :class:`PerceptualPyramidLoss` at one scale.

    Args:
        features: a frozen face feature network, e.g. :class:`~talkinghead.networks.vgg.FaceVGGFeatures`.
        layer_weights: w_l per returned map.
    """

    def __init__(
        self, features: nn.Module, layer_weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    ) -> None:
        super().__init__(features, layer_weights=layer_weights, scales=(1.0,))
