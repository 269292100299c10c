"""Pictures for people: landmarks drawn on frames and contact sheets of clips."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from talkinghead.landmarks import GROUP_COLOURS, GROUPS

__all__ = ["draw_landmarks", "contact_sheet"]


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """A copy of an image with iBUG-68 landmarks drawn as dots coloured by group.

    Args:
        image: (h, w, 3) uint8 RGB.
        landmarks: (68, 2) pixel x, y.
        radius: dot radius in pixels.

    Returns:
        (h, w, 3) uint8 RGB.
    """
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for name, indices in GROUPS.items():
        for x, y in landmarks[list(indices)]:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=GROUP_COLOURS[name])
    return np.asarray(canvas)


def contact_sheet(
    frames: Sequence[np.ndarray],
    landmarks: Sequence[np.ndarray] | None = None,
    columns: int = 6,
    scale: int = 2,
) -> np.ndarray:
    """Rows of clips: each row shows `columns` frames spread over one clip, landmarks optionally drawn.

    Args:
        frames: per clip, (t, h, w, 3) uint8 RGB.
        landmarks: per clip, (t, 68, 2) pixels, or None to draw none.
        columns: frames shown per clip.
        scale: integer upscaling of the frames before drawing, so small renders stay readable.

    Returns:
        (rows * h * scale, columns * w * scale, 3) uint8 RGB.
    """
    rows = []
    for i, clip in enumerate(frames):
        picks = np.linspace(0, len(clip) - 1, columns).round().astype(int)
        tiles = []
        for t in picks:
            tile = np.asarray(Image.fromarray(clip[t]).resize((clip.shape[2] * scale,) * 2, Image.NEAREST))
            if landmarks is not None:
                tile = draw_landmarks(tile, (landmarks[i][t] + 0.5) * scale - 0.5, radius=max(1.0, scale / 2))
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)
