"""The iBUG-68 landmark layout: index groups, the left-right flip permutation and drawing colours."""

from __future__ import annotations

__all__ = ["GROUPS", "FLIP_PERMUTATION", "GROUP_COLOURS"]

# 0-indexed groups of the iBUG-68 scheme; "right" is the subject's right (image left in a frontal face).
GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "right_brow": range(17, 22),
    "left_brow": range(22, 27),
    "nose_bridge": range(27, 31),
    "nose_lower": range(31, 36),
    "right_eye": range(36, 42),
    "left_eye": range(42, 48),
    "outer_lips": range(48, 60),
    "inner_lips": range(60, 68),
}


def _flip_permutation() -> tuple[int, ...]:
    # Mirror pairs of the layout; indices on the symmetry axis (nose bridge, 33, 51, 57, 62, 66) map to themselves.
    pairs = [(i, 16 - i) for i in range(8)]
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]
    pairs += [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]
    pairs += [(60, 64), (61, 63), (65, 67)]
    permutation = list(range(68))
    for a, b in pairs:
        permutation[a], permutation[b] = b, a
    return tuple(permutation)


# After a horizontal flip, landmark i of the flipped face is landmark FLIP_PERMUTATION[i] of the original, mirrored.
FLIP_PERMUTATION: tuple[int, ...] = _flip_permutation()

GROUP_COLOURS: dict[str, tuple[int, int, int]] = {
    "jaw": (255, 255, 255),
    "right_brow": (255, 0, 0),
    "left_brow": (0, 255, 0),
    "nose_bridge": (0, 0, 255),
    "nose_lower": (0, 0, 255),
    "right_eye": (255, 0, 255),
    "left_eye": (0, 255, 255),
    "outer_lips": (255, 255, 0),
    "inner_lips": (255, 255, 0),
}

