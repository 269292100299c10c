"""VGG feature pyramids (random init, local files, hub-cache errors) and the multi-scale patch discriminator."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import talkinghead.networks.vgg as vgg
from talkinghead.networks.discriminators import MultiScalePatchDiscriminator, PatchDiscriminator
from talkinghead.networks.vgg import FaceVGGFeatures, VGG19Features, load_face_vgg, load_vgg19


@pytest.fixture(scope="module")
def random_vgg19():
    torch.manual_seed(0)
    return VGG19Features()


@pytest.mark.parametrize("size", [32, 48])
def test_vgg19_features_shapes_and_frozen(random_vgg19, size):
    features = random_vgg19(torch.rand(2, 3, size, size))
    assert [f.shape[1] for f in features] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in features] == [-(-size // 2**i) for i in range(5)]
    assert all(not p.requires_grad for p in random_vgg19.parameters())
    random_vgg19.train()
    assert not random_vgg19.training


def test_vgg19_passes_gradients_to_the_input(random_vgg19):
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    sum(f.mean() for f in random_vgg19(image)).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_vgg19_keys_match_torchvision(random_vgg19):
    from torchvision.models.vgg import cfgs, make_layers

    reference = make_layers(cfgs["E"])
    own = random_vgg19.state_dict()
    for key, value in own.items():
        assert value.shape == reference.state_dict()[key.removeprefix("features.")].shape


def test_load_vgg19_none_warns_once(monkeypatch):
    monkeypatch.setattr(vgg, "_warned_random_vgg19", False)
    with pytest.warns(UserWarning, match="RANDOM-INIT VGG19") as record:
        load_vgg19(None)
    assert "IMAGENET1K_V1" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_vgg19(None)  # a second call stays silent


def test_load_vgg19_missing_path_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_vgg19(str(missing))


def test_load_vgg19_enum_not_in_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vgg19-dcbb9e9d.pth"):
        load_vgg19("IMAGENET1K_V1")


def test_load_vgg19_local_file_round_trip(tmp_path, random_vgg19):
    # A torchvision-style full state dict: features.* plus classifier keys that the trunk ignores.
    state = {key: torch.randn_like(value) * 0.05 for key, value in random_vgg19.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loaded = load_vgg19(str(path))
    assert all(not p.requires_grad for p in loaded.parameters())
    image = torch.rand(1, 3, 32, 32)
    reference = VGG19Features()
    reference.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
    for a, b in zip(loaded(image), reference(image)):
        torch.testing.assert_close(a, b)


def test_load_vgg19_rejects_wrong_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="VGG conv weights"):
        load_vgg19(str(path))


def test_face_vgg_loads_vgg_face_dag_names(tmp_path):
    assert load_face_vgg(None) is None
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_face_vgg(tmp_path / "missing.pth")
    torch.manual_seed(1)
    source = FaceVGGFeatures()
    convs = [m for m in source.features if isinstance(m, nn.Conv2d)]
    names = [f"conv{s}_{n}" for s, count in enumerate((2, 2, 3, 3, 1), start=1) for n in range(1, count + 1)]
    state = {}
    for name, conv in zip(names, convs):
        state[f"{name}.weight"], state[f"{name}.bias"] = conv.weight, conv.bias
    state["fc8.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "vgg_face_dag.pth")
    loaded = load_face_vgg(tmp_path / "vgg_face_dag.pth")
    image = torch.rand(1, 3, 32, 32)
    for a, b in zip(loaded(image), source(image)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("scales,size", [(1, 32), (2, 64), (2, 32)])
def test_discriminator_output_structure(scales, size):
    torch.manual_seed(0)
    d = MultiScalePatchDiscriminator(scales=scales, block_expansion=8, num_blocks=4, max_features=32)
    outputs = d(torch.rand(2, 3, size, size))
    assert len(outputs) == scales
    for index, output in enumerate(outputs):
        assert [f.shape[1] for f in output["features"]] == [8, 16, 32, 32]
        side = size // 2**index
        for _ in range(3):
            side = side // 2 + 1  # 4x4, stride 2, padding 2
        side = side + 1  # stride-1 block
        assert output["features"][-1].shape == (2, 32, side, side)
        assert output["logits"].shape == (2, 1, side + 1, side + 1)


def test_discriminator_paper_scale_patch_map():
    d = PatchDiscriminator()
    with torch.no_grad():
        logits = d(torch.rand(1, 3, 256, 256))["logits"]
    assert logits.shape == (1, 1, 35, 35)  # pix2pixHD's patch map at 256 px


def test_spectral_norm_on_every_conv():
    d = MultiScalePatchDiscriminator(scales=2, block_expansion=8, max_features=16)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * 5
    assert all(parametrize.is_parametrized(conv, "weight") for conv in convs)
    plain = MultiScalePatchDiscriminator(block_expansion=8, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules() if isinstance(m, nn.Conv2d))


def test_discriminator_first_block_has_no_norm_and_conditioned_input():
    d = MultiScalePatchDiscriminator(block_expansion=8, in_channels=6)
    blocks = d.discriminators[0].blocks
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in blocks[0].modules())
    assert all(any(isinstance(m, nn.InstanceNorm2d) for m in block.modules()) for block in blocks[1:])
    assert d(torch.rand(1, 6, 32, 32))[0]["logits"].shape[1] == 1
    with pytest.raises(ValueError):
        d(torch.rand(1, 3, 32, 32))
