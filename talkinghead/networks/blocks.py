"""Layers shared by the talking-head networks (OSFV, FSTH, LPD).

Every block is a plain ``nn.Module`` with the layout ``conv -> norm -> activation`` (or the pre-activation
residual ``norm -> act -> conv`` twice). ``norm`` picks BatchNorm (the papers' choice; SyncBatchNorm conversion is
done by the Lightning side), affine InstanceNorm, or none. 3D blocks work on (b, c, d, h, w) volumes and only ever
resample the two spatial axes (h, w); the depth axis d keeps its size.

The FSTH / LPD blocks (AdaptiveInstanceNorm2d, SelfAttention2d, ResBlockDown2d, AdaINResBlock2d) follow BigGAN's
pre-activation residual layout and take a ``spectral_norm`` flag that normalises every conv they own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils import parametrizations

__all__ = [
    "Norm",
    "Activation",
    "assert_shape",
    "make_norm",
    "make_activation",
    "spectral_norm_all",
    "maybe_spectral_norm",
    "SameBlock2d",
    "SameBlock3d",
    "ResBlock2d",
    "ResBlock3d",
    "DownBlock2d",
    "DownBlock3d",
    "UpBlock2d",
    "UpBlock3d",
    "ResBottleneck2d",
    "Hourglass3d",
    "SPADE",
    "SPADEResBlock",
    "AdaptiveInstanceNorm2d",
    "SelfAttention2d",
    "ResBlockDown2d",
    "AdaINResBlock2d",
    "split_adain_parameters",
]

Norm = Literal["batch", "instance", "none"]
Activation = Literal["relu", "leaky_relu"]


def assert_shape(tensor: Tensor, pattern: str | Sequence[int | None], **dims: int) -> dict[str, int]:
    """Checks a tensor's shape at a network boundary and returns the named sizes.

    Args:
        tensor: the tensor to check.
        pattern: an einops-like string of axis names or integers, e.g. ``"b k 3"`` or ``"b c d h w"``, where a
            name used twice must have equal sizes; or a sequence of sizes with None for "any".
        **dims: required sizes of named axes, e.g. ``c=32``.

    Returns:
        {name: size} for every named axis of a string pattern (empty for a sequence pattern).

    Raises:
        ValueError: when the rank or a size does not match.
    """
    shape = tuple(tensor.shape)
    names = pattern.split() if isinstance(pattern, str) else list(pattern)
    if len(names) != len(shape):
        raise ValueError(f"expected a tensor of shape ({pattern}), got {shape}")
    sizes: dict[str, int] = {}
    for name, size in zip(names, shape):
        if name is None:
            continue
        if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
            expected = int(name)
        else:
            expected = dims.get(name, sizes.get(name, size))
            sizes[name] = expected
        if size != expected:
            raise ValueError(f"expected a tensor of shape ({pattern}) with {dims}, got {shape}")
    return sizes


def make_norm(kind: Norm, channels: int, dims: int) -> nn.Module:
    """A 2D or 3D normalisation layer: "batch" (affine BatchNorm), "instance" (affine InstanceNorm) or "none"."""
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels, affine=True)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def make_activation(kind: Activation) -> nn.Module:
    """ReLU, or LeakyReLU with slope 0.2 (the GAN convention)."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.2)
    raise ValueError(f"unknown activation {kind!r}")


def maybe_spectral_norm(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of one layer's ``weight`` when enabled."""
    return parametrizations.spectral_norm(module) if enabled else module


def spectral_norm_all(module: nn.Module) -> nn.Module:
    """Spectral normalisation of every convolution and linear layer inside ``module`` (in place; returns it)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and not _has_parametrized_weight(layer):
            parametrizations.spectral_norm(layer)
    return module


def _has_parametrized_weight(layer: nn.Module) -> bool:
    """Whether ``layer.weight`` is already parametrised (spectral norm applied twice would be wrong)."""
    return hasattr(layer, "parametrizations") and "weight" in layer.parametrizations


def _conv(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(*args, **kwargs)


class _SameBlock(nn.Module):
    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel_size: int, norm: Norm,
                 activation: Activation) -> None:
        super().__init__()
        self.conv = _conv(dims, in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = make_norm(norm, out_channels, dims)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class SameBlock2d(_SameBlock):
    """conv -> norm -> activation at the same resolution.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd square kernel, "same" padding.
        norm: normalisation after the convolution.
        activation: nonlinearity at the end.

    Shapes: (b, in, h, w) -> (b, out, h, w).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__(2, in_channels, out_channels, kernel_size, norm, activation)


class SameBlock3d(_SameBlock):
    """conv -> norm -> activation on a volume at the same resolution (see SameBlock2d).

    Shapes: (b, in, d, h, w) -> (b, out, d, h, w).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__(3, in_channels, out_channels, kernel_size, norm, activation)


class _ResBlock(nn.Module):
    def __init__(self, dims: int, channels: int, kernel_size: int, norm: Norm, activation: Activation) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, channels, dims)
        self.conv1 = _conv(dims, channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm2 = make_norm(norm, channels, dims)
        self.conv2 = _conv(dims, channels, channels, kernel_size, padding=kernel_size // 2)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.act(self.norm1(x)))
        return x + self.conv2(self.act(self.norm2(out)))


class ResBlock2d(_ResBlock):
    """Pre-activation residual block x + conv(act(norm(conv(act(norm(x)))))) keeping channels and resolution.

    Args:
        channels: input and output channels.
        kernel_size: odd square kernel, "same" padding.
        norm: normalisation before each convolution.
        activation: nonlinearity before each convolution.

    Shapes: (b, c, h, w) -> (b, c, h, w).
    """

    def __init__(self, channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__(2, channels, kernel_size, norm, activation)


class ResBlock3d(_ResBlock):
    """Pre-activation 3D residual block (see ResBlock2d).

    Shapes: (b, c, d, h, w) -> (b, c, d, h, w).
    """

    def __init__(self, channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__(3, channels, kernel_size, norm, activation)


class DownBlock2d(nn.Module):
    """conv -> norm -> activation -> 2x2 average pooling.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd square kernel, "same" padding.
        norm: normalisation after the convolution.
        activation: nonlinearity.

    Shapes: (b, in, h, w) -> (b, out, h/2, w/2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.block = SameBlock2d(in_channels, out_channels, kernel_size, norm, activation)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.block(x))


class DownBlock3d(nn.Module):
    """Spatially strided conv (stride 1 x 2 x 2) -> norm -> activation; the depth axis keeps its size.

    A strided convolution rather than conv + pooling (as in the 2D block): the 3D hourglasses run at 16 x 64 x 64,
    where a full-resolution convolution before pooling would cost four times as much.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd cubic kernel.
        norm: normalisation after the convolution.
        activation: nonlinearity.

    Shapes: (b, in, d, h, w) -> (b, out, d, h/2, w/2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=(1, 2, 2), padding=kernel_size // 2)
        self.norm = make_norm(norm, out_channels, 3)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class UpBlock2d(nn.Module):
    """Nearest 2x upsampling -> conv -> norm -> activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd square kernel, "same" padding.
        norm: normalisation after the convolution.
        activation: nonlinearity.

    Shapes: (b, in, h, w) -> (b, out, 2h, 2w).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.block = SameBlock2d(in_channels, out_channels, kernel_size, norm, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpBlock3d(nn.Module):
    """Trilinear 1 x 2 x 2 upsampling (depth kept) -> conv -> norm -> activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd cubic kernel, "same" padding.
        norm: normalisation after the convolution.
        activation: nonlinearity.

    Shapes: (b, in, d, h, w) -> (b, out, d, 2h, 2w).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: Norm = "batch",
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.block = SameBlock3d(in_channels, out_channels, kernel_size, norm, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="trilinear", align_corners=False))


class ResBottleneck2d(nn.Module):
    """ResNet bottleneck 1x1 -> 3x3 (optionally strided) -> 1x1 with a width of channels/4 and a residual skip.

    Args:
        channels: input and output channels.
        stride: stride of the 3x3 convolution; with stride 2 the skip is a strided 1x1 convolution + norm.
        norm: normalisation after each convolution.

    Shapes: (b, c, h, w) -> (b, c, h/stride, w/stride).
    """

    def __init__(self, channels: int, stride: int = 1, norm: Norm = "batch") -> None:
        super().__init__()
        width = channels // 4
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 1),
            make_norm(norm, width, 2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=stride, padding=1),
            make_norm(norm, width, 2),
            nn.ReLU(),
            nn.Conv2d(width, channels, 1),
            make_norm(norm, channels, 2),
        )
        self.skip = (
            nn.Identity()
            if stride == 1
            else nn.Sequential(nn.Conv2d(channels, channels, 1, stride=stride), make_norm(norm, channels, 2))
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.skip(x))


class Hourglass3d(nn.Module):
    """3D U-Net ("hourglass") that halves h and w ``num_blocks`` times and restores them with skip connections.

    Encoder widths are min(max_features, block_expansion * 2^(i+1)); the decoder mirrors them, concatenating the
    encoder features at each scale, and ends with a 3x3x3 conv block over block_expansion + in_channels channels.

    Args:
        in_channels: input channels.
        block_expansion: width of the first scale.
        max_features: cap on the width.
        num_blocks: number of down (and up) blocks; h and w must be divisible by 2^num_blocks.
        norm: normalisation in every block.

    Shapes: (b, in_channels, d, h, w) -> (b, out_channels, d, h, w) with out_channels = block_expansion + in_channels.
    """

    def __init__(self, in_channels: int, block_expansion: int = 32, max_features: int = 1024, num_blocks: int = 5,
                 norm: Norm = "batch") -> None:
        super().__init__()
        widths = [in_channels] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1], norm=norm) for i in range(num_blocks))
        up = []
        for i in reversed(range(num_blocks)):
            in_up = widths[i + 1] * (1 if i == num_blocks - 1 else 2)
            up.append(UpBlock3d(in_up, min(max_features, block_expansion * 2 ** i), norm=norm))
        self.up = nn.ModuleList(up)
        self.out_channels = block_expansion + in_channels
        self.out = SameBlock3d(self.out_channels, self.out_channels, 3, norm=norm)
        self.num_blocks = num_blocks

    def forward(self, x: Tensor) -> Tensor:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.up:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return self.out(out)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al., CVPR 2019): norm(x) * (1 + gamma(s)) + beta(s).

    Args:
        channels: channels of x (normalised without affine parameters).
        label_channels: channels of the conditioning map s.
        hidden_channels: width of the shared conv that maps s to gamma and beta.
        norm: parameter-free normalisation of x: "instance" (SPADE's and face-vid2vid's) or "batch".

    Shapes: x (b, c, h, w), s (b, label, h', w') (resized to h x w, nearest) -> (b, c, h, w).
    """

    def __init__(self, channels: int, label_channels: int, hidden_channels: int = 128,
                 norm: Literal["instance", "batch"] = "instance") -> None:
        super().__init__()
        self.norm = (nn.InstanceNorm2d if norm == "instance" else nn.BatchNorm2d)(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden_channels, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden_channels, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden_channels, channels, 3, padding=1)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        hidden = self.shared(segmap)
        return self.norm(x) * (1 + self.gamma(hidden)) + self.beta(hidden)


class SPADEResBlock(nn.Module):
    """SPADE residual block: SPADE -> LeakyReLU(0.2) -> conv twice, with a learned shortcut when widths differ.

    Args:
        in_channels: input channels.
        out_channels: output channels; the middle width is min(in, out).
        label_channels: channels of the conditioning map.
        hidden_channels: hidden width inside each SPADE.
        spectral_norm: spectral normalisation of the block's convolutions (not of the SPADE branches), as in SPADE.

    Shapes: x (b, in, h, w), s (b, label, h', w') -> (b, out, h, w).
    """

    def __init__(self, in_channels: int, out_channels: int, label_channels: int, hidden_channels: int = 128,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        middle = min(in_channels, out_channels)
        self.norm0 = SPADE(in_channels, label_channels, hidden_channels)
        self.conv0 = maybe_spectral_norm(nn.Conv2d(in_channels, middle, 3, padding=1), spectral_norm)
        self.norm1 = SPADE(middle, label_channels, hidden_channels)
        self.conv1 = maybe_spectral_norm(nn.Conv2d(middle, out_channels, 3, padding=1), spectral_norm)
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = SPADE(in_channels, label_channels, hidden_channels)
            self.conv_s = maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 1, bias=False), spectral_norm)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        skip = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        out = self.conv0(F.leaky_relu(self.norm0(x, segmap), 0.2))
        out = self.conv1(F.leaky_relu(self.norm1(out, segmap), 0.2))
        return skip + out


def split_adain_parameters(params: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Splits a row of concatenated AdaIN parameters (psi) into consecutive chunks of the given sizes.

    Args:
        params: (b, sum(sizes)).
        sizes: the chunk widths, in order (e.g. each layer's ``num_parameters``).

    Returns:
        list of (b, size) views, one per entry of ``sizes``.

    Raises:
        ValueError: when the last axis of ``params`` is not sum(sizes).
    """
    total = sum(sizes)
    if params.dim() != 2 or params.shape[-1] != total:
        raise ValueError(f"expected AdaIN parameters of shape (b, {total}) (the sum of sizes {list(sizes)}), "
                         f"got {tuple(params.shape)} with {params.shape[-1] if params.dim() else 0} parameters")
    return list(torch.split(params, list(sizes), dim=-1))


class AdaptiveInstanceNorm2d(nn.Module):
    """AdaIN (Huang & Belongie 2017) with externally given parameters: IN(x) * (1 + gamma) + beta.

    The parameters come from outside (FSTH's psi = P e, LPD's MLP) rather than from the layer. The scale is
    ``1 + gamma`` rather than ``gamma`` so that all-zero parameters leave the instance-normalised features
    unchanged (a neutral start for the projection / MLP that predicts them).

    Args:
        channels: channels c of x; the layer takes 2c parameters per sample.
        eps: added to the variance in the instance normalisation.

    Shapes: x (b, c, h, w), params (b or 1, 2c) = [gamma | beta] -> (b, c, h, w).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.num_parameters = 2 * channels
        self.norm = nn.InstanceNorm2d(channels, eps=eps, affine=False)

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        """Args: x (b, c, h, w); params (b or 1, 2c), gamma first. Returns: (b, c, h, w)."""
        assert_shape(x, "b c h w", c=self.channels)
        assert_shape(params, (None, self.num_parameters))
        if params.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"AdaIN parameters for {params.shape[0]} samples but a batch of {x.shape[0]}")
        gamma, beta = rearrange(params, "b (two c) -> two b c 1 1", two=2)
        return self.norm(x) * (1 + gamma) + beta


class SelfAttention2d(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * softmax(f(x)^T g(x)) h(x), gamma learned, starts at 0.

    Query f and key g are 1x1 convs to c / reduction channels, value h a 1x1 conv to c channels (the SAGAN
    paper's layout); the attention has no 1/sqrt(d) scaling, as in SAGAN. With gamma = 0 (its initial value) the
    block is the identity.

    Args:
        channels: input and output channels c.
        reduction: c / reduction channels for query and key.
        spectral_norm: spectral normalisation of the three 1x1 convs.

    Shapes: (b, c, h, w) -> (b, c, h, w); memory grows as (h w)^2 (use at <= 64 x 64).
    """

    def __init__(self, channels: int, reduction: int = 8, spectral_norm: bool = True) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.channels = channels
        self.query = maybe_spectral_norm(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.key = maybe_spectral_norm(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.value = maybe_spectral_norm(nn.Conv2d(channels, channels, 1), spectral_norm)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (b, c, h, w). Returns: (b, c, h, w)."""
        _, _, h, w = x.shape
        query, key, value = (rearrange(conv(x), "b c h w -> b 1 (h w) c") for conv in (self.query, self.key,
                                                                                      self.value))
        attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)  # softmax over the h w keys
        return x + self.gamma * rearrange(attended, "b 1 (h w) c -> b c h w", h=h, w=w)


class ResBlockDown2d(nn.Module):
    """BigGAN-style residual down-sampling block (FSTH 3.2 embedder E, generator encoder, discriminator V).

    Main path: [norm ->] relu -> conv3x3 -> [norm ->] relu -> conv3x3 -> 2x2 average pooling. Skip: conv1x1 ->
    2x2 average pooling when the channels change or the block downsamples, else the identity. Pooling is skipped on
    both paths when ``downsample`` is False (FSTH's non-downsampling residual block of the discriminator).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm: normalisation before each relu ("instance" in the FSTH generator encoder, "none" in E and D).
        spectral_norm: spectral normalisation of every conv.
        downsample: halve h and w (2x2 average pooling).
        preactivation: start with norm -> relu; False skips that first norm and relu, for the block that sees raw
            images (normalising or rectifying pixels / sketches would discard information).

    Shapes: (b, in, h, w) -> (b, out, h/2, w/2), or (b, out, h, w) when downsample is False.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: Norm = "none", spectral_norm: bool = True,
                 downsample: bool = True, preactivation: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.preactivation, self.downsample = preactivation, downsample
        self.norm1 = make_norm(norm, in_channels, 2) if preactivation else nn.Identity()
        self.conv1 = maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1), spectral_norm)
        self.norm2 = make_norm(norm, out_channels, 2)
        self.conv2 = maybe_spectral_norm(nn.Conv2d(out_channels, out_channels, 3, padding=1), spectral_norm)
        self.skip = (
            maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 1), spectral_norm)
            if in_channels != out_channels or downsample
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (b, in, h, w). Returns: (b, out, h/2, w/2) (h, w when not downsampling)."""
        out = self.norm1(x)
        if self.preactivation:
            out = F.relu(out)
        out = self.conv2(F.relu(self.norm2(self.conv1(out))))
        skip = self.skip(x)
        if self.downsample:
            out, skip = F.avg_pool2d(out, 2), F.avg_pool2d(skip, 2)
        return out + skip


class AdaINResBlock2d(nn.Module):
    """Residual block with AdaIN and optional 2x nearest upsampling (FSTH 3.2 generator residual / up blocks; LPD G).

    Main path: AdaIN(in) -> relu -> [2x up] -> conv3x3 -> AdaIN(out) -> relu -> conv3x3. Skip: [2x up] -> conv1x1
    when the channels change, else [2x up] alone.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        upsample: double h and w (nearest neighbour) on both paths.
        spectral_norm: spectral normalisation of every conv.

    Shapes: x (b, in, h, w), params (b or 1, num_adain_parameters) -> (b, out, 2h, 2w) (h, w without upsample).
    ``num_adain_parameters`` = 2 in + 2 out: [gamma_1 | beta_1 | gamma_2 | beta_2], the first AdaIN's first.
    """

    def __init__(self, in_channels: int, out_channels: int, upsample: bool = False, spectral_norm: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.upsample = in_channels, out_channels, upsample
        self.adain1 = AdaptiveInstanceNorm2d(in_channels)
        self.conv1 = maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1), spectral_norm)
        self.adain2 = AdaptiveInstanceNorm2d(out_channels)
        self.conv2 = maybe_spectral_norm(nn.Conv2d(out_channels, out_channels, 3, padding=1), spectral_norm)
        self.skip = (
            maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 1), spectral_norm)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.num_adain_parameters = self.adain1.num_parameters + self.adain2.num_parameters

    def _resample(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest") if self.upsample else x

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        """Args: x (b, in, h, w); params (b or 1, num_adain_parameters). Returns: (b, out, 2h, 2w) or (b, out, h, w)."""
        params1, params2 = split_adain_parameters(params, [self.adain1.num_parameters, self.adain2.num_parameters])
        out = self.conv1(self._resample(F.relu(self.adain1(x, params1))))
        out = self.conv2(F.relu(self.adain2(out, params2)))
        return out + self.skip(self._resample(x))
