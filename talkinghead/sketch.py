"""Landmark sketches: the rasterised iBUG-68 landmarks that condition the FSTH networks.

Few-shot talking heads (Zakharov et al., "Few-Shot Adversarial Learning of Realistic Neural Talking Head Models",
ICCV 2019) feed the generator, the embedder and the discriminator a 3-channel "landmark image": the 68 facial
landmarks drawn on a black canvas as coloured polylines, one colour per part of the face (jaw, brows, nose, eyes,
lips; see ``talkinghead.landmarks.GROUP_COLOURS``). Eyes and lips are closed loops, the other parts open polylines.

``draw_sketch`` draws such images for any batch of landmark sets at once, on the landmarks' device. A pixel is on
when its centre lies within ``line_width / 2`` of a segment (inclusive), so lines are solid, gap-free and have
round caps; there is no antialiasing, which keeps every pixel exactly one group colour or black. Where groups
overlap, the one later in ``GROUPS`` wins. Pixel convention as in ``talkinghead.visualize``: landmark (x, y) in
pixels, pixel column i has its centre at x = i (row j at y = j).

How: the canvas is cut into square tiles. For every (image, segment) pair a cheap test on the tile centres keeps
only the tiles the thickened segment can reach; the exact distance test then runs on the pixels of those
(image, segment, tile) triples alone, and each on pixel takes the highest segment index that covers it
(``scatter_reduce`` amax), which encodes the overwrite order. Both steps are chunked so memory stays bounded
whatever the batch size or the landmark spread.
"""

from __future__ import annotations

import torch
from torch import Tensor

from talkinghead.landmarks import GROUP_COLOURS, GROUPS

__all__ = ["CLOSED_GROUPS", "draw_sketch"]

CLOSED_GROUPS: frozenset[str] = frozenset({"right_eye", "left_eye", "outer_lips", "inner_lips"})

_NUM_LANDMARKS = 68
# Side of the square tiles the canvas is cut into: small enough that a tile a segment merely grazes costs little,
# large enough that the (pair, tile) candidate test stays cheap.
_TILE = 16
# Elements per chunk of the candidate test ((image, segment) pairs x tiles) and of the pixel test (triples x
# tile pixels); with ~10 float32/int64 temporaries each, a chunk stays well under 100 MB.
_CANDIDATE_CHUNK = 1 << 21
_PIXEL_CHUNK = 1 << 21


def _segments() -> tuple[list[int], list[int], list[str]]:
    """The polyline segments of the iBUG-68 layout in drawing order.

    Returns:
        starts, ends: (s,) landmark indices of each segment's endpoints.
        groups: (s,) the group each segment belongs to; segments come in ``GROUPS`` order, so a later segment
            index means a later (overwriting) group.
    """
    starts, ends, groups = [], [], []
    for name, indices in GROUPS.items():
        points = list(indices)
        pairs = list(zip(points[:-1], points[1:]))
        if name in CLOSED_GROUPS:
            pairs.append((points[-1], points[0]))
        for a, b in pairs:
            starts.append(a)
            ends.append(b)
            groups.append(name)
    return starts, ends, groups


_STARTS, _ENDS, _SEGMENT_GROUPS = _segments()


def _near(xs: Tensor, ys: Tensor, a: Tensor, d: Tensor, limit_sq: float) -> Tensor:
    """Which points of axis-aligned grids lie within a distance of segments (inclusive).

    The grid is separable, so the dot products are built from per-column and per-row terms by broadcasting,
    which avoids trailing (x, y) axes and roughly halves the full-size arithmetic.

    Args:
        xs: (q, w) grid x coordinates, one row of them per segment.
        ys: (q, h) grid y coordinates, one row of them per segment.
        a: (q, 2) segment starts.
        d: (q, 2) segment directions (end - start).
        limit_sq: the squared distance limit.

    Returns:
        (q, h, w) bool: point (xs[i, k], ys[i, j]) is within the limit of segment i.
    """
    dx, dy = d[:, 0, None], d[:, 1, None]
    # A zero-length segment has a zero numerator too; the clamp turns 0 / 0 into t = 0, i.e. a dot at the point.
    inverse_length_sq = 1 / (dx * dx + dy * dy).clamp_min(1e-12)
    offset_x = xs - a[:, 0, None]  # (q, w)
    offset_y = ys - a[:, 1, None]  # (q, h)
    t = ((offset_y * dy * inverse_length_sq)[:, :, None] + (offset_x * dx * inverse_length_sq)[:, None, :]).clamp_(0, 1)
    error_x = offset_x[:, None, :] - t * dx[:, :, None]
    error_y = (offset_y[:, :, None] - t * dy[:, :, None]).square_()
    return error_x.square_().add_(error_y) <= limit_sq


def _pair_chunk_size(tiles_per_side: int) -> int:
    """(image, segment) pairs per chunk of the tile candidate test on a canvas of tiles_per_side^2 tiles."""
    return max(1, _CANDIDATE_CHUNK // (tiles_per_side * tiles_per_side))


def draw_sketch(landmarks: Tensor, size: int, line_width: float = 2.0) -> Tensor:
    """Draws iBUG-68 landmarks as coloured polylines on black square images.

    Args:
        landmarks: (..., 68, 2) pixel x, y in an image of side ``size``. Points may lie outside the image (only
            the part of a line inside it is drawn) or be non-finite (NaN for a missing face): segments touching a
            non-finite point are not drawn.
        size: side of the output images in pixels.
        line_width: line width in pixels; a pixel is on when its centre is within ``line_width / 2`` of a segment.

    Returns:
        (..., 3, size, size) float32 RGB in [0, 1] on ``landmarks``' device.

    Raises:
        ValueError: for landmarks not of shape (..., 68, 2), a size below 1 or a non-positive line width.
    """
    if landmarks.dim() < 2 or tuple(landmarks.shape[-2:]) != (_NUM_LANDMARKS, 2):
        raise ValueError(f"expected landmarks of shape (..., {_NUM_LANDMARKS}, 2), got {tuple(landmarks.shape)}")
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"expected an integer size >= 1, got {size!r}")
    if not line_width > 0:
        raise ValueError(f"expected a positive line width, got {line_width!r}")
    size = int(size)
    device = landmarks.device
    lead = landmarks.shape[:-2]
    points = landmarks.detach().reshape(-1, _NUM_LANDMARKS, 2).to(torch.float32)
    images = points.shape[0]

    starts = torch.tensor(_STARTS, device=device)
    ends = torch.tensor(_ENDS, device=device)
    segments = len(_STARTS)
    a = points[:, starts]  # (n, s, 2)
    b = points[:, ends]
    valid = (torch.isfinite(a).all(-1) & torch.isfinite(b).all(-1)).reshape(-1)  # (n * s,)
    a = a.reshape(-1, 2)
    d = (b - a.reshape(images, segments, 2)).reshape(-1, 2)
    # Only the drawable pairs go on, so NaN never enters the arithmetic and missing faces cost nothing.
    pairs = valid.nonzero().squeeze(1)  # flat (image, segment) indices

    # The canvas is padded to whole tiles; the padding is cropped off at the end, so lines cannot wrap around.
    tiles_per_side = -(-size // _TILE)
    side = tiles_per_side * _TILE
    tile_start = torch.arange(tiles_per_side, device=device) * _TILE  # first pixel of each tile along an axis
    tile_centre = (tile_start.to(torch.float32) + (_TILE - 1) / 2).expand(_pair_chunk_size(tiles_per_side), -1)
    tile_pixel = torch.arange(_TILE, device=device)
    radius = float(line_width) / 2
    # A pixel centre is at most (tile - 1) / sqrt(2) from its tile's centre, so by the triangle inequality a tile
    # whose centre is farther than this from a segment has no pixel within the radius; the 1e-3 covers rounding.
    reach_sq = (radius + (_TILE - 1) / 2**0.5 + 1e-3) ** 2

    # Per pixel, 1 + the highest segment index covering it (0: none); later segments belong to later groups.
    top = torch.zeros(images * side * side, dtype=torch.int32, device=device)
    pair_chunk = _pair_chunk_size(tiles_per_side)
    triple_chunk = max(1, _PIXEL_CHUNK // (_TILE * _TILE))
    for first_pair in range(0, pairs.numel(), pair_chunk):
        chunk = pairs[first_pair : first_pair + pair_chunk]
        centres = tile_centre[: chunk.numel()]
        near = _near(centres, centres, a[chunk], d[chunk], reach_sq)  # (p, tile row, tile column)
        pair_index, tile_y, tile_x = near.nonzero().unbind(1)
        pair_index = chunk[pair_index]
        for first in range(0, pair_index.numel(), triple_chunk):
            pair = pair_index[first : first + triple_chunk]
            x0 = tile_start[tile_x[first : first + triple_chunk]]
            y0 = tile_start[tile_y[first : first + triple_chunk]]
            xs = x0[:, None] + tile_pixel  # (q, tile) pixel columns
            ys = y0[:, None] + tile_pixel  # (q, tile) pixel rows
            on = _near(xs.to(torch.float32), ys.to(torch.float32), a[pair], d[pair], radius * radius)
            image = torch.div(pair, segments, rounding_mode="floor")
            value = torch.where(on, (pair % segments + 1).to(torch.int32)[:, None, None], 0)
            flat = ((image * side + y0) * side + x0)[:, None, None] + tile_pixel[:, None] * side + tile_pixel
            top.scatter_reduce_(0, flat.reshape(-1), value.reshape(-1), reduce="amax")

    colours = torch.tensor(
        [(0, 0, 0)] + [GROUP_COLOURS[name] for name in _SEGMENT_GROUPS], dtype=torch.float32, device=device
    ) / 255
    # One int64 copy of the cropped map, rather than a conversion per channel inside the indexing.
    top = top.reshape(images, side, side)[:, :size, :size].long()
    sketch = torch.empty(images, 3, size, size, dtype=torch.float32, device=device)
    for channel in range(3):
        sketch[:, channel] = colours[:, channel][top]
    return sketch.reshape(*lead, 3, size, size)
