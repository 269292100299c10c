"""Known answers for the OSFV keypoint and flow geometry (talkinghead.flows)."""

import pytest
import torch
import torch.nn.functional as F

from talkinghead.flows import (
    coordinate_grid_3d,
    first_order_flows,
    keypoint_heatmaps,
    pose_bins_to_degrees,
    transform_keypoints,
    warp_volume,
)
from talkinghead.geometry import rotation_matrix
from talkinghead.networks.blocks import assert_shape


def random_rotations(b, seed):
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(b, 3, generator=g) - 0.5) * 90
    return rotation_matrix(*angles.unbind(-1))


def test_coordinate_grid_matches_grid_sample_voxel_centres():
    grid = coordinate_grid_3d(3, 4, 5)
    assert grid.shape == (3, 4, 5, 3)
    # x runs along w, y along h, z along d; centres at (2i + 1) / n - 1.
    torch.testing.assert_close(grid[0, 0, :, 0], (2 * torch.arange(5.0) + 1) / 5 - 1)
    torch.testing.assert_close(grid[0, :, 0, 1], (2 * torch.arange(4.0) + 1) / 4 - 1)
    torch.testing.assert_close(grid[:, 0, 0, 2], (2 * torch.arange(3.0) + 1) / 3 - 1)
    # The same points torch's own affine_grid produces with align_corners=False.
    theta = torch.eye(3, 4)[None]
    reference = F.affine_grid(theta, (1, 1, 3, 4, 5), align_corners=False)[0]
    torch.testing.assert_close(grid, reference)


def test_transform_keypoints_is_rotation_translation_expression():
    canonical = torch.rand(2, 6, 3) * 2 - 1
    rotation = random_rotations(2, 0)
    translation, expression = torch.randn(2, 3), torch.randn(2, 6, 3) * 0.1
    expected = torch.einsum("bij,bkj->bki", rotation, canonical) + translation[:, None] + expression
    torch.testing.assert_close(transform_keypoints(canonical, rotation, translation, expression), expected)


def test_identity_pose_gives_identity_flows_and_warp_returns_the_input():
    b, k, (d, h, w) = 2, 5, (4, 6, 8)
    grid = coordinate_grid_3d(d, h, w)
    kp = torch.rand(b, k, 3) * 2 - 1
    eye = torch.eye(3).expand(b, 3, 3)
    flows = first_order_flows(grid, kp, kp, eye, eye)
    assert flows.shape == (b, k + 1, d, h, w, 3)
    torch.testing.assert_close(flows, grid.expand(b, k + 1, d, h, w, 3))
    volume = torch.randn(b, 3, d, h, w)
    torch.testing.assert_close(warp_volume(volume, flows[:, 3]), volume, atol=1e-5, rtol=1e-5)


def test_equal_rotations_cancel_and_translation_shifts_the_flow_exactly():
    b, k = 3, 4
    grid = coordinate_grid_3d(2, 3, 4)
    rotation = random_rotations(b, 1)
    driving = torch.rand(b, k, 3) * 2 - 1
    shift = torch.tensor([0.1, -0.2, 0.05])
    # x_s = x_d + s with R_s = R_d: every keypoint flow reads the source at p + s.
    flows = first_order_flows(grid, driving + shift, driving, rotation, rotation)
    torch.testing.assert_close(flows[:, 1:], (grid + shift).expand(b, k, 2, 3, 4, 3), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(flows[:, 0], grid.expand(b, 2, 3, 4, 3))


def test_first_order_flows_match_a_per_keypoint_loop():
    b, k = 2, 5
    grid = coordinate_grid_3d(3, 4, 5)
    source_kp, driving_kp = torch.rand(b, k, 3) * 2 - 1, torch.rand(b, k, 3) * 2 - 1
    source_rotation, driving_rotation = random_rotations(b, 2), random_rotations(b, 3)
    flows = first_order_flows(grid, source_kp, driving_kp, source_rotation, driving_rotation)
    for i in range(b):
        jacobian = source_rotation[i] @ torch.linalg.inv(driving_rotation[i])
        torch.testing.assert_close(flows[i, 0], grid)
        for j in range(k):
            expected = (grid - driving_kp[i, j]) @ jacobian.T + source_kp[i, j]
            torch.testing.assert_close(flows[i, j + 1], expected, atol=1e-5, rtol=1e-5)


def test_flow_maps_driving_keypoints_onto_source_keypoints():
    b, k = 2, 3
    source_kp, driving_kp = torch.rand(b, k, 3) * 2 - 1, torch.rand(b, k, 3) * 2 - 1
    # Evaluate the flows on a "grid" made of the driving keypoints themselves: w_k(x_d,k) = x_s,k.
    flows = first_order_flows(driving_kp[0].reshape(k, 1, 1, 3), source_kp, driving_kp, random_rotations(b, 4),
                              random_rotations(b, 5))
    for j in range(k):
        torch.testing.assert_close(flows[0, j + 1, j, 0, 0], source_kp[0, j], atol=1e-5, rtol=1e-5)


def test_warp_volume_with_a_one_voxel_shift_moves_the_volume():
    volume = torch.randn(1, 2, 4, 6, 8)
    grid = coordinate_grid_3d(4, 6, 8)
    shifted = grid + torch.tensor([2 / 8, 0.0, 0.0])  # read one voxel to the right along x (w)
    out = warp_volume(volume, shifted[None])
    torch.testing.assert_close(out[..., :-1], volume[..., 1:], atol=1e-5, rtol=1e-5)
    assert out[..., -1].abs().max() < volume.abs().max()  # the last column reads half outside (zeros padding)


def test_warp_volume_resizes_a_coarser_flow():
    volume = torch.randn(1, 2, 4, 8, 8)
    out = warp_volume(volume, coordinate_grid_3d(4, 4, 4)[None])
    assert out.shape == volume.shape


def test_keypoint_heatmaps_peak_at_the_keypoint_voxel():
    grid = coordinate_grid_3d(4, 8, 8)
    keypoints = grid[1, 2, 5][None, None].clone()  # exactly on a voxel centre
    heat = keypoint_heatmaps(keypoints, (4, 8, 8), variance=0.01)
    assert heat.shape == (1, 1, 4, 8, 8)
    assert heat.max() == pytest.approx(1.0)
    assert torch.nonzero(heat[0, 0] == heat.max()).tolist() == [[1, 2, 5]]
    # One voxel away along x (distance 2/8): exp(-0.5 * 0.0625 / 0.01).
    assert heat[0, 0, 1, 2, 6].item() == pytest.approx(torch.exp(torch.tensor(-3.125)).item(), rel=1e-5)


def test_keypoint_heatmaps_have_no_subnormal_tails():
    # Subnormal floats are ~100x slower on x86 CPUs; the motion estimator's convolutions read these heatmaps.
    keypoints = torch.rand(2, 5, 3) * 2 - 1
    heat = keypoint_heatmaps(keypoints, (8, 16, 16), variance=0.01)
    grid = coordinate_grid_3d(8, 16, 16)
    exact = torch.exp(-0.5 * (grid[None, None] - keypoints[:, :, None, None, None]).pow(2).sum(-1) / 0.01)
    assert (exact[exact > 0] < torch.finfo(torch.float32).tiny).any()  # the case the flush is for
    torch.testing.assert_close(heat, exact, rtol=0, atol=2.0**-100)
    for values in (heat, heat - keypoint_heatmaps(keypoints.flip(1), (8, 16, 16), variance=0.01)):
        assert not ((values != 0) & (values.abs() < torch.finfo(torch.float32).tiny)).any()


@pytest.mark.parametrize("index", [0, 1, 33, 65])
def test_pose_bins_to_degrees_of_a_peaked_bin(index):
    logits = torch.full((2, 66), -50.0)
    logits[:, index] = 50.0
    torch.testing.assert_close(pose_bins_to_degrees(logits), torch.full((2,), 3.0 * index - 99))


def test_pose_bins_of_uniform_logits_is_the_mean_bin():
    assert pose_bins_to_degrees(torch.zeros(1, 66)).item() == pytest.approx(65 / 2 * 3 - 99)


def test_assert_shape_names_sizes_and_rejects_mismatches():
    x = torch.zeros(2, 5, 3)
    assert assert_shape(x, "b k 3") == {"b": 2, "k": 5}
    assert assert_shape(x, (None, 5, 3)) == {}
    with pytest.raises(ValueError):
        assert_shape(x, "b k 3", k=4)
    with pytest.raises(ValueError):
        assert_shape(x, "b b 3")
    with pytest.raises(ValueError):
        assert_shape(x, "b k")
