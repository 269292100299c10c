import math

import pytest
import torch
import torch.nn.functional as F

from talkinghead.augment import PoseAugmentation

NO_PIXEL_CHANGES = {
    "blur_probability": 0.0,
    "sharpen_probability": 0.0,
    "noise_probability": 0.0,
    "colour_probability": 0.0,
    "jpeg_probability": 0.0,
}
ALL_PIXEL_CHANGES = {name: 1.0 for name in NO_PIXEL_CHANGES}


def texture(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB texture in [0, 1]: every warp or pixel change visibly alters it."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 4, size // 4, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def square_mask(batch: int = 1, size: int = 64, side: int = 20) -> torch.Tensor:
    """Mask with a filled square centred on the image centre."""
    mask = torch.zeros(batch, 1, size, size)
    start = (size - side) // 2
    mask[..., start : start + side, start : start + side] = 1.0
    return mask


def extent(mask: torch.Tensor) -> tuple[int, int]:
    """(width, height) in pixels of the filled region of a (1, s, s) mask."""
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def centroid(mask: torch.Tensor) -> torch.Tensor:
    """(x, y) centroid of a (1, s, s) mask."""
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    return torch.stack([xs.float().mean(), ys.float().mean()])


def test_identity_configuration_returns_inputs_exactly():
    augment = PoseAugmentation(scale=(1.0, 1.0), shift=0.0, **NO_PIXEL_CHANGES)
    pose, target, mask = texture(seed=1), texture(seed=2), square_mask(2, 32, 8)
    out_pose, out_target, out_mask = augment(pose, target, mask)
    assert torch.equal(out_pose, pose)
    assert torch.equal(out_target, target)
    assert torch.equal(out_mask, mask)


def test_geometry_is_shared_between_pose_frame_and_target():
    augment = PoseAugmentation(scale=(0.8, 1.2), shift=0.1, **NO_PIXEL_CHANGES)
    image = texture(batch=4)
    torch.manual_seed(0)
    pose, target, _ = augment(image, image.clone())
    torch.testing.assert_close(pose, target)
    # Every sample was warped, not just the batch as a whole.
    assert ((pose - image).abs().flatten(1).amax(dim=1) > 0.05).all()


def test_pixel_changes_touch_only_the_pose_frame():
    image, mask = texture(batch=3), square_mask(3, 32, 10)
    torch.manual_seed(5)
    warp_pose, warp_target, warp_mask = PoseAugmentation(**NO_PIXEL_CHANGES)(image, image.clone(), mask)
    torch.manual_seed(5)
    pose, target, out_mask = PoseAugmentation(**ALL_PIXEL_CHANGES)(image, image.clone(), mask)
    torch.testing.assert_close(target, warp_target)
    torch.testing.assert_close(out_mask, warp_mask)
    assert ((pose - warp_pose).abs().flatten(1).amax(dim=1) > 0.02).all()


def test_uniform_scale_grows_square_about_the_centre():
    mask = square_mask(1, 64, 20)
    augment = PoseAugmentation(scale=(1.2, 1.2), shift=0.0, **NO_PIXEL_CHANGES)
    _, _, out = augment(texture(1, 64), texture(1, 64), mask)
    width, height = extent(out[0])
    assert abs(width - 24) <= 1 and abs(height - 24) <= 1
    torch.testing.assert_close(centroid(out[0]), centroid(mask[0]), atol=0.6, rtol=0)


def test_shift_moves_centroid_within_bounds_and_both_ways():
    size, shift, samples = 64, 0.1, 64
    mask = square_mask(samples, size, 12)
    augment = PoseAugmentation(scale=(1.0, 1.0), shift=shift, **NO_PIXEL_CHANGES)
    torch.manual_seed(1)
    _, _, out = augment(texture(samples, size), texture(samples, size), mask)
    displacement = torch.stack([centroid(row) - centroid(mask[0]) for row in out])
    assert displacement.abs().max() <= shift * size + 1
    for axis in range(2):
        assert (displacement[:, axis] > 1).any() and (displacement[:, axis] < -1).any()
    # x and y shifts are drawn independently.
    assert not torch.allclose(displacement[:, 0], displacement[:, 1], atol=1.0)


def test_scale_is_drawn_independently_per_axis():
    samples, side = 32, 20
    mask = square_mask(samples, 64, side)
    augment = PoseAugmentation(scale=(0.7, 1.3), shift=0.0, **NO_PIXEL_CHANGES)
    torch.manual_seed(2)
    _, _, out = augment(texture(samples, 64), texture(samples, 64), mask)
    extents = torch.tensor([extent(row) for row in out], dtype=torch.float32)
    assert ((extents >= 0.7 * side - 1) & (extents <= 1.3 * side + 1)).all()
    # A shared factor would keep width == height up to nearest-neighbour rounding.
    assert ((extents[:, 0] - extents[:, 1]).abs() >= 3).sum() >= samples // 4


def test_unknown_masks_pass_through():
    augment = PoseAugmentation()
    image = texture(2)
    nan_mask = torch.full((2, 1, 32, 32), math.nan)
    assert torch.isnan(augment(image, image, nan_mask)[2]).all()
    assert augment(image, image, None)[2] is None


def test_mixed_batch_keeps_nan_rows_and_warps_finite_rows():
    augment = PoseAugmentation(scale=(1.2, 1.2), shift=0.1, **NO_PIXEL_CHANGES)
    image = texture(2)
    known = square_mask(2, 32, 10)
    known[1] = 0.0
    mixed = known.clone()
    mixed[1] = math.nan
    torch.manual_seed(3)
    _, _, out_mixed = augment(image, image, mixed)
    torch.manual_seed(3)
    _, _, out_known = augment(image, image, known)
    assert torch.isnan(out_mixed[1]).all()
    assert torch.isfinite(out_mixed[0]).all()
    assert torch.equal(out_mixed[0], out_known[0])
    assert set(out_mixed[0].unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(out_mixed[0], known[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_range_shape_dtype_and_device(dtype):
    augment = PoseAugmentation(**ALL_PIXEL_CHANGES, noise_std=0.2, brightness=0.9)
    image = texture(4).to(dtype)
    mask = square_mask(4, 32, 10).to(dtype)
    torch.manual_seed(4)
    outputs = augment(image, image, mask)
    for out, reference in zip(outputs, (image, image, mask)):
        assert out.shape == reference.shape and out.dtype == dtype and out.device == reference.device
        assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(outputs[0], outputs[1])


def test_reproducible_with_manual_seed():
    augment = PoseAugmentation(**ALL_PIXEL_CHANGES)
    image, mask = texture(2), square_mask(2, 32, 10)
    torch.manual_seed(7)
    first = augment(image, image, mask)
    torch.manual_seed(7)
    second = augment(image, image, mask)
    torch.manual_seed(8)
    third = augment(image, image, mask)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], third[0])


def test_module_is_stateless():
    augment = PoseAugmentation()
    assert list(augment.parameters()) == []
    assert list(augment.buffers()) == []
    assert augment.state_dict() == {}


def test_pixel_changes_alone_keep_the_input():
    image = texture(2)
    before = image.clone()
    torch.manual_seed(0)
    out = PoseAugmentation(**ALL_PIXEL_CHANGES).pixel_changes(image)
    assert torch.equal(image, before)
    assert not torch.allclose(out, image, atol=1e-3)
    untouched = PoseAugmentation(**NO_PIXEL_CHANGES).pixel_changes(image)
    assert torch.equal(untouched, image) and untouched is not image


@pytest.mark.parametrize("size", [32, 64, 40])
def test_jpeg_works_at_small_sizes(size):
    augment = PoseAugmentation(**{**NO_PIXEL_CHANGES, "jpeg_probability": 1.0}, jpeg_quality=(10.0, 20.0))
    image = texture(2, size)
    pose, target, _ = augment(image, image)
    assert pose.shape == image.shape
    assert pose.min() >= 0 and pose.max() <= 1
    assert (pose - target).abs().mean() > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": (0.0, 1.2)}, "scale"),
        ({"scale": (1.2, 0.8)}, "scale"),
        ({"scale": (-1.0, 1.0)}, "scale"),
        ({"shift": 0.5}, "shift"),
        ({"shift": -0.1}, "shift"),
        ({"blur_probability": 1.5}, "blur_probability"),
        ({"sharpen_probability": -0.1}, "sharpen_probability"),
        ({"noise_probability": 2.0}, "noise_probability"),
        ({"colour_probability": -1.0}, "colour_probability"),
        ({"jpeg_probability": 1.01}, "jpeg_probability"),
        ({"jpeg_quality": (0.0, 50.0)}, "jpeg_quality"),
        ({"blur_sigma": (0.0, 1.0)}, "blur_sigma"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"brightness": 1.5}, "brightness"),
    ],
)
def test_constructor_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PoseAugmentation(**kwargs)


@pytest.mark.parametrize(
    "pose, target, mask, message",
    [
        (torch.rand(3, 32, 32), torch.rand(3, 32, 32), None, "pose_frame"),
        (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), None, "pose_frame"),
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64), None, "target"),
        (torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32), None, "target"),
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), "mask"),
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 1, 16, 16), "mask"),
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32, dtype=torch.long), "mask"),
        (torch.ones(2, 3, 32, 32, dtype=torch.uint8), torch.ones(2, 3, 32, 32, dtype=torch.uint8), None, "floating"),
    ],
)
def test_forward_validation(pose, target, mask, message):
    with pytest.raises(ValueError, match=message):
        PoseAugmentation()(pose, target, mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_device():
    augment = PoseAugmentation(**ALL_PIXEL_CHANGES)
    image, mask = texture(2).cuda(), square_mask(2, 32, 10).cuda()
    mask[1] = math.nan
    outputs = augment(image, image, mask)
    assert all(out.device == image.device for out in outputs)
    assert torch.isnan(outputs[2][1]).all() and torch.isfinite(outputs[2][0]).all()
