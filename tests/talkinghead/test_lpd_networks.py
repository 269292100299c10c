"""LPD networks (identity / pose encoders, generator) and the Dice mask loss.

Paper-scale structure checks against torchvision's ResNeXt-50 (32x4d) and MobileNetV2, shapes and invariances at
tiny widths (64 px), spectral-norm placement, gradient flow, and known answers for the Dice loss.
"""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import resnext50_32x4d

from talkinghead.losses import DiceLoss
from talkinghead.networks import IdentityEncoder, LPDGenerator, PoseEncoder
from talkinghead.networks.blocks import AdaINResBlock2d

S = 64  # tiny image size
TINY_ID = dict(embedding_dim=64, layers=(1, 1, 1, 1), groups=8, width_per_group=4, base_channels=16)
TINY_G = dict(identity_dim=64, pose_dim=32, hidden_dim=96, channels=(64, 64, 32, 16), constant_channels=64,
              image_size=S)


def _is_spectral_normed(layer: nn.Module) -> bool:
    return hasattr(layer, "parametrizations") and "weight" in layer.parametrizations


def _num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- identity encoder -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_identity_encoder():
    torch.manual_seed(0)
    return IdentityEncoder()


def test_identity_encoder_trunk_is_resnext50_32x4d(paper_identity_encoder):
    trunk = paper_identity_encoder.trunk
    reference = resnext50_32x4d()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    result = trunk.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    fc = reference.fc
    assert _num_parameters(trunk) == _num_parameters(reference) - _num_parameters(fc) + 2048 * 512 + 512
    assert trunk.fc.in_features == 2048 and trunk.fc.out_features == 512
    conv2 = trunk.layer1[0].conv2
    assert conv2.groups == 32 and conv2.in_channels == conv2.out_channels == 128
    assert trunk.layer4[0].conv2.groups == 32 and trunk.layer4[0].conv2.out_channels == 1024
    # the loaded ImageNet-style weights are really used
    torch.testing.assert_close(trunk.layer3[2].conv2.weight, reference.layer3[2].conv2.weight)


def test_identity_encoder_paper_forward_at_64(paper_identity_encoder):
    with torch.no_grad():
        out = paper_identity_encoder.eval()(torch.rand(1, 2, 3, S, S))
    assert out.shape == (1, 512) and torch.isfinite(out).all()


@pytest.mark.parametrize("batch,k", [(1, 1), (2, 3)])
def test_identity_encoder_tiny_shape_and_mean_over_frames(batch, k):
    torch.manual_seed(0)
    encoder = IdentityEncoder(**TINY_ID).eval()  # eval: batch-norm running statistics, no batch coupling
    conv2 = encoder.trunk.layer1[0].conv2
    assert conv2.groups == 8 and conv2.out_channels == 8  # int(16 * 4 / 64) * 8
    assert encoder.trunk.fc.in_features == 16 * 8 * 4
    frames = torch.rand(batch, k, 3, S, S)
    with torch.no_grad():
        out = encoder(frames)
        per_frame = encoder.embed_frames(frames.flatten(0, 1)).view(batch, k, -1)
    assert out.shape == (batch, 64)
    torch.testing.assert_close(out, per_frame.mean(dim=1))
    if k > 1:
        assert not torch.allclose(per_frame[0, 0], per_frame[0, 1])  # the mean is over distinct embeddings


def test_identity_encoder_is_invariant_to_frame_order():
    torch.manual_seed(0)
    encoder = IdentityEncoder(**TINY_ID).eval()
    frames = torch.rand(2, 4, 3, S, S)
    with torch.no_grad():
        out = encoder(frames)
        shuffled = encoder(frames[:, torch.tensor([2, 0, 3, 1])])
        other = encoder(frames[:, :3])
    torch.testing.assert_close(shuffled, out)
    assert not torch.allclose(other, out)  # dropping a frame does change the mean


@pytest.mark.parametrize("shape", [(2, 3, S, S), (2, 1, 1, S, S), (2, 1, 4, S, S)])
def test_identity_encoder_rejects_bad_shapes(shape):
    encoder = IdentityEncoder(**TINY_ID)
    with pytest.raises(ValueError):
        encoder(torch.rand(*shape))


@pytest.mark.parametrize("layers", [(1, 1, 1), (1, 1, 1, 1, 1)])
def test_identity_encoder_rejects_layers_not_of_four_stages(layers):
    with pytest.raises(ValueError, match="4"):
        IdentityEncoder(**{**TINY_ID, "layers": layers})


# --- pose encoder ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width_mult", [0.25, 1.0])
def test_pose_encoder_is_mobilenet_v2(width_mult):
    torch.manual_seed(0)
    encoder = PoseEncoder(embedding_dim=32, width_mult=width_mult).eval()
    assert isinstance(encoder.trunk, torchvision.models.MobileNetV2)
    last = [m for m in encoder.trunk.classifier if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 32 and last.in_features == 1280
    frames = torch.rand(3, 3, S, S)
    with torch.no_grad():
        out = encoder(frames)
        alone = encoder(frames[1:2])
    assert out.shape == (3, 32)
    # a fresh MobileNetV2 in eval mode (unit running statistics) gives tiny outputs (~1e-7 to 1e-9): compare
    # relative to their scale
    scale = out.abs().max()
    assert scale > 0
    torch.testing.assert_close(alone[0] / scale, out[1] / scale, atol=1e-5, rtol=1e-4)
    assert (out[0] - out[1]).abs().max() > 1e-3 * scale
    with pytest.raises(ValueError):
        encoder(torch.rand(3, 1, S, S))


def test_pose_encoder_paper_defaults():
    encoder = PoseEncoder()
    assert encoder.embedding_dim == 256 and encoder.trunk.classifier[-1].out_features == 256
    reference = torchvision.models.mobilenet_v2()
    assert _num_parameters(encoder) == (_num_parameters(reference) - 1000 * 1281 + 256 * 1281)


# --- generator ------------------------------------------------------------------------------------------------


def test_generator_paper_defaults_construct():
    generator = LPDGenerator()
    assert len(generator.up_blocks) == 6 and len(generator.res_blocks) == 0
    assert generator.image_size == 256
    assert generator.constant.shape == (1, 512, 4, 4)
    assert [b.out_channels for b in generator.up_blocks] == [512, 512, 512, 256, 128, 64]
    first, act, second = generator.mlp
    assert isinstance(first, nn.Linear) and (first.in_features, first.out_features) == (768, 768)
    assert isinstance(act, nn.ReLU)
    assert isinstance(second, nn.Linear) and second.in_features == 768
    assert second.out_features == generator.num_adain_parameters
    assert generator.num_adain_parameters == sum(b.num_adain_parameters for b in generator.up_blocks)
    # 2 (in + out) per block: 3 x 2 (512 + 512) + 2 (512 + 256) + 2 (256 + 128) + 2 (128 + 64)
    assert generator.num_adain_parameters == 8832


@pytest.mark.parametrize("batch", [1, 3])
def test_generator_shapes_range_and_mask(batch):
    torch.manual_seed(0)
    generator = LPDGenerator(**TINY_G).eval()
    with torch.no_grad():
        out = generator(torch.randn(batch, 64), torch.randn(batch, 32))
    assert set(out) == {"rgb", "mask", "image"}
    assert out["rgb"].shape == (batch, 3, S, S) and out["image"].shape == (batch, 3, S, S)
    assert out["mask"].shape == (batch, 1, S, S)
    for value in out.values():
        assert value.min() >= 0 and value.max() <= 1
    assert torch.equal(out["image"], out["rgb"] * out["mask"])
    assert out["mask"].std() > 0 and out["rgb"].std() > 0  # not a constant output


def test_generator_identity_broadcast():
    torch.manual_seed(0)
    generator = LPDGenerator(**TINY_G).eval()  # eval: no spectral-norm power iteration between the calls
    identity, pose = torch.randn(1, 64), torch.randn(3, 32)
    with torch.no_grad():
        broadcast = generator(identity, pose)
        repeated = generator(identity.repeat(3, 1), pose)
    for key in ("rgb", "mask", "image"):
        torch.testing.assert_close(broadcast[key], repeated[key])
    assert not torch.allclose(broadcast["image"][0], broadcast["image"][1])  # the poses do differ


def test_generator_depends_on_identity_and_pose():
    torch.manual_seed(0)
    generator = LPDGenerator(**TINY_G).eval()
    identity, pose = torch.randn(2, 64), torch.randn(2, 32)
    with torch.no_grad():
        base = generator(identity, pose)["image"]
        new_identity = generator(torch.randn(2, 64), pose)["image"]
        new_pose = generator(identity, torch.randn(2, 32))["image"]
        again = generator(identity, pose)["image"]
    torch.testing.assert_close(again, base)
    assert (new_identity - base).abs().max() > 1e-3
    assert (new_pose - base).abs().max() > 1e-3


def test_generator_rejects_bad_inputs_and_configs():
    generator = LPDGenerator(**TINY_G)
    with pytest.raises(ValueError):
        generator(torch.randn(2, 64), torch.randn(3, 32))
    with pytest.raises(ValueError):
        generator(torch.randn(3, 63), torch.randn(3, 32))
    with pytest.raises(ValueError):
        generator(torch.randn(3, 64), torch.randn(3, 33))
    with pytest.raises(ValueError, match="image_size"):
        LPDGenerator(**{**TINY_G, "image_size": 32})
    with pytest.raises(ValueError, match="image_size"):
        LPDGenerator(**{**TINY_G, "channels": (64, 32, 16)})
    with pytest.raises(ValueError):
        LPDGenerator(**{**TINY_G, "channels": (), "image_size": 4})


def test_generator_spectral_norm_on_convs_not_mlp():
    generator = LPDGenerator(**TINY_G)
    convs = [m for m in generator.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in generator.modules() if isinstance(m, nn.Linear)]
    # per up block: conv1, conv2 and a 1x1 skip where channels change (64 -> 64 keeps the identity skip)
    assert len(convs) == 2 * 4 + 2 + 1  # + to_output
    assert all(_is_spectral_normed(m) for m in convs)
    assert len(linears) == 2 and not any(_is_spectral_normed(m) for m in linears)
    plain = LPDGenerator(**TINY_G, spectral_norm=False)
    assert not any(_is_spectral_normed(m) for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_generator_gradients_reach_every_part():
    torch.manual_seed(0)
    generator = LPDGenerator(**TINY_G)
    identity = torch.randn(2, 64, requires_grad=True)
    pose = torch.randn(2, 32, requires_grad=True)
    out = generator(identity, pose)
    (out["image"].mean() + out["mask"].mean()).backward()
    assert generator.constant.grad is not None and generator.constant.grad.abs().sum() > 0
    for layer in generator.mlp:
        for parameter in layer.parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    for block in generator.up_blocks:
        for name, parameter in block.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert identity.grad.abs().sum() > 0 and pose.grad.abs().sum() > 0


def test_generator_res_blocks_add_adain_parameters():
    torch.manual_seed(0)
    plain, deeper = LPDGenerator(**TINY_G), LPDGenerator(**TINY_G, num_res_blocks=2)
    assert len(deeper.res_blocks) == 2 and all(isinstance(b, AdaINResBlock2d) for b in deeper.res_blocks)
    assert all(not b.upsample and b.in_channels == b.out_channels == 64 for b in deeper.res_blocks)
    assert deeper.num_adain_parameters == plain.num_adain_parameters + 2 * (4 * 64)
    assert deeper.mlp[-1].out_features == deeper.num_adain_parameters
    with torch.no_grad():
        assert deeper.eval()(torch.randn(2, 64), torch.randn(2, 32))["image"].shape == (2, 3, S, S)


# --- Dice loss ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1.0, 1e-6])
def test_dice_identical_masks_score_zero(eps):
    torch.manual_seed(0)
    target = (torch.rand(3, 1, 8, 8) > 0.5).float()
    assert DiceLoss(eps=eps)(target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_disjoint_masks_score_one():
    target = torch.zeros(2, 1, 4, 4)
    target[..., :2, :] = 1
    loss = DiceLoss(eps=1e-6)(1 - target, target)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)


def test_dice_known_answer_by_hand():
    # image 0: m = [[1, .5], [0, .25]], t = [[1, 1], [0, 0]] -> sum(mt) = 1.5, sum m = 1.75, sum t = 2
    #   eps = 1: 1 - (3 + 1) / (3.75 + 1) = 1 - 4 / 4.75
    # image 1: m = [[0, 0], [1, 1]], t = [[0, 0], [0, 1]] -> sum(mt) = 1, sum m = 2, sum t = 1
    #   eps = 1: 1 - (2 + 1) / (3 + 1) = 0.25
    mask = torch.tensor([[[[1.0, 0.5], [0.0, 0.25]]], [[[0.0, 0.0], [1.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])
    expected = ((1 - 4 / 4.75) + 0.25) / 2
    assert DiceLoss()(mask, target).item() == pytest.approx(expected, abs=1e-6)
    # eps = 0: 1 - 3 / 3.75 = 0.2 and 1 - 2 / 3 = 1 / 3
    assert DiceLoss(eps=0.0)(mask, target).item() == pytest.approx((0.2 + 1 / 3) / 2, abs=1e-6)


def test_dice_empty_prediction_and_target_score_zero():
    empty = torch.zeros(2, 1, 5, 5)
    assert DiceLoss(eps=1.0)(empty, empty).item() == pytest.approx(0.0, abs=1e-7)
    # but an empty prediction of a non-empty target is penalised: 1 - 1 / (25 + 1)
    assert DiceLoss(eps=1.0)(empty[:1], torch.ones(1, 1, 5, 5)).item() == pytest.approx(25 / 26, abs=1e-6)


@pytest.mark.parametrize("mask_shape,target_shape", [((2, 1, 4, 4), (2, 1, 4, 5)), ((2, 1, 4, 4), (3, 1, 4, 4)),
                                                      ((2, 2, 4, 4), (2, 2, 4, 4)), ((2, 4, 4), (2, 4, 4))])
def test_dice_rejects_bad_shapes(mask_shape, target_shape):
    with pytest.raises(ValueError):
        DiceLoss()(torch.rand(*mask_shape), torch.rand(*target_shape))


def test_dice_gradient_flows_to_mask():
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    mask = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    DiceLoss()(mask, target).backward()
    # d/dm [1 - (2 sum mt + 1) / (sum m + sum t + 1)] at sum mt = 1, sum m + sum t + 1 = 5:
    # on target pixels -(2 * 5 - 3) / 25 = -7/25, off target pixels 3 / 25
    expected = torch.tensor([[[[-7 / 25, 3 / 25], [3 / 25, -7 / 25]]]])
    torch.testing.assert_close(mask.grad, expected)
