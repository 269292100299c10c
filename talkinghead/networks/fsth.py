"""FSTH networks: Zakharov et al., "Few-Shot Adversarial Learning of Realistic Neural Talking Head Models", ICCV 2019.

One class per component of section 3.2: the embedder E (Embedder) and the generator G with its projection P
(FSTHGenerator). The projection discriminator D lives in talkinghead.networks.discriminators (shared with LPD).
Defaults are the paper's scale at 256 x 256: 512-d embeddings, self-attention at 32 x 32 (E, D, G's encoder) and
64 x 64 (G's decoder), spectral norm on every conv and linear layer except P.

Frames and sketches (rasterised landmarks) are float RGB in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from talkinghead.networks.blocks import (
    AdaINResBlock2d,
    ResBlockDown2d,
    SelfAttention2d,
    assert_shape,
    maybe_spectral_norm,
    split_adain_parameters,
)
from talkinghead.networks.discriminators import _ResidualEmbeddingTrunk

__all__ = ["Embedder", "FSTHGenerator"]


class Embedder(nn.Module):
    """E of FSTH 3.2: (frame || sketch) -> 512-d embedding; the video embedding is the mean over K frames.

    The trunk is the projection discriminator's V without its final residual block (the shared
    ``_ResidualEmbeddingTrunk``): residual down-sampling blocks to 4 x 4 x 512 at 256 px, self-attention at 32 x 32,
    ReLU and SUM-pooling over space (as the paper; not a mean, so e scales with the final map's area).

    Args:
        in_channels: channels of frame || sketch (3 + 3).
        block_expansion: channels of the first block; each later block doubles them.
        max_features: cap on the channels of any block.
        num_down_blocks: down-sampling residual blocks (256 -> 4 px with 6).
        embedding_dim: size of e.
        self_attention_resolution: output size (px) of the down block followed by self-attention; None for none
            (a size no block reaches raises ValueError).
        image_size: frame height and width.
        spectral_norm: spectral normalisation of every conv.

    Shapes: frames, sketches (b, k, 3, s, s) -> e (b, embedding_dim) (mean over k); embed_frames -> (b, k, d).
    """

    def __init__(
        self,
        in_channels: int = 6,  # frame || sketch
        block_expansion: int = 64,  # 64, 128, 256, 512, 512, 512 channels
        max_features: int = 512,  # ... capped at 512
        num_down_blocks: int = 6,  # 256 -> 4 px
        embedding_dim: int = 512,  # 512-d e
        self_attention_resolution: int | None = 32,  # self-attention at 32 x 32 (FSTH 3.2)
        image_size: int = 256,  # 256 x 256 frames
        spectral_norm: bool = True,  # spectral norm everywhere (FSTH 3.2)
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.embedding_dim = in_channels, image_size, embedding_dim
        self.trunk = _ResidualEmbeddingTrunk(in_channels, block_expansion, max_features, num_down_blocks, 0,
                                             embedding_dim, self_attention_resolution, image_size, spectral_norm)

    def embed_frames(self, frames: Tensor, sketches: Tensor) -> Tensor:
        """Per-frame embeddings. Args: frames, sketches (b, k, 3, s, s). Returns: (b, k, embedding_dim)."""
        sizes = assert_shape(frames, "b k c h w", h=self.image_size, w=self.image_size)
        assert_shape(sketches, "b k c h w", b=sizes["b"], k=sizes["k"], h=self.image_size, w=self.image_size)
        pairs = rearrange(torch.cat([frames, sketches], dim=2), "b k c h w -> (b k) c h w")
        embeddings = self.trunk(pairs)["embedding"]
        return rearrange(embeddings, "(b k) d -> b k d", b=sizes["b"])

    def forward(self, frames: Tensor, sketches: Tensor) -> Tensor:
        """Video embedding e. Args: frames, sketches (b, k, 3, s, s). Returns: (b, embedding_dim), mean over k."""
        return self.embed_frames(frames, sketches).mean(dim=1)


class FSTHGenerator(nn.Module):
    """G of FSTH 3.2: sketch -> image; instance-norm down blocks, self-attention, AdaIN res/up blocks with psi = P e.

    Encoder: ResBlockDown2d (affine instance norm; the first block without pre-activation) per entry of
    ``down_channels``, self-attention after the one whose output is ``self_attention_down_resolution`` px.
    Bottleneck: ``num_res_blocks`` AdaINResBlock2d at the last encoder width. Decoder: an upsampling
    AdaINResBlock2d per entry of ``up_channels`` (as many as down blocks, so the output has the input's size),
    self-attention after the one whose output is ``self_attention_up_resolution`` px. Head: relu -> conv3x3 to
    RGB -> sigmoid.

    All AdaIN parameters psi (b, num_adain_parameters) come from outside, concatenated in module order (bottleneck
    blocks, then up blocks; within a block [gamma_1 | beta_1 | gamma_2 | beta_2]). ``adain_parameters`` computes
    psi = P e with P = ``projection``, a bias-free linear layer WITHOUT spectral norm: psi is then exactly linear in
    e, and the fine-tuning stage can initialise its free psi' = P e_new and train it directly.

    A self-attention resolution that no block reaches raises ValueError; pass None to leave that attention out.

    Args:
        image_size: sketch and output height and width.
        embedding_dim: size of the embedder's e (input of P).
        down_channels: output channels of each encoder block (each halves the size).
        num_res_blocks: AdaIN residual blocks at the bottleneck.
        up_channels: output channels of each decoder block (each doubles the size).
        self_attention_down_resolution: encoder block output size (px) followed by self-attention.
        self_attention_up_resolution: decoder block output size (px) followed by self-attention.
        spectral_norm: spectral normalisation of every conv (not of P).

    Shapes: sketch (b, 3, s, s), adain_params (b or 1, num_adain_parameters) -> image (b, 3, s, s) in [0, 1].
    """

    def __init__(
        self,
        image_size: int = 256,  # 256 x 256 frames
        embedding_dim: int = 512,  # 512-d e
        down_channels: Sequence[int] = (64, 128, 256, 512),  # 256 -> 16 px
        num_res_blocks: int = 5,  # five AdaIN residual blocks at 16 x 16 x 512
        up_channels: Sequence[int] = (256, 128, 64, 32),  # 16 -> 256 px
        self_attention_down_resolution: int | None = 32,  # self-attention at 32 x 32 in the encoder (FSTH 3.2)
        self_attention_up_resolution: int | None = 64,  # ... and at 64 x 64 in the decoder
        spectral_norm: bool = True,  # spectral norm everywhere except P (FSTH 3.2)
    ) -> None:
        super().__init__()
        down_channels, up_channels = list(down_channels), list(up_channels)
        if not down_channels or len(up_channels) != len(down_channels):
            raise ValueError(f"need as many up blocks as (at least one) down blocks so the output is image_size; got "
                             f"down_channels {down_channels} and up_channels {up_channels}")
        if image_size % 2 ** len(down_channels):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(down_channels)}")
        self.image_size, self.embedding_dim = image_size, embedding_dim
        down_sizes = [image_size // 2 ** (i + 1) for i in range(len(down_channels))]
        up_sizes = list(reversed([image_size] + down_sizes[:-1]))
        for name, wanted, sizes in (("self_attention_down_resolution", self_attention_down_resolution, down_sizes),
                                    ("self_attention_up_resolution", self_attention_up_resolution, up_sizes)):
            if wanted is not None and wanted not in sizes:
                raise ValueError(f"{name} {wanted} is reached by no block (their outputs are {sizes} px); "
                                 "pass None for no self-attention there")

        encoder: list[nn.Module] = []
        channels = 3
        for index, (out_channels, size) in enumerate(zip(down_channels, down_sizes)):
            encoder.append(ResBlockDown2d(channels, out_channels, norm="instance", spectral_norm=spectral_norm,
                                          preactivation=index > 0))
            if size == self_attention_down_resolution:
                encoder.append(SelfAttention2d(out_channels, spectral_norm=spectral_norm))
            channels = out_channels
        self.encoder = nn.Sequential(*encoder)

        self.res_blocks = nn.ModuleList(AdaINResBlock2d(channels, channels, spectral_norm=spectral_norm)
                                        for _ in range(num_res_blocks))
        up_blocks, up_attention = [], []
        for out_channels, size in zip(up_channels, up_sizes):
            up_blocks.append(AdaINResBlock2d(channels, out_channels, upsample=True, spectral_norm=spectral_norm))
            up_attention.append(SelfAttention2d(out_channels, spectral_norm=spectral_norm)
                                if size == self_attention_up_resolution else nn.Identity())
            channels = out_channels
        self.up_blocks = nn.ModuleList(up_blocks)
        self.up_attention = nn.ModuleList(up_attention)
        self.to_rgb = maybe_spectral_norm(nn.Conv2d(channels, 3, 3, padding=1), spectral_norm)

        self._adain_sizes = [block.num_adain_parameters for block in [*self.res_blocks, *self.up_blocks]]
        self.num_adain_parameters = sum(self._adain_sizes)
        self.projection = nn.Linear(embedding_dim, self.num_adain_parameters, bias=False)  # P, no spectral norm

    def adain_parameters(self, embedding: Tensor) -> Tensor:
        """psi = P e. Args: embedding (b, embedding_dim). Returns: (b, num_adain_parameters)."""
        assert_shape(embedding, (None, self.embedding_dim))
        return self.projection(embedding)

    def forward(self, sketch: Tensor, adain_params: Tensor) -> Tensor:
        """Args: sketch (b, 3, s, s); adain_params psi (b or 1, num_adain_parameters), one row broadcast over the
        batch. Returns: image (b, 3, s, s) in [0, 1]."""
        assert_shape(sketch, "b 3 h w", h=self.image_size, w=self.image_size)
        assert_shape(adain_params, (None, self.num_adain_parameters))
        if adain_params.shape[0] not in (1, sketch.shape[0]):
            raise ValueError(f"AdaIN parameters for {adain_params.shape[0]} samples but a batch of {sketch.shape[0]}")
        params = iter(split_adain_parameters(adain_params, self._adain_sizes))
        out = self.encoder(sketch)
        for block in self.res_blocks:
            out = block(out, next(params))
        for block, attention in zip(self.up_blocks, self.up_attention):
            out = attention(block(out, next(params)))
        return torch.sigmoid(self.to_rgb(F.relu(out)))
