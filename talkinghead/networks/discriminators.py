"""Discriminators: the multi-scale PatchGAN D of face-vid2vid (pix2pixHD layout, spectral norm) and the projection
discriminator of FSTH / LPD (Miyato & Koyama 2018), with the residual trunk it shares with the FSTH embedder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from talkinghead.networks.blocks import ResBlockDown2d, SelfAttention2d, assert_shape, maybe_spectral_norm

__all__ = ["PatchDiscriminator", "MultiScalePatchDiscriminator", "ProjectionDiscriminator"]


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


class _ResidualEmbeddingTrunk(nn.Module):
    """The residual down-sampling trunk shared by FSTH's embedder E and the projection discriminator's V (FSTH 3.2).

    ``num_down_blocks`` ResBlockDown2d (no norm; the first without pre-activation) halve the image size each time,
    with min(block_expansion * 2^i, max_features) channels; a SelfAttention2d follows the block whose output is
    ``self_attention_resolution`` pixels on a side; ``num_res_blocks`` non-downsampling ResBlockDown2d follow; a
    1x1 conv maps to ``embedding_dim`` channels (only when the last width differs; with the paper's defaults it is
    512 already); then ReLU and SUM-pooling over space (FSTH: sum, not mean, so the scale of v grows with the
    final map's area, 4 x 4 at 256 px).

    Raises ValueError when image_size is not divisible by 2^num_down_blocks, or when self_attention_resolution is
    given (not None) but no down block outputs that resolution: an explicitly requested attention layer is never
    dropped silently; pass None to build the trunk without one.

    Shapes: (b, in_channels, s, s) -> {"features": [each stage's output map], "embedding": (b, embedding_dim)}.
    """

    def __init__(self, in_channels: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 num_res_blocks: int, embedding_dim: int, self_attention_resolution: int | None, image_size: int,
                 spectral_norm: bool) -> None:
        super().__init__()
        if num_down_blocks < 1:
            raise ValueError(f"num_down_blocks must be at least 1, got {num_down_blocks}")
        if image_size % 2**num_down_blocks:
            raise ValueError(f"image_size {image_size} is not divisible by 2^num_down_blocks = {2**num_down_blocks}")
        self.in_channels, self.image_size, self.embedding_dim = in_channels, image_size, embedding_dim
        resolutions = [image_size // 2 ** (i + 1) for i in range(num_down_blocks)]
        if self_attention_resolution is not None and self_attention_resolution not in resolutions:
            raise ValueError(f"self_attention_resolution {self_attention_resolution} is reached by no down block "
                             f"(their outputs are {resolutions} px); pass None for no self-attention")
        stages: list[nn.Module] = []
        channels = in_channels
        for index, resolution in enumerate(resolutions):
            out_channels = min(block_expansion * 2**index, max_features)
            block = ResBlockDown2d(channels, out_channels, spectral_norm=spectral_norm, preactivation=index > 0)
            if resolution == self_attention_resolution:
                block = nn.Sequential(block, SelfAttention2d(out_channels, spectral_norm=spectral_norm))
            stages.append(block)
            channels = out_channels
        stages += [ResBlockDown2d(channels, channels, spectral_norm=spectral_norm, downsample=False)
                   for _ in range(num_res_blocks)]
        self.stages = nn.ModuleList(stages)
        self.to_embedding = (
            nn.Identity()
            if channels == embedding_dim
            else maybe_spectral_norm(nn.Conv2d(channels, embedding_dim, 1), spectral_norm)
        )

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Args: x (b, in_channels, s, s). Returns: {"features": [maps (b, c_i, h_i, w_i)], "embedding": (b, d)}."""
        assert_shape(x, "b c h w", c=self.in_channels, h=self.image_size, w=self.image_size)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        embedding = F.relu(self.to_embedding(x)).sum(dim=(2, 3))
        return {"features": features, "embedding": embedding}


class ProjectionDiscriminator(nn.Module):
    """D of FSTH 3.2 (projection discriminator, Miyato & Koyama 2018): r = V(x [|| sketch])^T (W_i + w_0) + b.

    V is the residual trunk shared with the FSTH embedder (ResBlockDown2d stack, self-attention, ReLU, sum-pooling)
    plus ``num_res_blocks`` non-downsampling residual blocks; W holds one column W_i per training video, w_0 is a
    shared column and b a scalar bias. W and w_0 start ~ N(0, 0.02^2) (BigGAN's embedding scale; FSTH's embedding
    match loss pulls W_i towards the embedder's e_i during meta-learning), b at 0.

    The same class is LPD's RGB-only discriminator (in_channels = 3). The FSTH fine-tuning stage passes a ready
    column w' = w_0 + e_new instead of a video index.

    The number of videos is often known only from the data: build with ``num_videos=0`` and call
    ``set_num_videos`` before the optimizer is created. Loading a state dict whose W has another row count resizes
    W first (a load_state_dict pre-hook), so checkpoints load into a discriminator built with num_videos=0.

    Args:
        in_channels: input channels (6 = RGB || sketch in FSTH, 3 = RGB in LPD).
        num_videos: rows of W, one per training video (0 = not known yet; only ``column`` works then).
        block_expansion: channels of the first block; each later block doubles them.
        max_features: cap on the channels of any block.
        num_down_blocks: down-sampling residual blocks (256 -> 4 px with 6).
        num_res_blocks: non-downsampling residual blocks at the end of V (FSTH has one).
        embedding_dim: size of v, W_i and w_0.
        self_attention_resolution: output size (px) of the down block followed by self-attention; None for none.
        image_size: input height and width.
        spectral_norm: spectral normalisation of every conv of V (W, w_0, b are plain parameters).
        embedding_init_std: standard deviation of the initial W and w_0.

    Shapes: image (b, in_channels, s, s) and video_index (b,) or column (b or 1, embedding_dim) ->
    {"features": [maps], "embedding": (b, embedding_dim), "logits": (b, 1)}.
    """

    def __init__(
        self,
        in_channels: int = 6,  # frame || sketch
        num_videos: int = 0,  # set from the training data (set_num_videos)
        block_expansion: int = 64,  # 64, 128, 256, 512, 512, 512 channels
        max_features: int = 512,  # ... capped at 512
        num_down_blocks: int = 6,  # 256 -> 4 px
        num_res_blocks: int = 1,  # one residual block at 4 x 4 (FSTH 3.2)
        embedding_dim: int = 512,  # 512-d v, W_i, w_0 (as the embedder's e)
        self_attention_resolution: int | None = 32,  # self-attention at 32 x 32 (FSTH 3.2)
        image_size: int = 256,  # 256 x 256 frames
        spectral_norm: bool = True,  # spectral norm on every conv
        embedding_init_std: float = 0.02,  # W and w_0 start ~ N(0, std^2)
    ) -> None:
        super().__init__()
        self.in_channels, self.embedding_dim = in_channels, embedding_dim
        self.embedding_init_std = embedding_init_std
        self.trunk = _ResidualEmbeddingTrunk(in_channels, block_expansion, max_features, num_down_blocks,
                                             num_res_blocks, embedding_dim, self_attention_resolution, image_size,
                                             spectral_norm)
        self.shared_column = nn.Parameter(torch.randn(embedding_dim) * embedding_init_std)  # w_0
        self.bias = nn.Parameter(torch.zeros(()))  # b
        self.video_embeddings = self._new_embeddings(num_videos)  # W
        # Which rows of W have been set from their video's embedding (set_video_columns); a checkpoint from before
        # this flag existed loads as all set.
        self.register_buffer("video_columns_set", torch.zeros(num_videos, dtype=torch.bool))
        self._register_load_state_dict_pre_hook(self._resize_embeddings_for_checkpoint)

    def _new_embeddings(self, num_videos: int) -> nn.Embedding:
        if num_videos < 0:
            raise ValueError(f"num_videos must be >= 0, got {num_videos}")
        embeddings = nn.Embedding(num_videos, self.embedding_dim, device=self.shared_column.device,
                                  dtype=self.shared_column.dtype)
        nn.init.normal_(embeddings.weight, std=self.embedding_init_std)
        return embeddings

    @property
    def num_videos(self) -> int:
        """Rows of W (training videos the discriminator has a column for)."""
        return self.video_embeddings.num_embeddings

    def set_num_videos(self, num_videos: int) -> None:
        """(Re)creates W with ``num_videos`` freshly initialised rows (drops the old ones); call before building the
        optimizer, which would otherwise hold the old W."""
        self.video_embeddings = self._new_embeddings(num_videos)
        self.video_columns_set = torch.zeros(num_videos, dtype=torch.bool, device=self.shared_column.device)

    def _resize_embeddings_for_checkpoint(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        weight = state_dict.get(prefix + "video_embeddings.weight")
        if weight is not None and weight.shape[0] != self.num_videos:
            self.set_num_videos(weight.shape[0])
        if weight is not None and prefix + "video_columns_set" not in state_dict:
            state_dict[prefix + "video_columns_set"] = torch.ones(weight.shape[0], dtype=torch.bool)

    @torch.no_grad()
    def set_video_columns(self, video_index: Tensor, embedding: Tensor) -> int:
        """W_i = e_i for each video whose row has not been set yet (the first occurrence of an index wins); rows
        already set are left alone. Returns how many rows were set.

        Meta-learning calls it with each batch's video embeddings before the embedding match, so that L_MCH starts
        at e_i's own scale instead of pulling e towards W's small random initial rows (which killed FSTH's
        ReLU'd embedder). Under DDP every rank must call it with the same (gathered) indices and embeddings.

        Args:
            video_index: (n,) integer indices in [0, num_videos).
            embedding: (n, embedding_dim).
        """
        assert_shape(embedding, (video_index.shape[0], self.embedding_dim))
        index = video_index.to(self.video_columns_set.device)
        first = ~torch.tril(index[:, None] == index[None, :], diagonal=-1).any(dim=1)
        new = first & ~self.video_columns_set[index]
        if new.any():
            self.video_embeddings.weight[index[new]] = embedding[new].to(self.video_embeddings.weight)
            self.video_columns_set[index[new]] = True
        return int(new.sum())

    def video_column(self, video_index: Tensor) -> Tensor:
        """W_i + w_0 for each index: (b,) -> (b, embedding_dim)."""
        return self.video_embeddings(video_index) + self.shared_column

    def forward(self, image: Tensor, video_index: Tensor | None = None,
                column: Tensor | None = None) -> dict[str, Any]:
        """Realism score of each image against one projection column.

        Args:
            image: (b, in_channels, s, s).
            video_index: (b,) integer indices in [0, num_videos): the column is W_i + w_0.
            column: (b or 1, embedding_dim): a ready column used instead of W_i + w_0 (FSTH fine-tuning's
                w' = w_0 + e_new). Exactly one of video_index and column must be given.

        Returns:
            {"features": [each trunk stage's output (b, c_i, h_i, w_i), for feature matching],
            "embedding": v (b, embedding_dim), "logits": (b, 1)}.

        Raises:
            ValueError: both or neither of video_index / column, or an index out of range.
        """
        out = self.trunk(image)
        logits = self.project(out["embedding"], video_index, column)
        return {"features": out["features"], "embedding": out["embedding"], "logits": logits}

    def project(self, embedding: Tensor, video_index: Tensor | None = None, column: Tensor | None = None) -> Tensor:
        """The logits <v, column> + b of trunk embeddings v (b, embedding_dim) against W_i + w_0 (``video_index``)
        or a ready ``column``, with the current W: what ``forward`` ends with, and how a judgement taken before
        W moved is brought up to date (see ``AdversarialModule.refresh_real``)."""
        if (video_index is None) == (column is None):
            raise ValueError("pass exactly one of video_index (training videos) and column (a ready projection "
                             "column such as w_0 + e_new)")
        if video_index is not None:
            assert_shape(video_index, "b", b=embedding.shape[0])
            if video_index.dtype.is_floating_point or video_index.dtype == torch.bool:
                raise ValueError(f"video_index must be an integer tensor, got {video_index.dtype}")
            bad = video_index[(video_index < 0) | (video_index >= self.num_videos)]
            if bad.numel():
                raise ValueError(f"video_index {int(bad[0])} out of range for a discriminator with "
                                 f"{self.num_videos} video columns; size it from the training data "
                                 "(num_videos / set_num_videos)")
            column = self.video_column(video_index)
        else:
            assert_shape(column, (None, self.embedding_dim))
            if column.shape[0] not in (1, embedding.shape[0]):
                raise ValueError(f"column has {column.shape[0]} rows for a batch of {embedding.shape[0]}")
        return (embedding * column).sum(dim=-1, keepdim=True) + self.bias
