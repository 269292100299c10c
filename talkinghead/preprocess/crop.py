"""Square crops around a tracked face: where the crop goes, cutting it out, and moving points into it.

Crop boxes are integer pixel ranges ``(x0, y0, x1, y1)`` of the source frame with ``x1 - x0 == y1 - y0 = side``:
the crop holds source pixels x0 <= x < x1, y0 <= y < y1 (padded where that leaves the frame), and is resized to
S x S with antialiasing. With pixel centres at integers (the package convention, docs/SHARD_FORMAT.md) the crop
spans [x0 - 1/2, x1 - 1/2] in source coordinates, and a source point x lands at crop pixel coordinate
``u = (x - x0 + 1/2) * S / side - 1/2`` (the mapping of a resize with ``align_corners=False``).

Two placements (``--crop``), two motions (``--crop-motion``):

- ``voxceleb`` (margin 1.6), default motion ``fixed``: one box per clip, as in the VoxCeleb crops of FOMM and
  face-vid2vid, so the head moves inside a still frame. The box is centred on the union of the clip's face
  boxes, and its side is the union's larger side plus (margin - 1) times the median face side, i.e. margin x the
  face for a still head and a margin of 0.3 faces on each side of the farthest the face goes. MTCNN's boxes run
  from the brows (or a little above) to the chin, so 1.6 takes in the hair, the ears and the neck.
- ``lpd`` (margin 1.8, the LPD paper's square box x 1.8), default motion ``smooth``: a box that follows the face,
  side = margin x max(face width, height), centred on the face, with centre and side averaged over a centred
  window of ``--smooth-window`` frames (truncated symmetrically at the clip ends, so steady motion is followed
  without lag and detector jitter of a few pixels is averaged away). Boxes are rounded to whole pixels, so the
  crop steps by at most half a source pixel.
- ``none``: the input is already an aligned square crop (VoxCeleb2's own release, FFHQ-style videos): the crop is
  the largest centred square of the frame, never padded; faces are still tracked for the landmarks and the cuts.

Padding. A box that reaches past the frame is padded (``--pad reflect``, ``edge`` or ``black``). On tightly
cropped inputs heavy padding is what damages data ("long necks" and side bars from repeated border pixels), so
:func:`limit_padding` shrinks a clip's boxes about their centres, by one factor for the whole clip, until no frame
has more than ``--max-pad`` of its crop outside the frame, never cutting into the face box; a clip that cannot meet
the limit even then is dropped (reason ``heavy-padding``), as is any over-limit clip with ``--over-pad drop``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CROP_MARGINS",
    "CROP_MOTIONS",
    "CROP_PLACEMENTS",
    "PAD_MODES",
    "crop_boxes",
    "crop_and_resize",
    "from_crop_coordinates",
    "limit_padding",
    "moving_average",
    "outside_fraction",
    "to_crop_coordinates",
    "whole_frame_boxes",
]

# Default margin (crop side / face side) of each --crop placement that places a box around the face.
CROP_MARGINS = {"voxceleb": 1.6, "lpd": 1.8}
# Default motion of each --crop placement.
CROP_MOTIONS = {"voxceleb": "fixed", "lpd": "smooth", "none": "fixed"}
CROP_PLACEMENTS = ("voxceleb", "lpd", "none")
# What fills the part of a crop outside the frame: mirrored content, repeated border pixels, or black.
PAD_MODES = ("reflect", "edge", "black")


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 over ``window`` samples, the window shrunk symmetrically near the ends
    (so a linear sequence is returned unchanged). values: (t, ...) -> (t, ...) float64."""
    values = np.asarray(values, dtype=np.float64)
    radius = max(int(window), 1) // 2
    if radius == 0 or len(values) < 3:
        return values.copy()
    cumulative = np.concatenate([np.zeros((1, *values.shape[1:])), np.cumsum(values, axis=0)])
    index = np.arange(len(values))
    reach = np.minimum(radius, np.minimum(index, len(values) - 1 - index))
    total = cumulative[index + reach + 1] - cumulative[index - reach]
    return total / (2 * reach + 1).reshape(-1, *([1] * (values.ndim - 1)))


def _square(centre_x: np.ndarray, centre_y: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Integer square boxes (t, 4) of the given sides whose spans [x0 - 1/2, x1 - 1/2] are centred on the centres."""
    side = np.maximum(np.round(side), 2).astype(np.int64)
    x0 = np.round(centre_x + 0.5 - side / 2).astype(np.int64)
    y0 = np.round(centre_y + 0.5 - side / 2).astype(np.int64)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=-1)


def crop_boxes(face_boxes: np.ndarray, margin: float, motion: str = "fixed", window: int = 9) -> np.ndarray:
    """The crop box of every frame of a clip (see the module doc).

    Args:
        face_boxes: (t, 4) float x1, y1, x2, y2 of the tracked face per frame, source pixels.
        margin: crop side / face side (1.6 VoxCeleb-style, 1.8 LPD).
        motion: "fixed" (one box for the whole clip) or "smooth" (follows the face, moving average).
        window: frames of the moving average ("smooth"; 1 follows every detection as it is).

    Returns:
        (t, 4) int64 x0, y0, x1, y1 with x1 - x0 == y1 - y0.
    """
    boxes = np.asarray(face_boxes, dtype=np.float64).reshape(-1, 4)
    if margin <= 0:
        raise ValueError(f"crop margin must be positive, got {margin}")
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if motion == "fixed":
        union = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])
        side = max(union[2] - union[0], union[3] - union[1]) + (margin - 1) * float(np.median(sides))
        box = _square(np.array([(union[0] + union[2]) / 2]), np.array([(union[1] + union[3]) / 2]),
                      np.array([side]))
        return np.repeat(box, len(boxes), axis=0)
    if motion == "smooth":
        centres = moving_average((boxes[:, :2] + boxes[:, 2:]) / 2, window)
        return _square(centres[:, 0], centres[:, 1], moving_average(margin * sides, window))
    raise ValueError(f"unknown crop motion {motion!r}: choose fixed or smooth")


def whole_frame_boxes(count: int, width: int, height: int) -> np.ndarray:
    """``--crop none``: the largest centred square of a width x height frame, ``count`` times -> (count, 4) int64."""
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return np.tile(np.array([[x0, y0, x0 + side, y0 + side]], np.int64), (count, 1))


def outside_fraction(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Share of each box's area (boxes (..., 4) x0, y0, x1, y1) outside a width x height frame, what padding
    fills -> (...) float64 in [0, 1]."""
    boxes = np.asarray(boxes, dtype=np.float64)
    inside_w = np.clip(np.minimum(boxes[..., 2], width) - np.maximum(boxes[..., 0], 0), 0, None)
    inside_h = np.clip(np.minimum(boxes[..., 3], height) - np.maximum(boxes[..., 1], 0), 0, None)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return 1.0 - inside_w * inside_h / np.maximum(area, 1e-12)


def limit_padding(boxes: np.ndarray, face_boxes: np.ndarray, width: int, height: int,
                  max_pad: float) -> tuple[np.ndarray | None, float]:
    """Shrinks a clip's crop boxes so that none has more than ``max_pad`` of its area outside the frame.

    All boxes shrink about their own centres by one factor (the clip keeps one zoom), the largest that meets the
    limit on every frame; a box never shrinks below the one that still holds its frame's face box.

    Args:
        boxes: (t, 4) int crop boxes (:func:`crop_boxes`).
        face_boxes: (t, 4) float x1, y1, x2, y2 of the tracked face per frame.
        width, height: the frame size.
        max_pad: largest acceptable share of a crop outside the frame, in [0, 1] (1: never shrink).

    Returns:
        (boxes, scale): the (t, 4) int64 boxes and the factor applied (1.0: unchanged), or (None, scale) when the
        limit cannot be met without cutting into the face.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if max_pad >= 1 or outside_fraction(boxes, width, height).max() <= max_pad:
        return boxes, 1.0
    faces = np.asarray(face_boxes, dtype=np.float64).reshape(-1, 4)
    side = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)
    centre_x, centre_y = boxes[:, 0] - 0.5 + side / 2, boxes[:, 1] - 0.5 + side / 2  # inverse of _square
    # Smallest factor that still holds each face box (+ a pixel for rounding).
    reach = np.max(np.abs(np.stack([faces[:, 0] - centre_x, faces[:, 2] - centre_x,
                                    faces[:, 1] - centre_y, faces[:, 3] - centre_y], axis=1)), axis=1)
    floor = float(np.max((2 * reach + 2) / side))

    def fits(scale: float) -> bool:
        shrunk = _square(centre_x, centre_y, side * scale)
        return bool(outside_fraction(shrunk, width, height).max() <= max_pad)

    if floor >= 1 or not fits(floor):
        return None, floor
    low, high = floor, 1.0  # fits(low) holds, fits(high) does not; the outside share grows with the scale
    for _ in range(24):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return _square(centre_x, centre_y, side * low), low


def crop_and_resize(frame: np.ndarray, box: np.ndarray, size: int, pad: str = "reflect") -> np.ndarray:
    """Cuts the square ``box`` out of a frame, padding outside it, and resizes it to ``size`` (antialiased).

    Args:
        frame: (h, w, 3) uint8 RGB.
        box: (4,) int x0, y0, x1, y1, a square (see the module doc); it may reach outside the frame.
        size: S, the output side.
        pad: what fills the parts of the box outside the frame: "reflect" (the frame mirrored at its border),
            "edge" (the border pixels repeated) or "black".

    Returns:
        (S, S, 3) uint8 RGB.
    """
    from PIL import Image

    height, width = frame.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx0 >= sx1 or sy0 >= sy1:  # entirely outside the frame: nothing to repeat
        patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    else:
        patch = frame[sy0:sy1, sx0:sx1]
        pads = ((sy0 - y0, y1 - sy1), (sx0 - x0, x1 - sx1), (0, 0))
        if any(p for pair in pads for p in pair):
            if pad == "reflect" and min(patch.shape[:2]) >= 2:
                patch = np.pad(patch, pads, mode="reflect")  # numpy reflects again where a pad exceeds the patch
            else:
                patch = np.pad(patch, pads, mode="constant" if pad == "black" else "edge")
    if patch.shape[0] == size:
        return np.ascontiguousarray(patch)
    # PIL's BICUBIC widens its kernel when shrinking (antialiasing) and samples at (u + 1/2) * side / S - 1/2,
    # the align_corners=False mapping that to_crop_coordinates inverts.
    image = Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image)


def to_crop_coordinates(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Source-pixel points into crop-pixel coordinates.

    Args:
        points: (t, k, 2) x, y in source pixels.
        boxes: (t, 4) crop boxes x0, y0, x1, y1 (squares).
        size: S, the side of the resized crop.

    Returns:
        (t, k, 2) float32 x, y in pixels of the S x S crop: u = (x - x0 + 1/2) * S / side - 1/2.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    scale = size / (boxes[:, 2] - boxes[:, 0])  # (t,)
    origin = boxes[:, :2] - 0.5  # (t, 2) source coordinates of the crop's top-left edge
    return ((np.asarray(points, np.float64) - origin[:, None]) * scale[:, None, None] - 0.5).astype(np.float32)


def from_crop_coordinates(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`to_crop_coordinates`: (t, k, 2) crop pixels -> (t, k, 2) float64 source pixels."""
    boxes = np.asarray(boxes, dtype=np.float64)
    scale = (boxes[:, 2] - boxes[:, 0]) / size
    return (np.asarray(points, np.float64) + 0.5) * scale[:, None, None] + boxes[:, None, :2] - 0.5
