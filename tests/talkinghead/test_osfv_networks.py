"""OSFV networks: shapes and ranges at tiny widths, parameter counts at the paper's scale, and shared blocks."""

import copy

import pytest
import torch

from talkinghead.flows import coordinate_grid_3d
from talkinghead.geometry import rotation_matrix
from talkinghead.networks import (
    AppearanceFeatureExtractor,
    CanonicalKeypointDetector,
    HeadPoseExpressionEstimator,
    MotionFieldEstimator,
    OSFVGenerator,
    SPADEGenerator,
)
from talkinghead.networks.blocks import (
    DownBlock2d,
    DownBlock3d,
    Hourglass3d,
    ResBlock2d,
    ResBlock3d,
    SameBlock2d,
    SPADEResBlock,
    UpBlock2d,
    UpBlock3d,
    spectral_norm_all,
)

# Tiny widths for 64 x 64 images (the tiny Lightning config reuses them): f_s is 4 ch x 4 depth x 16 x 16.
K, C, D = 5, 4, 4
TINY = {
    "appearance": dict(block_expansion=8, feature_channels=C, depth=D, num_res_blocks=1),
    "canonical_keypoints": dict(num_keypoints=K, block_expansion=8, max_features=32, num_blocks=3, depth=D,
                                kernel_size=3),
    "head_pose": dict(num_keypoints=K, block_expansion=8, stage_channels=(16, 32, 64, 128), stage_blocks=(1, 1, 1, 1)),
    "motion": dict(num_keypoints=K, feature_channels=C, depth=D, compressed_channels=2, block_expansion=8,
                   max_features=32, num_blocks=2, kernel_size=3),
    "generator": dict(feature_channels=C, depth=D, block_expansion=8, num_res_blocks=1),
    "spade": dict(feature_channels=C, depth=D, input_channels=16, middle_channels=32, num_middle_blocks=1,
                  up_channels=(16, 8), spade_hidden_channels=8),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def images(b=2, size=64):
    return torch.rand(b, 3, size, size)


def pose(b, seed):
    g = torch.Generator().manual_seed(seed)
    return rotation_matrix(*((torch.rand(b, 3, generator=g) - 0.5) * 60).unbind(-1))


def test_appearance_feature_extractor_shape():
    net = AppearanceFeatureExtractor(**TINY["appearance"])
    assert net(images()).shape == (2, C, D, 16, 16)


def test_canonical_keypoints_in_range_and_heatmaps_normalised():
    net = CanonicalKeypointDetector(**TINY["canonical_keypoints"])
    out = net(images())
    assert out["keypoints"].shape == (2, K, 3)
    assert out["keypoints"].abs().max() <= 1
    assert out["heatmaps"].shape == (2, K, D, 16, 16)
    torch.testing.assert_close(out["heatmaps"].sum(dim=(2, 3, 4)), torch.ones(2, K))


def test_canonical_keypoint_detector_runs_without_downscaling():
    net = CanonicalKeypointDetector(**{**TINY["canonical_keypoints"], "scale_factor": 1.0, "num_blocks": 4})
    assert net(images(1, 32))["heatmaps"].shape == (1, K, D, 32, 32)


def test_head_pose_expression_estimator_outputs():
    net = HeadPoseExpressionEstimator(**TINY["head_pose"])
    out = net(images())
    for name in ("yaw", "pitch", "roll"):
        assert out[name].shape == (2,)
        assert out[f"{name}_logits"].shape == (2, 66)
        assert ((out[name] >= -99) & (out[name] <= 96)).all()
    assert out["translation"].shape == (2, 3)
    assert out["expression"].shape == (2, K, 3)


def motion_inputs(b=2):
    feature = torch.randn(b, C, D, 16, 16)
    source_kp, driving_kp = torch.rand(b, K, 3) * 2 - 1, torch.rand(b, K, 3) * 2 - 1
    return feature, source_kp, driving_kp, pose(b, 0), pose(b, 1)


def test_motion_field_estimator_outputs():
    net = MotionFieldEstimator(**TINY["motion"])
    out = net(*motion_inputs())
    assert out["deformation"].shape == (2, D, 16, 16, 3)
    assert out["occlusion"].shape == (2, 1, 16, 16)
    assert ((out["occlusion"] > 0) & (out["occlusion"] < 1)).all()
    assert out["masks"].shape == (2, K + 1, D, 16, 16)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, D, 16, 16))


def test_motion_field_is_the_identity_when_nothing_moves():
    net = MotionFieldEstimator(**TINY["motion"]).eval()
    feature, kp, _, rotation, _ = motion_inputs()
    out = net(feature, kp, kp, rotation, rotation)
    # All K+1 candidate flows are the identity, so any convex combination of them is too.
    torch.testing.assert_close(out["deformation"], coordinate_grid_3d(D, 16, 16).expand(2, D, 16, 16, 3),
                               atol=1e-5, rtol=1e-5)


def test_motion_field_gradients_reach_the_keypoints_and_the_feature():
    net = MotionFieldEstimator(**TINY["motion"])
    feature, source_kp, driving_kp, rs, rd = motion_inputs()
    feature.requires_grad_(True)
    driving_kp.requires_grad_(True)
    out = net(feature, source_kp, driving_kp, rs, rd)
    (out["deformation"].sum() + out["occlusion"].sum()).backward()
    assert feature.grad.abs().sum() > 0 and driving_kp.grad.abs().sum() > 0


@pytest.mark.parametrize("name, cls", [("generator", OSFVGenerator), ("spade", SPADEGenerator)])
def test_generators_decode_an_image_in_unit_range(name, cls):
    net = cls(**TINY[name])
    feature = torch.randn(2, C, D, 16, 16)
    deformation = coordinate_grid_3d(D, 16, 16).expand(2, D, 16, 16, 3)
    image = net(feature, deformation, torch.rand(2, 1, 16, 16))
    assert image.shape == (2, 3, 64, 64)
    assert ((image >= 0) & (image <= 1)).all()
    image.mean().backward()


@pytest.mark.parametrize("name, cls", [("generator", OSFVGenerator), ("spade", SPADEGenerator)])
def test_generators_take_a_coarser_occlusion_mask(name, cls):
    net = cls(**TINY[name]).eval()
    feature = torch.randn(1, C, D, 16, 16)
    deformation = coordinate_grid_3d(D, 16, 16)[None]
    assert net(feature, deformation, torch.rand(1, 1, 8, 8)).shape == (1, 3, 64, 64)


def test_tiny_pipeline_end_to_end_and_deepcopy():
    nets = {
        "F": AppearanceFeatureExtractor(**TINY["appearance"]),
        "L": CanonicalKeypointDetector(**TINY["canonical_keypoints"]),
        "H": HeadPoseExpressionEstimator(**TINY["head_pose"]),
        "M": MotionFieldEstimator(**TINY["motion"]),
        "G": OSFVGenerator(**TINY["generator"]),
    }
    copy.deepcopy(nets["G"])  # EMA copies of spectrally normalised nets must work
    from talkinghead.flows import transform_keypoints

    source, driving = images(), images()
    feature = nets["F"](source)
    canonical = nets["L"](source)["keypoints"]
    kps, rotations = [], []
    for image in (source, driving):
        p = nets["H"](image)
        rotation = rotation_matrix(p["yaw"], p["pitch"], p["roll"])
        kps.append(transform_keypoints(canonical, rotation, p["translation"], p["expression"]))
        rotations.append(rotation)
    motion = nets["M"](feature, kps[0], kps[1], *rotations)
    prediction = nets["G"](feature, motion["deformation"], motion["occlusion"])
    assert prediction.shape == source.shape
    prediction.mean().backward()


def test_networks_reject_wrong_shapes():
    with pytest.raises(ValueError):
        MotionFieldEstimator(**TINY["motion"])(torch.randn(2, C + 1, D, 16, 16), *motion_inputs()[1:])
    with pytest.raises(ValueError):
        AppearanceFeatureExtractor(**TINY["appearance"])(torch.rand(2, 1, 64, 64))


# Parameter counts at the paper's scale (K = 20, 256 x 256): built only, never run on CPU.
PAPER_COUNTS = [
    (AppearanceFeatureExtractor, 0.84),
    (CanonicalKeypointDetector, 42.0),
    (HeadPoseExpressionEstimator, 30.0),
    (MotionFieldEstimator, 44.0),
    (OSFVGenerator, 8.7),
    (SPADEGenerator, 55.0),
]


@pytest.mark.parametrize("cls, millions", PAPER_COUNTS, ids=[c.__name__ for c, _ in PAPER_COUNTS])
def test_paper_scale_parameter_counts(cls, millions):
    with torch.device("meta"):  # shapes only: no memory, no init time
        net = cls()
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(millions, rel=0.1)


def test_paper_scale_appearance_features_at_256():
    with torch.no_grad():
        assert AppearanceFeatureExtractor().eval()(torch.rand(1, 3, 256, 256)).shape == (1, 32, 16, 64, 64)


# Shared blocks.
def test_blocks_shapes_and_norm_options():
    x2, x3 = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 4, 16, 16)
    for norm in ("batch", "instance", "none"):
        assert SameBlock2d(8, 6, norm=norm, activation="leaky_relu")(x2).shape == (2, 6, 16, 16)
        assert ResBlock2d(8, norm=norm)(x2).shape == x2.shape
        assert ResBlock3d(8, norm=norm)(x3).shape == x3.shape
        assert DownBlock2d(8, 6, norm=norm)(x2).shape == (2, 6, 8, 8)
        assert UpBlock2d(8, 6, norm=norm)(x2).shape == (2, 6, 32, 32)
        assert DownBlock3d(8, 6, norm=norm)(x3).shape == (2, 6, 4, 8, 8)
        assert UpBlock3d(8, 6, norm=norm)(x3).shape == (2, 6, 4, 32, 32)
    hourglass = Hourglass3d(8, block_expansion=4, max_features=16, num_blocks=3)
    assert hourglass(x3).shape == (2, hourglass.out_channels, 4, 16, 16) and hourglass.out_channels == 12
    assert SPADEResBlock(8, 6, label_channels=3, hidden_channels=4)(x2, torch.randn(2, 3, 4, 4)).shape == (2, 6, 16, 16)


def test_spectral_norm_all_bounds_every_weight_and_is_idempotent():
    net = spectral_norm_all(spectral_norm_all(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 5))))
    net.train()
    for _ in range(20):  # power iterations converge in training mode
        net[1](torch.randn(1, 4))
    sigma = torch.linalg.matrix_norm(net[1].weight.detach(), ord=2)
    assert sigma == pytest.approx(1.0, abs=1e-2)
    assert len(net[0].parametrizations.weight) == 1
