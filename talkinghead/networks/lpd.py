"""Networks of LPD: latent pose descriptors (Burkov, Pasechnik, Grigorev, Lempitsky, CVPR 2020, section 3).

- :class:`IdentityEncoder`: ResNeXt-50 (32x4d) from torchvision -> 512-d identity embedding, averaged over the K
  identity frames of a video.
- :class:`PoseEncoder`: MobileNetV2 from torchvision -> 256-d pose descriptor of ONE (augmented) frame.
- :class:`LPDGenerator`: an MLP maps [identity || pose] (768) to every AdaIN parameter; the image grows from a
  learned 512 x 4 x 4 constant through AdaIN residual up blocks to 256 x 256, and the head gives RGB and a
  foreground mask (the image is RGB x mask).

The discriminator is :class:`~talkinghead.networks.discriminators.ProjectionDiscriminator` with RGB input
(``in_channels=3``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torchvision.models import MobileNetV2
from torchvision.models.resnet import Bottleneck, ResNet

from talkinghead.networks.blocks import AdaINResBlock2d, assert_shape, maybe_spectral_norm, split_adain_parameters

__all__ = ["IdentityEncoder", "PoseEncoder", "LPDGenerator"]

# torchvision's ImageNet statistics: the encoders normalise with them, so ImageNet-initialised trunks fit as is.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _ImageNetInput(nn.Module):
    """Maps [0, 1] RGB to torchvision's ImageNet-normalised input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        return (image - self.mean) / self.std


class IdentityEncoder(nn.Module):
    """The identity encoder of LPD 3.1: ResNeXt-50 (32x4d) -> identity embedding, mean over the K frames.

    With the defaults the trunk IS torchvision's ``resnext50_32x4d`` (same modules and parameter names; only the
    final linear layer maps to ``embedding_dim`` instead of 1000 classes), so its ImageNet weights load into
    ``trunk`` without the fc layer. ``base_channels``, ``layers`` and ``groups`` narrow it for tiny configs:
    stage i has ``base_channels * 2^i`` bottleneck planes (x4 output channels), as in torchvision.

    Args:
        embedding_dim: size of the identity embedding.
        layers: bottleneck blocks per stage.
        groups: grouped-convolution cardinality (the "32" of 32x4d).
        width_per_group: channels per group at 64 planes (the "4d").
        base_channels: planes of the first stage (and stem channels).

    Shapes: frames (b, k, 3, s, s) in [0, 1] -> (b, embedding_dim).
    """

    def __init__(
        self,
        embedding_dim: int = 512,  # 512-d identity embedding (LPD 3.1)
        layers: Sequence[int] = (3, 4, 6, 3),  # ResNeXt-50
        groups: int = 32,  # cardinality 32
        width_per_group: int = 4,  # 4d
        base_channels: int = 64,  # torchvision's stem / first stage width
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must give the blocks of the 4 ResNeXt stages, got {list(layers)}")
        self.embedding_dim = embedding_dim
        self.normalise = _ImageNetInput()
        trunk = ResNet(Bottleneck, list(layers), num_classes=embedding_dim, groups=groups,
                       width_per_group=width_per_group)
        if base_channels != 64:
            # torchvision fixes the widths at 64, 128, 256, 512 planes: rebuild the stem and stages narrower with
            # its own blocks and stage builder (the __init__ above has set groups and base_width for it).
            trunk.inplanes = base_channels
            trunk.conv1 = nn.Conv2d(3, base_channels, kernel_size=7, stride=2, padding=3, bias=False)
            trunk.bn1 = nn.BatchNorm2d(base_channels)
            trunk.layer1 = trunk._make_layer(Bottleneck, base_channels, layers[0])
            for index in range(1, 4):
                stage = trunk._make_layer(Bottleneck, base_channels * 2**index, layers[index], stride=2)
                setattr(trunk, f"layer{index + 1}", stage)
            trunk.fc = nn.Linear(base_channels * 8 * Bottleneck.expansion, embedding_dim)
        self.trunk = trunk

    def embed_frames(self, frames: Tensor) -> Tensor:
        """Per-frame embeddings: (n, 3, s, s) -> (n, embedding_dim)."""
        assert_shape(frames, "n 3 h w")
        return self.trunk(self.normalise(frames))

    def forward(self, frames: Tensor) -> Tensor:
        """Args: frames (b, k, 3, s, s) of one video per row. Returns: (b, embedding_dim), the mean over k."""
        sizes = assert_shape(frames, "b k 3 h w")
        per_frame = self.embed_frames(rearrange(frames, "b k c h w -> (b k) c h w"))
        return rearrange(per_frame, "(b k) d -> b k d", k=sizes["k"]).mean(dim=1)


class PoseEncoder(nn.Module):
    """The pose encoder of LPD 3.1: MobileNetV2 -> pose descriptor of one frame.

    torchvision's MobileNetV2 with a ``embedding_dim``-way linear head in place of the classifier; ``width_mult``
    narrows it for tiny configs (the last 1x1 conv keeps torchvision's 1280 channels).

    Args:
        embedding_dim: size of the pose descriptor.
        width_mult: torchvision's channel multiplier.
        dropout: dropout before the linear head (torchvision's classifier has 0.2; the descriptor feeds the
            generator, so none by default).

    Shapes: frame (b, 3, s, s) in [0, 1] -> (b, embedding_dim).
    """

    def __init__(
        self,
        embedding_dim: int = 256,  # 256-d pose descriptor (LPD 3.1)
        width_mult: float = 1.0,  # MobileNetV2 1.0
        dropout: float = 0.0,  # no dropout on the descriptor
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.normalise = _ImageNetInput()
        self.trunk = MobileNetV2(num_classes=embedding_dim, width_mult=width_mult, dropout=dropout)

    def forward(self, frame: Tensor) -> Tensor:
        """Args: frame (b, 3, s, s). Returns: (b, embedding_dim)."""
        assert_shape(frame, "b 3 h w")
        return self.trunk(self.normalise(frame))


class LPDGenerator(nn.Module):
    """The generator of LPD 3.1: [identity || pose] -> MLP -> AdaIN parameters; learned constant -> RGB and mask.

    A learned ``constant_channels`` x 4 x 4 tensor passes through ``num_res_blocks`` AdaIN residual blocks at 4 x 4
    and one upsampling AdaIN residual block per entry of ``channels`` (each doubles the size: six blocks take 4 px
    to 256 px), then relu -> conv3x3 to 4 channels: sigmoid RGB and a sigmoid foreground mask. Every AdaIN
    parameter of every block comes from the MLP (Linear -> ReLU -> Linear) on the concatenated embeddings.

    Args:
        identity_dim: size of the identity embedding.
        pose_dim: size of the pose descriptor.
        hidden_dim: width of the MLP's hidden layer.
        channels: output channels of each upsampling block.
        constant_channels: channels of the learned constant.
        num_res_blocks: non-upsampling AdaIN residual blocks at 4 x 4 before the up blocks.
        image_size: output side; must be 4 * 2^len(channels).
        spectral_norm: spectral normalisation of every conv (not of the MLP, whose outputs are AdaIN scales).

    Shapes: identity (b or 1, identity_dim), pose (b, pose_dim) -> {"rgb": (b, 3, s, s), "mask": (b, 1, s, s),
    "image": rgb x mask (b, 3, s, s)}, all in [0, 1].
    """

    def __init__(
        self,
        identity_dim: int = 512,  # identity embedding (ResNeXt-50 -> 512)
        pose_dim: int = 256,  # pose descriptor (MobileNetV2 -> 256)
        hidden_dim: int = 768,  # MLP [512 || 256] -> 768 -> AdaIN parameters
        channels: Sequence[int] = (512, 512, 512, 256, 128, 64),  # 4 -> 256 px
        constant_channels: int = 512,  # learned 512 x 4 x 4 constant
        num_res_blocks: int = 0,  # the paper's list is the six up blocks
        image_size: int = 256,  # 256 x 256 output
        spectral_norm: bool = True,  # spectral norm on every conv
    ) -> None:
        super().__init__()
        channels = list(channels)
        if not channels or image_size != 4 * 2 ** len(channels):
            raise ValueError(f"image_size {image_size} must be 4 * 2^len(channels) = {4 * 2 ** len(channels)} "
                             f"(one upsampling block per entry of channels {channels}, from a 4 x 4 constant)")
        self.identity_dim, self.pose_dim, self.image_size = identity_dim, pose_dim, image_size
        self.constant = nn.Parameter(torch.randn(1, constant_channels, 4, 4))
        width = constant_channels
        self.res_blocks = nn.ModuleList(AdaINResBlock2d(width, width, spectral_norm=spectral_norm)
                                        for _ in range(num_res_blocks))
        up_blocks = []
        for out_channels in channels:
            up_blocks.append(AdaINResBlock2d(width, out_channels, upsample=True, spectral_norm=spectral_norm))
            width = out_channels
        self.up_blocks = nn.ModuleList(up_blocks)
        self.to_output = maybe_spectral_norm(nn.Conv2d(width, 4, 3, padding=1), spectral_norm)
        self._adain_sizes = [block.num_adain_parameters for block in [*self.res_blocks, *self.up_blocks]]
        self.num_adain_parameters = sum(self._adain_sizes)
        self.mlp = nn.Sequential(
            nn.Linear(identity_dim + pose_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, self.num_adain_parameters),
        )

    def adain_parameters(self, identity: Tensor, pose: Tensor) -> Tensor:
        """MLP([identity || pose]). Args: identity (b or 1, identity_dim), pose (b, pose_dim). Returns (b, n)."""
        assert_shape(identity, (None, self.identity_dim))
        assert_shape(pose, (None, self.pose_dim))
        if identity.shape[0] not in (1, pose.shape[0]):
            raise ValueError(f"identity embeddings for {identity.shape[0]} samples but {pose.shape[0]} poses")
        return self.mlp(torch.cat([identity.expand(pose.shape[0], -1), pose], dim=-1))

    def forward(self, identity: Tensor, pose: Tensor) -> dict[str, Tensor]:
        """Args: identity (b or 1, identity_dim); pose (b, pose_dim).

        Returns: {"rgb": (b, 3, s, s), "mask": (b, 1, s, s), "image": rgb x mask (b, 3, s, s)} in [0, 1].
        """
        params = iter(split_adain_parameters(self.adain_parameters(identity, pose), self._adain_sizes))
        out = self.constant.expand(pose.shape[0], -1, -1, -1)
        for block in [*self.res_blocks, *self.up_blocks]:
            out = block(out, next(params))
        rgb, mask = torch.sigmoid(self.to_output(F.relu(out))).split([3, 1], dim=1)
        return {"rgb": rgb, "mask": mask, "image": rgb * mask}
