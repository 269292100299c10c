"""Patch discriminators: the multi-scale PatchGAN D of face-vid2vid (pix2pixHD layout, spectral norm)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

__all__ = ["PatchDiscriminator", "MultiScalePatchDiscriminator"]


def _conv(in_channels: int, out_channels: int, stride: int, spectral_norm: bool) -> nn.Conv2d:
    # pix2pixHD's padding ceil((4 - 1) / 2) = 2: stride-1 layers grow the map by one pixel, so even 16 px inputs
    # keep a non-empty patch map.
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=stride, padding=2)
    return _spectral_norm(conv) if spectral_norm else conv


class PatchDiscriminator(nn.Module):
    """One PatchGAN (Isola et al. 2017; pix2pixHD's N-layer D) scale of the face-vid2vid discriminator D.

    Layout: ``num_blocks`` 4x4 convs with LeakyReLU 0.2 (instance norm on all but the first; stride 2 on all but
    the last), then a 4x4 conv to one logit per patch.

    Args:
        in_channels: input image channels (3 for RGB; more for a conditioned input such as image || sketch).
        block_expansion: channels of the first block; each later block doubles them.
        num_blocks: feature blocks before the logit conv.
        max_features: cap on the channels of any block.
        spectral_norm: spectral normalisation on every conv.
    """

    def __init__(
        self,
        in_channels: int = 3,
        block_expansion: int = 64,
        num_blocks: int = 4,
        max_features: int = 512,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks}")
        self.in_channels = in_channels
        blocks = []
        channels = in_channels
        for index in range(num_blocks):
            out_channels = min(block_expansion * 2**index, max_features)
            stride = 2 if index < num_blocks - 1 or num_blocks == 1 else 1
            layers: list[nn.Module] = [_conv(channels, out_channels, stride, spectral_norm)]
            if index > 0:
                layers.append(nn.InstanceNorm2d(out_channels, affine=True))
            layers.append(nn.LeakyReLU(0.2))
            blocks.append(nn.Sequential(*layers))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.logits = _conv(channels, 1, 1, spectral_norm)

    def forward(self, image: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Patch logits and the block activations used for feature matching.

        Args:
            image: (b, in_channels, h, w).

        Returns:
            {"features": list of num_blocks maps (b, c_i, h_i, w_i), "logits": (b, 1, h', w')}.
        """
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"expected (b, {self.in_channels}, h, w) input, got {tuple(image.shape)}")
        features = []
        x = image
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return {"features": features, "logits": self.logits(x)}


class MultiScalePatchDiscriminator(nn.Module):
    """The multi-scale PatchGAN discriminator D of face-vid2vid (Wang et al. 2021, 3.3; pix2pixHD, Wang et al. 2018).

    Scale s (0-based) sees the input downsampled s times by 2 (3x3 average pooling, as pix2pixHD), each with its
    own weights: 1 scale at 256 px, 2 at 512 px in the paper.

    Args:
        scales: number of image scales (one PatchGAN each).
        block_expansion: channels of each PatchGAN's first block.
        num_blocks: feature blocks per PatchGAN.
        max_features: cap on the channels of any block.
        spectral_norm: spectral normalisation on every conv.
        in_channels: input image channels.
    """

    def __init__(
        self,
        scales: int = 1,
        block_expansion: int = 64,
        num_blocks: int = 4,
        max_features: int = 512,
        spectral_norm: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be at least 1, got {scales}")
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, block_expansion, num_blocks, max_features, spectral_norm)
            for _ in range(scales)
        )

    def forward(self, image: Tensor) -> list[dict[str, Tensor | list[Tensor]]]:
        """Runs every scale.

        Args:
            image: (b, in_channels, h, w).

        Returns:
            one dict per scale, finest first: {"features": [maps], "logits": (b, 1, h', w')}.
        """
        outputs = []
        for index, discriminator in enumerate(self.discriminators):
            if index > 0:
                image = F.avg_pool2d(image, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            outputs.append(discriminator(image))
        return outputs
