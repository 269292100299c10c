"""Known answers for the OSFV loss terms (perceptual, hinge, feature matching, equivariance, priors, head pose)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from talkinghead.losses import (
    DeformationPriorLoss,
    DiscriminatorHingeLoss,
    EquivarianceLoss,
    FaceVGGLoss,
    FeatureMatchingLoss,
    GeneratorHingeLoss,
    HeadPoseLoss,
    Hopenet,
    KeypointPriorLoss,
    PerceptualPyramidLoss,
    WarpTransform,
    load_hopenet,
)
from talkinghead.networks.discriminators import MultiScalePatchDiscriminator
from talkinghead.networks.vgg import FaceVGGFeatures, VGG19Features


# -- perceptual ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perceptual():
    torch.manual_seed(0)
    return PerceptualPyramidLoss(VGG19Features())


def test_perceptual_zero_for_identical_positive_otherwise(perceptual):
    image = torch.rand(1, 3, 32, 32)
    assert perceptual(image, image.clone()).item() == 0.0
    prediction = image.clone().requires_grad_(True)
    other = (image + 0.1 * torch.randn_like(image)).clamp(0, 1)
    loss = perceptual(prediction, other)
    assert loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert prediction.grad.abs().sum() > 0


def test_perceptual_is_the_weighted_sum_over_scales_and_layers():
    class Stub(nn.Module):  # two "layers": the image and its square
        def forward(self, x, num_layers=None):
            return [x, x**2][:num_layers]

    loss = PerceptualPyramidLoss(Stub(), layer_weights=(1.0, 0.5), scales=(1.0,))
    x, y = torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), 0.25)
    assert loss(x, y).item() == pytest.approx(0.25 + 0.5 * (0.25 - 0.0625))
    pyramid = PerceptualPyramidLoss(Stub(), layer_weights=(1.0, 0.5), scales=(1.0, 0.5))
    assert pyramid(x, y).item() == pytest.approx(2 * (0.25 + 0.5 * (0.25 - 0.0625)))  # constant images
    first_only = PerceptualPyramidLoss(Stub(), layer_weights=(1.0,), scales=(1.0,))
    assert first_only(x, y).item() == pytest.approx(0.25)


def test_vgg_stops_at_the_deepest_layer_asked_for():
    torch.manual_seed(0)
    vgg = VGG19Features()
    image = torch.rand(1, 3, 32, 32)
    full, first_three = vgg(image), vgg(image, 3)
    assert len(full) == 5 and len(first_three) == 3
    for a, b in zip(full, first_three):
        torch.testing.assert_close(a, b)


def test_face_vgg_loss_single_scale():
    torch.manual_seed(0)
    loss = FaceVGGLoss(FaceVGGFeatures())
    assert loss.scales == (1.0,)
    image = torch.rand(1, 3, 32, 32)
    assert loss(image, image).item() == 0.0
    assert loss(image, image.flip(-1)).item() > 0


# -- hinge GAN and feature matching ----------------------------------------------------------------------------


def _outputs(*logits):
    return [{"features": [], "logits": torch.tensor(value, dtype=torch.float32)} for value in logits]


def test_hinge_zero_when_margins_hold():
    real = _outputs([[1.0, 2.0]], [[1.5]])
    fake = _outputs([[-1.0, -3.0]], [[-2.0]])
    assert DiscriminatorHingeLoss()(real, fake).item() == 0.0


def test_hinge_exact_values():
    real = _outputs([0.0, 2.0])  # relu(1 - r): 1, 0 -> 0.5
    fake = _outputs([0.5, -2.0])  # relu(1 + f): 1.5, 0 -> 0.75
    assert DiscriminatorHingeLoss()(real, fake).item() == pytest.approx(1.25)
    assert GeneratorHingeLoss()(fake).item() == pytest.approx(0.75)  # -mean(0.5, -2)
    two_scales = _outputs([0.5, -2.0], [1.0])  # averaged over scales: (0.75 + -1) / 2
    assert GeneratorHingeLoss()(two_scales).item() == pytest.approx(-0.125)
    assert GeneratorHingeLoss()(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)  # a bare logits tensor


def test_feature_matching_zero_for_identical_and_exact_otherwise():
    torch.manual_seed(0)
    # eval: in train mode every forward runs one spectral-norm power iteration, so two calls differ slightly.
    d = MultiScalePatchDiscriminator(scales=2, block_expansion=8, max_features=16).eval()
    image = torch.rand(2, 3, 32, 32)
    real, fake = d(image), d(image)
    assert FeatureMatchingLoss()(real, fake).item() == 0.0
    a = [{"features": [torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 1, 1)]}]
    b = [{"features": [torch.ones(1, 1, 2, 2), torch.full((1, 2, 1, 1), 3.0)]}]
    assert FeatureMatchingLoss()(a, b).item() == pytest.approx(2.0)  # mean over layers of 1 and 3


def test_feature_matching_detaches_real():
    real = [{"features": [torch.zeros(1, 4, requires_grad=True)]}]
    fake = [{"features": [torch.ones(1, 4, requires_grad=True)]}]
    FeatureMatchingLoss()(real, fake).backward()
    assert real[0]["features"][0].grad is None and fake[0]["features"][0].grad is not None


def test_gan_losses_through_the_discriminator():
    torch.manual_seed(0)
    d = MultiScalePatchDiscriminator(scales=2, block_expansion=8, max_features=16)
    fake_image = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = GeneratorHingeLoss()(d(fake_image)) + DiscriminatorHingeLoss()(d(torch.rand(1, 3, 32, 32)), d(fake_image))
    loss.backward()
    assert fake_image.grad is not None


# -- equivariance ----------------------------------------------------------------------------------------------


def _conv_detector(k=4):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, k, 3, padding=1), nn.Flatten(2))

    def detect(image):  # soft-argmax keypoints with a z from the heatmap's peakiness
        heat = net(image).softmax(-1)  # (b, k, h*w)
        h, w = image.shape[-2:]
        ys, xs = torch.meshgrid((torch.arange(h) * 2 + 1) / h - 1, (torch.arange(w) * 2 + 1) / w - 1, indexing="ij")
        x, y = (heat * xs.flatten()).sum(-1), (heat * ys.flatten()).sum(-1)
        return torch.stack([x, y, heat.amax(-1)], dim=-1)

    return detect


def test_equivariance_exactly_zero_for_identity_warp():
    detect = _conv_detector()
    image = torch.rand(2, 3, 32, 32)
    loss = EquivarianceLoss()(image, detect(image), detect, transform=WarpTransform.identity(2))
    assert loss.item() == 0.0


def test_equivariance_zero_for_an_exactly_equivariant_detector():
    # Fixed points q on the warped image, so the original image's keypoints are T(q): the detector follows T exactly.
    term = EquivarianceLoss()
    transform = term.sample_transform(3, torch.Generator().manual_seed(0))
    q = torch.rand(3, 5, 3) * 1.6 - 0.8
    keypoints = torch.cat([transform.warp_points(q[..., :2]), torch.rand(3, 5, 1)], dim=-1)  # z differs: ignored
    loss = term(torch.rand(3, 3, 32, 32), keypoints, lambda image: q, transform=transform)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_equivariance_positive_for_a_constant_detector():
    term = EquivarianceLoss()
    q = torch.rand(2, 5, 3) * 1.6 - 0.8
    loss = term(torch.rand(2, 3, 32, 32), q, lambda image: q, generator=torch.Generator().manual_seed(0))
    assert loss.item() > 1e-3


def test_equivariance_random_transforms_are_seedable_and_near_identity():
    term = EquivarianceLoss(sigma_affine=0.05, sigma_tps=0.005, points_tps=5)
    a = term.sample_transform(4, torch.Generator().manual_seed(3))
    b = term.sample_transform(4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.affine, b.affine)
    torch.testing.assert_close(a.weights, b.weights)
    assert a.centers.shape == (4, 25, 2) and a.weights.shape == (4, 25, 2)
    grid = torch.rand(4, 50, 2) * 2 - 1
    assert (a.warp_points(grid) - grid).abs().max() < 0.5


def test_warp_image_samples_the_image_at_T_of_p():
    # T shifts by +0.25 in x: the warped image at p shows the original at p + 0.25, i.e. 2 px to the right at 16 px.
    transform = WarpTransform.identity(1)
    transform.affine[:, 0, 0] = 0.25
    image = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    warped = transform.warp_image(image)
    torch.testing.assert_close(warped[0, 0, 0, :10], image[0, 0, 0, 2:12])


def test_equivariance_near_zero_for_a_centroid_detector():
    # A bright blob and an intensity-centroid detector: equivariant up to interpolation under a small affine warp.
    term = EquivarianceLoss()
    s = 64
    coords = (torch.arange(s) * 2 + 1) / s - 1
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    image = torch.exp(-((xs - 0.1) ** 2 + (ys + 0.15) ** 2) / (2 * 0.12**2)).expand(1, 3, s, s)

    def detect(img):
        mass = img[:, 0]
        total = mass.sum((-1, -2))
        x, y = (mass * xs).sum((-1, -2)) / total, (mass * ys).sum((-1, -2)) / total
        return torch.stack([x, y, torch.zeros_like(x)], dim=-1).unsqueeze(1)

    transform = term.sample_transform(1, torch.Generator().manual_seed(1))
    transform.weights.zero_()  # pure affine: the centroid moves exactly with it in the continuum
    assert term(image, detect(image), detect, transform=transform).item() < 5e-3
    constant = term(image, detect(image) + 0.0, lambda img: detect(image), transform=transform).item()
    assert constant > 5e-3


# -- keypoint and deformation priors ---------------------------------------------------------------------------


def test_keypoint_prior_zero_for_spread_keypoints_at_target_depth():
    axis = torch.tensor([-0.6, 0.0, 0.6])  # neighbours 0.6 apart: squared distance 0.36 > 0.1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    keypoints = torch.stack([x.flatten(), y.flatten(), torch.full((9,), 0.33)], dim=-1).expand(2, 9, 3)
    assert KeypointPriorLoss()(keypoints).item() == pytest.approx(0.0, abs=1e-7)


def test_keypoint_prior_hand_computed():
    # Two keypoints 0.2 apart (squared 0.04): each ordered pair adds 0.1 - 0.04; mean depth 0.5: |0.5 - 0.33|.
    first = torch.tensor([[[0.0, 0.0, 0.5], [0.2, 0.0, 0.5]]])
    # Three coincident keypoints at the target depth: 6 ordered pairs of 0.1.
    second = torch.tensor([[[0.1, 0.1, 0.33]] * 3])
    assert KeypointPriorLoss()(first).item() == pytest.approx(2 * 0.06 + 0.17)
    # The batch mean over samples with different k is not defined; check each, then a batch of two copies.
    assert KeypointPriorLoss()(second).item() == pytest.approx(0.6)
    assert KeypointPriorLoss()(first.expand(2, 2, 3)).item() == pytest.approx(0.29)
    assert KeypointPriorLoss(distance_threshold=0.01, depth_target=0.5)(first).item() == pytest.approx(0.0)


def test_deformation_prior():
    deltas = torch.tensor([[[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]]])
    assert DeformationPriorLoss()(deltas).item() == pytest.approx(1.5)
    assert DeformationPriorLoss()(torch.zeros(2, 5, 3)).item() == 0.0


# -- head pose -------------------------------------------------------------------------------------------------


def test_head_pose_loss_from_labels_skips_nan_rows():
    predicted = torch.tensor([[10.0, 0.0, 0.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]], requires_grad=True)
    labels = torch.tensor([[13.0, 0.0, 0.0, 0.1, 0.2, 0.3], [math.nan] * 6, [1.0, 2.0, 6.0, 0.0, 0.0, 0.0]])
    loss = HeadPoseLoss()(predicted, labels=labels)
    assert loss.item() == pytest.approx(6.0 / 6)
    loss.backward()
    assert predicted.grad[1].abs().sum() == 0


def test_head_pose_loss_all_nan_is_zero_and_warns_once():
    term = HeadPoseLoss()
    predicted = torch.ones(2, 3, requires_grad=True)
    with pytest.warns(UserWarning, match="no pose labels"):
        loss = term(predicted, labels=torch.full((2, 6), math.nan))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert term(predicted, labels=torch.full((2, 6), math.nan)).item() == 0.0
    with pytest.raises(ValueError):
        term(predicted)


def test_head_pose_loss_with_injected_estimator():
    class Fixed(nn.Module):
        def forward(self, images):
            return torch.tensor([[1.0, 2.0, 3.0]]).expand(images.shape[0], 3)

    predicted = torch.zeros(2, 3)
    stored = torch.full((2, 6), math.nan)  # ignored when an estimator is given
    assert HeadPoseLoss(Fixed())(predicted, torch.rand(2, 3, 8, 8), stored).item() == pytest.approx(2.0)


def test_hopenet_angles_and_local_loading(tmp_path):
    torch.manual_seed(0)
    net = Hopenet(input_size=32)
    images = torch.rand(2, 3, 48, 48)
    angles = net.eval()(images)
    assert angles.shape == (2, 3)
    assert (angles > -99).all() and (angles < 99).all()
    keys = net.state_dict().keys()
    assert {"conv1.weight", "fc_yaw.weight", "fc_pitch.bias", "fc_roll.weight", "fc_finetune.weight"} <= set(keys)
    assert "layer4.2.conv3.weight" in keys and "layer1.0.downsample.0.weight" in keys
    with pytest.raises(FileNotFoundError, match="deep-head-pose"):
        load_hopenet(tmp_path / "hopenet_robust_alpha1.pkl")
    term = HeadPoseLoss(net)
    term.train()
    assert not net.training
    torch.testing.assert_close(term(torch.zeros(2, 3), images), angles.abs().mean())


def test_embedding_match_is_the_mean_absolute_difference():
    from talkinghead.losses import EmbeddingMatchLoss

    loss = EmbeddingMatchLoss()
    e = torch.tensor([[1.0, -2.0, 0.0, 4.0]])
    assert loss(e, e.clone()) == 0
    assert torch.isclose(loss(e, torch.zeros_like(e)), torch.tensor(7.0 / 4))
    target = torch.zeros_like(e, requires_grad=True)
    loss(e, target).backward()
    assert torch.equal(target.grad, -torch.sign(e) / 4)
    with pytest.raises(ValueError):
        loss(e, torch.zeros(1, 3))
