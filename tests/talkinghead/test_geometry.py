import pytest
import torch

from talkinghead.geometry import matrix_to_angles, normalized_to_pixels, pixels_to_normalized, rotation_matrix


def random_angles(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=generator) * 2 - 1) * torch.tensor([85.0, 60.0, 60.0])


def test_rotations_are_orthonormal_with_unit_determinant():
    rotation = rotation_matrix(*random_angles(64, seed=1).double().unbind(-1))
    identity = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), identity)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(64, dtype=torch.float64))


def test_angles_round_trip():
    angles = random_angles(256, seed=2).double()
    back = torch.stack(matrix_to_angles(rotation_matrix(*angles.unbind(-1))), dim=-1)
    torch.testing.assert_close(back, angles)


def test_batch_shapes_broadcast():
    yaw = torch.zeros(2, 5)
    assert rotation_matrix(yaw, torch.tensor(10.0), torch.zeros(1, 5)).shape == (2, 5, 3, 3)


@pytest.mark.parametrize(
    "angles, nose",
    [
        # The nose tip points at the camera (-z); each angle moves it as the documented convention says.
        ((30.0, 0.0, 0.0), (-0.5, 0.0)),  # positive yaw: towards image left
        ((0.0, 30.0, 0.0), (0.0, 0.5)),  # positive pitch: down
    ],
)
def test_sign_conventions(angles, nose):
    rotated = rotation_matrix(*torch.tensor(angles)) @ torch.tensor([0.0, 0.0, -1.0])
    torch.testing.assert_close(rotated[:2], torch.tensor(nose), atol=1e-6, rtol=0)


def test_positive_roll_is_clockwise_on_screen():
    # The head's +x axis (image right) turns towards +y (image down).
    rotated = rotation_matrix(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(90.0)) @ torch.tensor([1.0, 0, 0])
    torch.testing.assert_close(rotated, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_pixel_conversions_follow_grid_sample():
    size = 8
    pixels = torch.tensor([[0.0, 7.0], [3.5, 3.5]])
    normalized = pixels_to_normalized(pixels, size)
    torch.testing.assert_close(normalized, torch.tensor([[-7 / 8, 7 / 8], [0.0, 0.0]]))
    torch.testing.assert_close(normalized_to_pixels(normalized, size), pixels)
    # grid_sample with align_corners=False reads pixel (x=2, y=5) at the normalised point of that pixel.
    image = torch.arange(64.0).reshape(1, 1, 8, 8)
    grid = pixels_to_normalized(torch.tensor([2.0, 5.0]), size).reshape(1, 1, 1, 2)
    value = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    assert value.item() == 5 * 8 + 2
