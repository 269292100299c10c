import math

import pytest
import torch

from talkinghead.landmarks import GROUP_COLOURS, GROUPS
from talkinghead.sketch import CLOSED_GROUPS, draw_sketch

WHITE = torch.ones(3)
BLACK = torch.zeros(3)


def colour(name: str) -> torch.Tensor:
    return torch.tensor(GROUP_COLOURS[name], dtype=torch.float32) / 255


def nan_landmarks() -> torch.Tensor:
    return torch.full((68, 2), math.nan)


def on_line(landmarks: torch.Tensor, name: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Puts the points of a group evenly on the segment start -> end (in place)."""
    indices = list(GROUPS[name])
    t = torch.linspace(0, 1, len(indices))[:, None]
    landmarks[indices] = torch.tensor(start) * (1 - t) + torch.tensor(end) * t


def random_landmarks(*lead: int, size: int, seed: int) -> torch.Tensor:
    # Some points fall outside the image on purpose.
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*lead, 68, 2, generator=generator) * (size + 8) - 4


def reference_sketch(landmarks: torch.Tensor, size: int, line_width: float = 2.0):
    """Slow per-pixel rasteriser in float64 Python: (sketch (3, size, size), ambiguous (size, size) bool).

    A pixel is ambiguous when its centre lies within 1e-4 of the line edge of some segment, where float32 and
    float64 arithmetic may legitimately disagree.
    """
    points = landmarks.double().tolist()
    radius = line_width / 2
    sketch = torch.zeros(3, size, size)
    ambiguous = torch.zeros(size, size, dtype=torch.bool)
    for name, indices in GROUPS.items():
        indices = list(indices)
        pairs = list(zip(indices[:-1], indices[1:]))
        if name in CLOSED_GROUPS:
            pairs.append((indices[-1], indices[0]))
        for i, j in pairs:
            (ax, ay), (bx, by) = points[i], points[j]
            if not all(math.isfinite(v) for v in (ax, ay, bx, by)):
                continue
            dx, dy = bx - ax, by - ay
            length_sq = dx * dx + dy * dy
            for row in range(size):
                for column in range(size):
                    t = 0.0 if length_sq == 0 else ((column - ax) * dx + (row - ay) * dy) / length_sq
                    t = min(1.0, max(0.0, t))
                    distance = math.hypot(column - ax - t * dx, row - ay - t * dy)
                    if distance <= radius:
                        sketch[:, row, column] = colour(name)
                    if abs(distance - radius) < 1e-4:
                        ambiguous[row, column] = True
    return sketch, ambiguous


def test_shape_dtype_and_range_for_leading_dims():
    sketch = draw_sketch(random_landmarks(2, 3, size=40, seed=0), 40)
    assert sketch.shape == (2, 3, 3, 40, 40)
    assert sketch.dtype == torch.float32
    assert sketch.min() >= 0 and sketch.max() <= 1
    assert sketch.max() == 1  # something was drawn
    assert draw_sketch(random_landmarks(size=8, seed=1).double(), 8).shape == (3, 8, 8)


def test_horizontal_line_is_two_pixels_wide_and_gap_free():
    landmarks = nan_landmarks()
    on_line(landmarks, "jaw", (5.0, 10.0), (25.0, 10.0))
    sketch = draw_sketch(landmarks, 32)
    for row in (9, 10, 11):  # centres within 1 px of the line
        assert (sketch[:, row, 5:26] == WHITE[:, None]).all(), row
    # Round caps: the pixel 1 px beyond each end is on, the diagonal neighbours (sqrt 2 away) are not.
    assert (sketch[:, 10, 4] == WHITE).all() and (sketch[:, 10, 26] == WHITE).all()
    assert (sketch[:, 9, 4] == 0).all() and (sketch[:, 11, 26] == 0).all()
    lit = sketch.sum(0) > 0
    assert not lit[:9].any() and not lit[12:].any()  # rows 2+ px away
    assert not lit[:, :4].any() and not lit[:, 27:].any()  # columns 2+ px beyond the ends
    assert lit.sum() == 3 * 21 + 2


def test_line_width_scales_the_band():
    landmarks = nan_landmarks()
    on_line(landmarks, "jaw", (5.0, 16.0), (25.0, 16.0))
    lit = draw_sketch(landmarks, 32, line_width=6.0).sum(0) > 0
    assert lit[13:20, 15].all() and not lit[12, 15] and not lit[20, 15]


def test_each_group_gets_its_colour():
    landmarks = nan_landmarks()
    names = list(GROUPS)
    for k, name in enumerate(names):
        y = 4.0 + 7 * k
        on_line(landmarks, name, (10.0, y), (50.0, y))
    sketch = draw_sketch(landmarks, 68)
    for k, name in enumerate(names):
        torch.testing.assert_close(sketch[:, 4 + 7 * k, 30], colour(name), atol=0, rtol=0, msg=name)
        assert (sketch[:, 4 + 7 * k + 3, 30] == 0).all()  # the gap between lines stays black


@pytest.mark.parametrize(
    "early, late", [("jaw", "right_brow"), ("nose_lower", "right_eye"), ("left_eye", "inner_lips")]
)
def test_later_groups_overwrite_earlier_ones(early, late):
    landmarks = nan_landmarks()
    on_line(landmarks, early, (4.0, 10.0), (28.0, 10.0))
    on_line(landmarks, late, (10.0, 4.0), (10.0, 28.0))
    sketch = draw_sketch(landmarks, 32)
    torch.testing.assert_close(sketch[:, 10, 10], colour(late), atol=0, rtol=0)  # the crossing
    torch.testing.assert_close(sketch[:, 10, 20], colour(early), atol=0, rtol=0)


def test_closed_groups_close_and_open_groups_do_not():
    landmarks = nan_landmarks()
    # The right eye traces a "U" from (4, 4) down, across and up to (20, 4); closing it adds the top edge.
    landmarks[36:42] = torch.tensor([[4.0, 4.0], [4.0, 20.0], [12.0, 20.0], [20.0, 20.0], [20.0, 12.0], [20.0, 4.0]])
    # The jaw traces the same "U" further right; as an open polyline its top edge stays undrawn.
    landmarks[0:17] = torch.cat(
        [
            torch.stack([torch.full((6,), 30.0), torch.linspace(4, 20, 6)], dim=1),
            torch.stack([torch.linspace(32, 44, 5), torch.full((5,), 20.0)], dim=1),
            torch.stack([torch.full((6,), 46.0), torch.linspace(20, 4, 6)], dim=1),
        ]
    )
    sketch = draw_sketch(landmarks, 52)
    torch.testing.assert_close(sketch[:, 4, 12], colour("right_eye"), atol=0, rtol=0)
    assert (sketch[:, 4, 38] == 0).all()
    torch.testing.assert_close(sketch[:, 20, 38], colour("jaw"), atol=0, rtol=0)  # the jaw itself is drawn
    assert CLOSED_GROUPS == {"right_eye", "left_eye", "outer_lips", "inner_lips"}


def test_nan_points_draw_nothing_for_their_segments():
    landmarks = nan_landmarks()
    on_line(landmarks, "jaw", (2.0, 10.0), (34.0, 10.0))  # 2 px per segment; point 8 at x = 18
    landmarks[8, 1] = math.nan
    sketch = draw_sketch(landmarks, 40)
    assert not sketch.isnan().any()
    # Points 7 and 9 (x = 16, 20) still end their other segments with round caps reaching x = 17 and 19.
    assert (sketch[:, 9:12, 2:17] == 1).all() and (sketch[:, 9:12, 20:35] == 1).all()
    assert (sketch[:, 10, 17] == 1).all() and (sketch[:, 10, 19] == 1).all()
    assert (sketch[:, :, 18] == 0).all()  # segments 7-8 and 8-9 are gone
    assert (draw_sketch(nan_landmarks().expand(2, 68, 2), 16) == 0).all()


def test_out_of_image_points_draw_only_inside():
    landmarks = nan_landmarks()
    on_line(landmarks, "jaw", (-40.0, 5.0), (1000.0, 5.0))  # crosses the whole image
    on_line(landmarks, "right_brow", (33.0, 15.0), (60.0, 15.0))  # 2 px right of the last column
    on_line(landmarks, "left_brow", (5.0, -1.0), (20.0, -1.0))  # reaches row 0 only
    on_line(landmarks, "right_eye", (-1e6, -1e6), (-1e6 + 5, -1e6))  # far away
    sketch = draw_sketch(landmarks, 32)
    assert (sketch[:, 4:7] == WHITE[:, None, None]).all()
    assert (sketch[:, 0, 5:21] == colour("left_brow")[:, None]).all()
    lit = sketch.sum(0) > 0
    assert lit.sum() == 3 * 32 + 16  # nothing wraps onto other rows or columns


def test_matches_slow_reference():
    landmarks = random_landmarks(3, size=24, seed=3)
    landmarks[1, 40] = math.nan
    sketch = draw_sketch(landmarks, 24)
    for i in range(3):
        expected, ambiguous = reference_sketch(landmarks[i], 24)
        assert ambiguous.float().mean() < 0.01
        agree = (sketch[i] == expected).all(0) | ambiguous
        assert agree.all(), (~agree).nonzero()


def test_matches_slow_reference_with_wide_lines():
    landmarks = random_landmarks(size=24, seed=4) * 0.5 + 6
    expected, ambiguous = reference_sketch(landmarks, 24, line_width=3.5)
    agree = (draw_sketch(landmarks, 24, line_width=3.5) == expected).all(0) | ambiguous
    assert agree.all()


def test_batched_equals_per_image():
    landmarks = random_landmarks(2, 3, size=70, seed=5)
    landmarks[0, 1, 10:20] = math.nan
    landmarks[1, 2] = math.nan
    batched = draw_sketch(landmarks, 70)
    for i in range(2):
        for j in range(3):
            assert torch.equal(batched[i, j], draw_sketch(landmarks[i, j], 70))


@pytest.mark.parametrize("shape", [(68,), (67, 2), (2, 68, 3), (68, 2, 1)])
def test_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"\(\.\.\., 68, 2\).*got"):
        draw_sketch(torch.zeros(shape), 32)


@pytest.mark.parametrize("size", [0, -3])
def test_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="size"):
        draw_sketch(torch.zeros(68, 2), size)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    landmarks = random_landmarks(4, size=64, seed=6)
    landmarks[2, 5] = math.nan
    sketch = draw_sketch(landmarks.cuda(), 64)
    assert sketch.device.type == "cuda"
    # float32 rounding may differ between devices on pixels exactly at a line edge; allow a handful.
    assert (sketch.cpu() != draw_sketch(landmarks, 64)).any(1).sum() <= 4
