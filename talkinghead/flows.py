"""3D keypoint flows and volume warping for OSFV (face-vid2vid; Wang, Mallya, Liu, CVPR 2021, section 3.1).

Coordinates follow :mod:`talkinghead.geometry`: a point is (x, y, z) in [-1, 1]^3 with x along the width axis, y
along the height axis and z along the depth axis of a (b, c, d, h, w) volume, and voxel centres sit at
(2 i + 1) / n - 1, i.e. ``grid_sample(..., align_corners=False)``. Everything in this package uses
align_corners=False, so the identity grid samples a volume back exactly.

Point maths is written with elementwise products and sums rather than matmul/einsum on purpose: under bf16
autocast matmuls drop to bf16, whose ~3 significant digits are coarser than a voxel; elementwise ops keep the
input precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from talkinghead.networks.blocks import assert_shape

__all__ = [
    "apply_rotation",
    "transform_keypoints",
    "coordinate_grid_3d",
    "first_order_flows",
    "keypoint_heatmaps",
    "warp_volume",
    "pose_bins_to_degrees",
]


def apply_rotation(rotation: Tensor, points: Tensor) -> Tensor:
    """R p for batched points, in full precision even under autocast.

    Args:
        rotation: (b, 3, 3).
        points: (b, ..., 3).

    Returns:
        (b, ..., 3).
    """
    matrix = rotation.reshape(rotation.shape[0], *([1] * (points.dim() - 2)), 3, 3)
    return (matrix * points.unsqueeze(-2)).sum(-1)


def transform_keypoints(canonical: Tensor, rotation: Tensor, translation: Tensor, expression: Tensor) -> Tensor:
    """Image keypoints x = R x_c + t + δ (OSFV eq. 1, one set per image).

    Args:
        canonical: (b, k, 3) canonical keypoints x_c.
        rotation: (b, 3, 3) head rotation R.
        translation: (b, 3) head translation t.
        expression: (b, k, 3) expression deformation δ.

    Returns:
        (b, k, 3) keypoints x.
    """
    dims = assert_shape(canonical, "b k 3")
    assert_shape(rotation, "b 3 3", b=dims["b"])
    assert_shape(translation, "b 3", b=dims["b"])
    assert_shape(expression, "b k 3", **dims)
    return apply_rotation(rotation, canonical) + translation[:, None, :] + expression


def coordinate_grid_3d(d: int, h: int, w: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> Tensor:
    """Voxel-centre coordinates of a d x h x w volume as grid_sample reads them (align_corners=False).

    Args:
        d: depth (z axis) size.
        h: height (y axis) size.
        w: width (x axis) size.
        device: device of the result.
        dtype: floating dtype of the result (default float32).

    Returns:
        (d, h, w, 3) with [..., 0] = x, [..., 1] = y, [..., 2] = z, each (2 i + 1) / n - 1.
    """
    dtype = dtype or torch.float32

    def centres(n: int) -> Tensor:
        return (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1

    z, y, x = torch.meshgrid(centres(d), centres(h), centres(w), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def first_order_flows(grid: Tensor, source_kp: Tensor, driving_kp: Tensor, source_rotation: Tensor,
                      driving_rotation: Tensor) -> Tensor:
    """The K+1 candidate flows w_k(p) = R_s R_d^-1 (p - x_d,k) + x_s,k and the identity w_0(p) = p (OSFV sec. 3.1).

    Each flow maps a point p of the driving frame's volume to where it is read in the source volume. The first
    order term is the rotation only (no learned Jacobians). R_d is a rotation, so R_d^-1 = R_d^T.

    Args:
        grid: (d, h, w, 3) points p, normally :func:`coordinate_grid_3d`.
        source_kp: (b, k, 3) source keypoints x_s.
        driving_kp: (b, k, 3) driving keypoints x_d.
        source_rotation: (b, 3, 3) R_s.
        driving_rotation: (b, 3, 3) R_d.

    Returns:
        (b, k + 1, d, h, w, 3): index 0 is the identity (background) flow, index k the flow of keypoint k - 1.
    """
    assert_shape(grid, "d h w 3")
    dims = assert_shape(source_kp, "b k 3")
    assert_shape(driving_kp, "b k 3", **dims)
    assert_shape(source_rotation, "b 3 3", b=dims["b"])
    assert_shape(driving_rotation, "b 3 3", b=dims["b"])
    jacobian = _matmul33(source_rotation, driving_rotation.transpose(-1, -2))
    # J (p - x_d,k) + x_s,k = J p + (x_s,k - J x_d,k): one rotated grid shared by all keypoints plus a
    # per-keypoint offset, broadcast rather than looped.
    rotated = apply_rotation(jacobian, repeat(grid, "d h w c -> b d h w c", b=dims["b"]))
    offset = source_kp - apply_rotation(jacobian, driving_kp)
    flows = rotated[:, None] + offset[:, :, None, None, None, :]
    identity = repeat(grid, "d h w c -> b 1 d h w c", b=dims["b"]).to(flows.dtype)
    return torch.cat([identity, flows], dim=1)


def _matmul33(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for (..., 3, 3) matrices with elementwise ops (keeps precision under autocast)."""
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


# The Gaussians' tails underflow into float32's subnormal range (below 2^-126), which x86 CPUs compute up to ~100x
# slower: the motion estimator's hourglass convolutions read these heatmaps, and at the tiny scale that cost about
# a tenth of the training step. Values below 2^-100 become 0 instead; the rest, and the differences of two heatmaps
# (multiples of 2^-123 once both values are at least 2^-100), stay out of the subnormal range.
_NEGLIGIBLE = 2.0**-100


def keypoint_heatmaps(keypoints: Tensor, shape: tuple[int, int, int], variance: float = 0.01) -> Tensor:
    """Unnormalised Gaussians exp(-|p - x_k|^2 / (2 variance)) around each keypoint, over a volume's voxel centres.

    Args:
        keypoints: (b, k, 3) keypoints in normalised xyz.
        shape: (d, h, w) of the volume.
        variance: Gaussian variance in normalised units (face-vid2vid's 0.01).

    Returns:
        (b, k, d, h, w) values in [0, 1]: those below 2^-100 are 0 (see ``_NEGLIGIBLE``).
    """
    assert_shape(keypoints, "b k 3")
    grid = coordinate_grid_3d(*shape, device=keypoints.device, dtype=keypoints.dtype)
    squared = (grid[None, None] - keypoints[:, :, None, None, None, :]).pow(2).sum(-1)
    heatmaps = torch.exp(-0.5 * squared / variance)
    return heatmaps.masked_fill(heatmaps < _NEGLIGIBLE, 0.0)


def warp_volume(volume: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: out(p) = volume(flow(p)), trilinear, zeros outside, align_corners=False.

    A flow whose spatial size differs from the volume's is resized trilinearly to the volume's first.

    Args:
        volume: (b, c, d, h, w).
        flow: (b, d', h', w', 3) normalised xyz sampling positions.

    Returns:
        (b, c, d, h, w) in the wider of the two input dtypes.
    """
    dims = assert_shape(volume, "b c d h w")
    assert_shape(flow, "b d2 h2 w2 3", b=dims["b"])
    size = (dims["d"], dims["h"], dims["w"])
    if tuple(flow.shape[1:4]) != size:
        flow = rearrange(flow, "b d h w c -> b c d h w")
        flow = rearrange(F.interpolate(flow, size=size, mode="trilinear", align_corners=False),
                         "b c d h w -> b d h w c")
    # Promote rather than cast the flow down: a bf16 flow would be coarser than a voxel.
    dtype = torch.promote_types(volume.dtype, flow.dtype)
    return F.grid_sample(volume.to(dtype), flow.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def pose_bins_to_degrees(logits: Tensor, bin_width: float = 3.0, offset: float = -99.0) -> Tensor:
    """Expected angle of a binned head-pose classifier: sum_i softmax(logits)_i * i * 3 - 99 (Hopenet's decoding).

    Args:
        logits: (b, bins) logits over 66 bins of 3 degrees.
        bin_width: degrees per bin.
        offset: angle of bin 0 in degrees.

    Returns:
        (b,) angles in degrees (float32 or wider).
    """
    assert_shape(logits, "b n")
    probabilities = logits.float().softmax(dim=-1)
    index = torch.arange(logits.shape[-1], device=logits.device, dtype=probabilities.dtype)
    return (probabilities * index).sum(-1) * bin_width + offset
