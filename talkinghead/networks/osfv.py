"""OSFV networks: face-vid2vid (Wang, Mallya, Liu, "One-Shot Free-View Neural Talking-Head Synthesis", CVPR 2021).

One class per component of section 3: F (AppearanceFeatureExtractor), L (CanonicalKeypointDetector), H and Δ
(HeadPoseExpressionEstimator), M (MotionFieldEstimator) and G (OSFVGenerator, or the SPADE decoder variant
SPADEGenerator). Defaults are the paper's scale at 256 x 256 with K = 20; widths follow the public face-vid2vid
reimplementation (vox-256 config), which reproduces the parameter counts of the paper's supplementary.

Images are float RGB in [0, 1]. Keypoints and flows use the normalised xyz convention of talkinghead.flows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from talkinghead import flows as flow_ops  # a module import: talkinghead.flows itself imports networks.blocks
from talkinghead.networks.blocks import (
    DownBlock2d,
    Hourglass3d,
    Norm,
    ResBlock2d,
    ResBlock3d,
    ResBottleneck2d,
    SameBlock2d,
    SPADEResBlock,
    UpBlock2d,
    UpBlock3d,
    assert_shape,
    make_norm,
    spectral_norm_all,
)

__all__ = [
    "AppearanceFeatureExtractor",
    "CanonicalKeypointDetector",
    "HeadPoseExpressionEstimator",
    "MotionFieldEstimator",
    "OSFVGenerator",
    "SPADEGenerator",
]


class AppearanceFeatureExtractor(nn.Module):
    """F: the source image's 3D appearance feature volume f_s (OSFV sec. 3.1, fig. 3a).

    Args:
        image_channels: input channels (RGB).
        block_expansion: width of the 7x7 stem; each down block doubles it.
        num_down_blocks: 2D down blocks; the volume is H / 2^num_down_blocks on a side.
        feature_channels: channels c of f_s.
        depth: depth d of f_s; a 1x1 conv makes c * d 2D channels that are reshaped to (c, d).
        num_res_blocks: 3D residual blocks on the volume.
        norm: normalisation in every block.
        spectral_norm: spectral normalisation of every conv.

    Shapes: image (b, 3, H, W) -> f_s (b, c, d, H/4, W/4) with the default two down blocks.
    """

    def __init__(
        self,
        image_channels: int = 3,  # RGB
        block_expansion: int = 64,  # 7x7 stem 3 -> 64
        num_down_blocks: int = 2,  # 64 -> 128 -> 256 channels, 256 -> 64 px
        feature_channels: int = 32,  # f_s has 32 channels ...
        depth: int = 16,  # ... over 16 depth slices (1x1 conv to 512 = 32 x 16)
        num_res_blocks: int = 6,  # six 3D residual blocks
        norm: Norm = "batch",  # BatchNorm as in the paper (SyncBatchNorm under DDP)
        spectral_norm: bool = False,  # the reference F has none
    ) -> None:
        super().__init__()
        self.image_channels, self.feature_channels, self.depth = image_channels, feature_channels, depth
        self.stem = SameBlock2d(image_channels, block_expansion, kernel_size=7, norm=norm)
        widths = [block_expansion * 2**i for i in range(num_down_blocks + 1)]
        self.down = nn.Sequential(*(DownBlock2d(widths[i], widths[i + 1], norm=norm) for i in range(num_down_blocks)))
        self.to_volume = nn.Conv2d(widths[-1], feature_channels * depth, kernel_size=1)
        self.res_blocks = nn.Sequential(*(ResBlock3d(feature_channels, norm=norm) for _ in range(num_res_blocks)))
        if spectral_norm:
            spectral_norm_all(self)

    def forward(self, image: Tensor) -> Tensor:
        """Args: image (b, 3, H, W). Returns: f_s (b, c, d, h, w)."""
        assert_shape(image, "b c h w", c=self.image_channels)
        out = self.to_volume(self.down(self.stem(image)))
        volume = rearrange(out, "b (c d) h w -> b c d h w", d=self.depth)
        return self.res_blocks(volume)


class CanonicalKeypointDetector(nn.Module):
    """L: K canonical 3D keypoints x_c of the source image (OSFV sec. 3.1, fig. 3b).

    The image is downscaled (antialiased) by ``scale_factor``, encoded by 2D down blocks to a
    (max_features, h / 2^n, w / 2^n) map, lifted by a 1x1 conv to max_features * depth channels reshaped to a
    volume, decoded by 3D up blocks to heatmap logits over a (depth, h, w) volume, turned into a distribution by a
    softmax with a temperature, and reduced to its expected position (soft-argmax).

    Args:
        num_keypoints: K.
        image_channels: input channels (RGB).
        block_expansion: base width; scale i has min(max_features, block_expansion * 2^(i+1)) channels.
        max_features: cap on the width (the bottleneck width).
        num_blocks: 2D down blocks = 3D up blocks.
        depth: depth of the heatmap volume.
        scale_factor: input downscaling before the encoder.
        temperature: softmax temperature over the heatmap volume.
        kernel_size: cubic kernel of the final conv to K heatmaps.
        norm: normalisation in every block.

    Shapes: image (b, 3, H, W) -> {"keypoints": (b, K, 3) in [-1, 1], "heatmaps": (b, K, depth, H s, W s)}.
    """

    def __init__(
        self,
        num_keypoints: int = 20,  # K = 20
        image_channels: int = 3,  # RGB
        block_expansion: int = 32,  # face-vid2vid KPDetector widths 64, 128, ..., 1024
        max_features: int = 1024,  # 2 x 2 x 1024 bottleneck at 256 px input
        num_blocks: int = 5,  # 64 px -> 2 px
        depth: int = 16,  # heatmaps over 16 x 64 x 64
        scale_factor: float = 0.25,  # the encoder sees a 0.25-scaled image
        temperature: float = 0.1,  # softmax temperature over the volume
        kernel_size: int = 7,  # 7x7x7 conv to the K heatmaps
        norm: Norm = "batch",  # BatchNorm as in the paper
    ) -> None:
        super().__init__()
        self.num_keypoints, self.image_channels, self.depth = num_keypoints, image_channels, depth
        self.scale_factor, self.temperature = scale_factor, temperature
        widths = [image_channels] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.encoder = nn.Sequential(*(DownBlock2d(widths[i], widths[i + 1], norm=norm) for i in range(num_blocks)))
        self.to_volume = nn.Conv2d(widths[-1], widths[-1] * depth, kernel_size=1)
        up_widths = [widths[-1]] + [min(max_features, block_expansion * 2 ** (num_blocks - i - 1))
                                    for i in range(num_blocks)]
        self.decoder = nn.Sequential(*(UpBlock3d(up_widths[i], up_widths[i + 1], norm=norm) for i in range(num_blocks)))
        self.heatmap = nn.Conv3d(up_widths[-1], num_keypoints, kernel_size, padding=kernel_size // 2)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """Args: image (b, 3, H, W). Returns: keypoints (b, K, 3) and heatmaps (b, K, d, h, w) summing to 1."""
        assert_shape(image, "b c h w", c=self.image_channels)
        if self.scale_factor != 1:
            image = F.interpolate(image, scale_factor=self.scale_factor, mode="bilinear", antialias=True,
                                  align_corners=False)
        out = self.to_volume(self.encoder(image))
        volume = self.decoder(rearrange(out, "b (c d) h w -> b c d h w", d=self.depth))
        logits = self.heatmap(volume).float()  # the softmax and expectation in float32 under autocast
        b, k, d, h, w = logits.shape
        heatmaps = (rearrange(logits, "b k d h w -> b k (d h w)") / self.temperature).softmax(dim=-1)
        grid = rearrange(flow_ops.coordinate_grid_3d(d, h, w, device=logits.device, dtype=logits.dtype),
                         "d h w c -> (d h w) c")
        keypoints = (heatmaps[..., None] * grid).sum(dim=2)
        assert_shape(keypoints, "b k 3", k=self.num_keypoints)
        return {"keypoints": keypoints, "heatmaps": rearrange(heatmaps, "b k (d h w) -> b k d h w", d=d, h=h)}


class HeadPoseExpressionEstimator(nn.Module):
    """H and Δ: head pose (yaw, pitch, roll, t) and expression deformations δ (OSFV sec. 3.1, fig. 3c-d).

    A ResNet-50-style trunk in face-vid2vid's HEEstimator layout: 7x7 stride-2 conv, norm, max-pool, 1x1 conv to the
    first stage width, then per stage a 1x1 conv to the stage width (after the first), a stride-2 bottleneck and
    more bottlenecks, global average pooling, and linear heads. Angles are classified into 66 bins of 3 degrees and
    decoded as sum(softmax * idx) * 3 - 99.

    Args:
        num_keypoints: K (the expression head predicts 3K numbers).
        image_channels: input channels (RGB).
        block_expansion: width of the 7x7 stem.
        stage_channels: width of each bottleneck stage.
        stage_blocks: bottlenecks per stage (the first stage keeps the resolution, the others halve it once).
        num_bins: angle bins per axis.
        norm: normalisation in every block.

    Shapes: image (b, 3, H, W) -> {"yaw", "pitch", "roll": (b,) degrees, "yaw_logits", "pitch_logits",
    "roll_logits": (b, num_bins), "translation": (b, 3), "expression": (b, K, 3)}.
    """

    def __init__(
        self,
        num_keypoints: int = 20,  # K = 20
        image_channels: int = 3,  # RGB
        block_expansion: int = 64,  # ResNet stem width
        stage_channels: tuple[int, ...] = (256, 512, 1024, 2048),  # ResNet-50 stage widths
        stage_blocks: tuple[int, ...] = (3, 4, 6, 3),  # ResNet-50 depth
        num_bins: int = 66,  # 66 bins of 3 degrees (Hopenet)
        norm: Norm = "batch",  # BatchNorm as in the paper
    ) -> None:
        super().__init__()
        if len(stage_channels) != len(stage_blocks):
            raise ValueError("stage_channels and stage_blocks need the same length")
        self.num_keypoints, self.image_channels, self.num_bins = num_keypoints, image_channels, num_bins
        layers: list[nn.Module] = [
            nn.Conv2d(image_channels, block_expansion, 7, stride=2, padding=3),
            make_norm(norm, block_expansion, 2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        width = block_expansion
        for i, (channels, blocks) in enumerate(zip(stage_channels, stage_blocks)):
            layers += [nn.Conv2d(width, channels, 1), make_norm(norm, channels, 2), nn.ReLU()]
            layers += [ResBottleneck2d(channels, stride=1 if i == 0 or j else 2, norm=norm) for j in range(blocks)]
            width = channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.trunk = nn.Sequential(*layers)
        self.yaw = nn.Linear(width, num_bins)
        self.pitch = nn.Linear(width, num_bins)
        self.roll = nn.Linear(width, num_bins)
        self.translation = nn.Linear(width, 3)
        self.expression = nn.Linear(width, 3 * num_keypoints)
        # t and δ start at exactly 0, so x = R x_c and the motion path starts at the rigid flow of the estimated
        # rotations (the identity flow when source and driving poses agree). With the default init the two heads
        # read batch-normalised features and give |t|, |δ| ~ 1 in training mode: the K flows then point far outside
        # the volume (|w(p) - p| ~ 2.6 voxels at tiny scale, keypoints at |x| up to 3), the generator starts from
        # garbage warps, and the priors' gradients on H/Δ drown the reconstruction's (benchmarks/osfv_diagnose.py).
        for head in (self.translation, self.expression):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """Args: image (b, 3, H, W). Returns: the pose and expression dict of the class docstring."""
        assert_shape(image, "b c h w", c=self.image_channels)
        features = self.trunk(image)
        out: dict[str, Tensor] = {}
        for name in ("yaw", "pitch", "roll"):
            logits = getattr(self, name)(features)
            out[f"{name}_logits"] = logits
            out[name] = flow_ops.pose_bins_to_degrees(logits)
        out["translation"] = self.translation(features)
        out["expression"] = rearrange(self.expression(features), "b (k c) -> b k c", c=3)
        return out


class MotionFieldEstimator(nn.Module):
    """M: the 3D warping flow w from f_s to the driving frame and a 2D occlusion mask (OSFV sec. 3.1, fig. 3e).

    f_s is compressed (1x1x1 conv, norm, ReLU), warped by each of the K+1 first-order flows in one batched
    grid_sample, stacked with the keypoint heatmap differences H(x_d) - H(x_s) (zero for the background flow), and
    fed to a 3D hourglass. A 7x7x7 conv and a softmax over the K+1 flows give the masks m_k, and w = sum_k m_k w_k;
    the hourglass output with depth folded into channels gives the occlusion logits (7x7 conv, sigmoid).

    Args:
        num_keypoints: K.
        feature_channels: channels of f_s.
        depth: depth of f_s (the occlusion conv sees out_channels * depth 2D channels).
        compressed_channels: channels of the compressed copy of f_s that is warped.
        block_expansion: hourglass base width.
        max_features: hourglass width cap.
        num_blocks: hourglass down/up blocks; h and w of f_s must be divisible by 2^num_blocks.
        heatmap_variance: variance of the keypoint Gaussians in normalised units.
        kernel_size: kernel of the mask (3D) and occlusion (2D) convolutions.
        norm: normalisation in every block.

    Shapes: f_s (b, c, d, h, w), x_s and x_d (b, K, 3), R_s and R_d (b, 3, 3) ->
    {"deformation": (b, d, h, w, 3), "occlusion": (b, 1, h, w), "masks": (b, K+1, d, h, w)}.
    """

    def __init__(
        self,
        num_keypoints: int = 20,  # K = 20
        feature_channels: int = 32,  # f_s channels
        depth: int = 16,  # f_s depth
        compressed_channels: int = 4,  # f_s compressed 32 -> 4 before the K+1 warps
        block_expansion: int = 32,  # face-vid2vid DenseMotionNetwork hourglass
        max_features: int = 1024,  # ... widths up to 1024
        num_blocks: int = 5,  # ... 64 px -> 2 px (~44 M parameters in all)
        heatmap_variance: float = 0.01,  # keypoint Gaussian variance
        kernel_size: int = 7,  # 7x7x7 mask conv and 7x7 occlusion conv
        norm: Norm = "batch",  # BatchNorm as in the paper
    ) -> None:
        super().__init__()
        self.num_keypoints, self.feature_channels, self.depth = num_keypoints, feature_channels, depth
        self.heatmap_variance = heatmap_variance
        self.compress = nn.Sequential(
            nn.Conv3d(feature_channels, compressed_channels, 1), make_norm(norm, compressed_channels, 3), nn.ReLU()
        )
        self.hourglass = Hourglass3d(
            (num_keypoints + 1) * (compressed_channels + 1), block_expansion, max_features, num_blocks, norm=norm
        )
        out = self.hourglass.out_channels
        self.mask = nn.Conv3d(out, num_keypoints + 1, kernel_size, padding=kernel_size // 2)
        self.occlusion = nn.Conv2d(out * depth, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, feature: Tensor, source_kp: Tensor, driving_kp: Tensor, source_rotation: Tensor,
                driving_rotation: Tensor) -> dict[str, Tensor]:
        """Args: f_s (b, c, d, h, w), x_s (b, K, 3), x_d (b, K, 3), R_s (b, 3, 3), R_d (b, 3, 3).

        Returns: deformation (b, d, h, w, 3), occlusion (b, 1, h, w) in (0, 1), masks (b, K+1, d, h, w).
        """
        dims = assert_shape(feature, "b c d h w", c=self.feature_channels, d=self.depth)
        b, d, h, w = dims["b"], dims["d"], dims["h"], dims["w"]
        assert_shape(source_kp, "b k 3", b=b, k=self.num_keypoints)
        assert_shape(driving_kp, "b k 3", b=b, k=self.num_keypoints)

        compressed = self.compress(feature)
        grid = flow_ops.coordinate_grid_3d(d, h, w, device=feature.device, dtype=source_kp.dtype)
        sparse = flow_ops.first_order_flows(grid, source_kp, driving_kp, source_rotation, driving_rotation)
        k1 = sparse.shape[1]
        warped = flow_ops.warp_volume(
            repeat(compressed, "b c d h w -> (b k) c d h w", k=k1), rearrange(sparse, "b k d h w c -> (b k) d h w c")
        )
        heatmaps = (flow_ops.keypoint_heatmaps(driving_kp, (d, h, w), self.heatmap_variance)
                    - flow_ops.keypoint_heatmaps(source_kp, (d, h, w), self.heatmap_variance))
        heatmaps = torch.cat([torch.zeros_like(heatmaps[:, :1]), heatmaps], dim=1).to(warped.dtype)
        inputs = torch.cat([rearrange(heatmaps, "b k d h w -> b k 1 d h w"),
                            rearrange(warped, "(b k) c d h w -> b k c d h w", k=k1)], dim=2)
        prediction = self.hourglass(rearrange(inputs, "b k c d h w -> b (k c) d h w"))

        masks = self.mask(prediction).float().softmax(dim=1)
        deformation = (rearrange(masks, "b k d h w -> b k d h w 1") * sparse).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(rearrange(prediction, "b c d h w -> b (c d) h w")))
        return {"deformation": deformation, "occlusion": occlusion, "masks": masks}


def _warp_and_occlude(feature: Tensor, deformation: Tensor, occlusion: Tensor) -> tuple[Tensor, Tensor]:
    """f_s warped by w with depth folded into channels (b, c d, h, w), and the occlusion mask at that size."""
    assert_shape(feature, "b c d h w")
    warped = rearrange(flow_ops.warp_volume(feature, deformation), "b c d h w -> b (c d) h w")
    if occlusion.shape[-2:] != warped.shape[-2:]:
        occlusion = F.interpolate(occlusion, size=warped.shape[-2:], mode="bilinear", align_corners=False)
    return warped, occlusion


class OSFVGenerator(nn.Module):
    """G: decodes the driving frame from f_s warped by w and masked by the occlusion (OSFV sec. 3.1, fig. 3f).

    Args:
        feature_channels: channels of f_s.
        depth: depth of f_s (folded into c * d 2D channels).
        block_expansion: width after the last up block; the residual blocks run at block_expansion * 2^num_up_blocks.
        num_up_blocks: 2x up blocks (output is 2^num_up_blocks times the feature resolution).
        num_res_blocks: 2D residual blocks.
        image_channels: output channels (RGB).
        norm: normalisation in every block.
        spectral_norm: spectral normalisation of every conv (the paper uses it in G).

    Shapes: f_s (b, c, d, h, w), w (b, d, h, w, 3), occlusion (b, 1, h, w) -> image (b, 3, 4h, 4w) in [0, 1].
    """

    def __init__(
        self,
        feature_channels: int = 32,  # f_s channels
        depth: int = 16,  # f_s depth: 32 x 16 = 512 2D channels at 64 x 64
        block_expansion: int = 64,  # 256 channels in the residual blocks, 64 after the up blocks
        num_up_blocks: int = 2,  # 64 -> 256 px
        num_res_blocks: int = 6,  # six 2D residual blocks
        image_channels: int = 3,  # RGB
        norm: Norm = "batch",  # BatchNorm as in the paper
        spectral_norm: bool = True,  # spectral norm in G (paper sec. 3.3 / SPEC)
    ) -> None:
        super().__init__()
        self.feature_channels, self.depth = feature_channels, depth
        width = block_expansion * 2**num_up_blocks
        self.entry = nn.Sequential(
            SameBlock2d(feature_channels * depth, width, 3, norm=norm, activation="leaky_relu"),
            nn.Conv2d(width, width, 1),
        )
        self.res_blocks = nn.Sequential(*(ResBlock2d(width, norm=norm) for _ in range(num_res_blocks)))
        self.up = nn.Sequential(
            *(UpBlock2d(block_expansion * 2 ** (num_up_blocks - i), block_expansion * 2 ** (num_up_blocks - i - 1),
                        norm=norm) for i in range(num_up_blocks))
        )
        self.to_rgb = nn.Conv2d(block_expansion, image_channels, 7, padding=3)
        if spectral_norm:
            spectral_norm_all(self)

    def forward(self, feature: Tensor, deformation: Tensor, occlusion: Tensor) -> Tensor:
        """Args: f_s (b, c, d, h, w), w (b, d, h, w, 3), occlusion (b, 1, h, w). Returns: (b, 3, H, W) in [0, 1]."""
        assert_shape(feature, "b c d h w", c=self.feature_channels, d=self.depth)
        warped, occlusion = _warp_and_occlude(feature, deformation, occlusion)
        out = self.entry(warped) * occlusion
        return torch.sigmoid(self.to_rgb(self.up(self.res_blocks(out))))


class SPADEGenerator(nn.Module):
    """G, SPADE-decoder variant: SPADE residual blocks conditioned on the warped, occluded 2D feature.

    The face-vid2vid reimplementation's SPADEDecoder: the warped and occluded 2D feature (after a 3x3 conv block to
    ``input_channels`` and a 1x1 conv) is both the decoder input and the SPADE conditioning map; a 3x3 conv to
    ``middle_channels``, ``num_middle_blocks`` SPADE res blocks, then per entry of ``up_channels`` a 2x nearest
    upsampling and a SPADE res block, and a 3x3 conv to RGB with sigmoid.

    Args:
        feature_channels: channels of f_s.
        depth: depth of f_s.
        input_channels: width of the 2D feature entering the decoder (also the SPADE label channels).
        middle_channels: width of the middle SPADE blocks.
        num_middle_blocks: SPADE res blocks at the feature resolution.
        up_channels: output width of each upsampling SPADE block.
        spade_hidden_channels: hidden width inside each SPADE.
        image_channels: output channels (RGB).
        norm: normalisation of the entry conv block.
        spectral_norm: spectral normalisation of the SPADE blocks' convolutions (as in SPADE / face-vid2vid).

    Shapes: f_s (b, c, d, h, w), w (b, d, h, w, 3), occlusion (b, 1, h, w) -> image (b, 3, 4h, 4w) in [0, 1].
    """

    def __init__(
        self,
        feature_channels: int = 32,  # f_s channels
        depth: int = 16,  # f_s depth: 512 2D channels
        input_channels: int = 256,  # 512 -> 256 entry conv, SPADE label width
        middle_channels: int = 512,  # 3x3 conv 256 -> 512 ("fc")
        num_middle_blocks: int = 6,  # six SPADE res blocks at 64 x 64
        up_channels: tuple[int, ...] = (256, 64),  # 64 -> 128 -> 256 px
        spade_hidden_channels: int = 128,  # SPADE's hidden width
        image_channels: int = 3,  # RGB
        norm: Norm = "batch",  # BatchNorm in the entry block
        spectral_norm: bool = True,  # spectral norm in the SPADE blocks
    ) -> None:
        super().__init__()
        self.feature_channels, self.depth = feature_channels, depth
        self.entry = nn.Sequential(
            SameBlock2d(feature_channels * depth, input_channels, 3, norm=norm, activation="leaky_relu"),
            nn.Conv2d(input_channels, input_channels, 1),
        )
        self.fc = nn.Conv2d(input_channels, middle_channels, 3, padding=1)
        self.middle = nn.ModuleList(
            SPADEResBlock(middle_channels, middle_channels, input_channels, spade_hidden_channels, spectral_norm)
            for _ in range(num_middle_blocks)
        )
        widths = [middle_channels, *up_channels]
        self.up = nn.ModuleList(
            SPADEResBlock(widths[i], widths[i + 1], input_channels, spade_hidden_channels, spectral_norm)
            for i in range(len(up_channels))
        )
        self.to_rgb = nn.Conv2d(widths[-1], image_channels, 3, padding=1)

    def forward(self, feature: Tensor, deformation: Tensor, occlusion: Tensor) -> Tensor:
        """Args: f_s (b, c, d, h, w), w (b, d, h, w, 3), occlusion (b, 1, h, w). Returns: (b, 3, H, W) in [0, 1]."""
        assert_shape(feature, "b c d h w", c=self.feature_channels, d=self.depth)
        warped, occlusion = _warp_and_occlude(feature, deformation, occlusion)
        segmap = self.entry(warped) * occlusion
        out = self.fc(segmap)
        for block in self.middle:
            out = block(out, segmap)
        for block in self.up:
            out = block(F.interpolate(out, scale_factor=2.0, mode="nearest"), segmap)
        return torch.sigmoid(self.to_rgb(F.leaky_relu(out, 0.2)))
