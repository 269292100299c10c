"""FSTH networks and the shared AdaIN / self-attention / residual-down blocks and projection discriminator.

Shapes and ranges at tiny widths (32 px), known-answer tests for AdaIN, self-attention and the projection score,
spectral-norm placement, the hinge / feature-matching losses on the projection D's output, and one paper-scale
forward pass at 256 px.
"""

import pytest
import torch
from torch import nn

from talkinghead.losses.adversarial import DiscriminatorHingeLoss, FeatureMatchingLoss, GeneratorHingeLoss
from talkinghead.networks import Embedder, FSTHGenerator, ProjectionDiscriminator
from talkinghead.networks.blocks import (
    AdaINResBlock2d,
    AdaptiveInstanceNorm2d,
    ResBlockDown2d,
    SelfAttention2d,
    split_adain_parameters,
)

S = 32  # tiny image size
EMBED = 16
TINY_TRUNK = dict(block_expansion=4, max_features=16, num_down_blocks=3, embedding_dim=EMBED,
                  self_attention_resolution=8, image_size=S)  # 32 -> 16 -> 8 (attention) -> 4
TINY_G = dict(image_size=S, embedding_dim=EMBED, down_channels=(4, 8, 16), num_res_blocks=2, up_channels=(8, 4, 4),
              self_attention_down_resolution=8, self_attention_up_resolution=16)


def _is_spectral_normed(layer: nn.Module) -> bool:
    return hasattr(layer, "parametrizations") and "weight" in layer.parametrizations


def _weighted_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# --- blocks ---------------------------------------------------------------------------------------------------


def test_adaptive_instance_norm_known_answer():
    torch.manual_seed(0)
    layer = AdaptiveInstanceNorm2d(3)
    assert layer.num_parameters == 6
    x = torch.randn(2, 3, 8, 8) * 5 + 2
    gamma = torch.tensor([[0.5, -0.5, 1.0], [0.0, 2.0, -0.9]])
    beta = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.5, -1.0]])
    out = layer(x, torch.cat([gamma, beta], dim=1))
    assert out.shape == x.shape
    torch.testing.assert_close(out.mean(dim=(2, 3)), beta, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), 1 + gamma, atol=1e-3, rtol=0)
    # zero parameters: plain parameter-free instance norm; one row broadcasts over the batch
    torch.testing.assert_close(layer(x, torch.zeros(1, 6)), nn.InstanceNorm2d(3)(x))
    with pytest.raises(ValueError):
        layer(x, torch.zeros(2, 5))


def test_split_adain_parameters():
    params = torch.arange(10.0).repeat(2, 1)
    first, second = split_adain_parameters(params, [4, 6])
    assert first.shape == (2, 4) and second.shape == (2, 6)
    torch.testing.assert_close(second[0], torch.arange(4.0, 10.0))
    with pytest.raises(ValueError, match="7.*10|10.*7"):
        split_adain_parameters(params, [3, 4])


def test_self_attention_starts_as_identity_and_keeps_shape():
    torch.manual_seed(0)
    attention = SelfAttention2d(16)
    x = torch.randn(2, 16, 8, 8)
    assert attention.gamma.item() == 0
    torch.testing.assert_close(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    out = attention(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert all(_is_spectral_normed(conv) for conv in (attention.query, attention.key, attention.value))


@pytest.mark.parametrize("norm", ["none", "instance"])
@pytest.mark.parametrize("preactivation", [True, False])
def test_res_block_down_shapes(norm, preactivation):
    x = torch.randn(2, 3, 16, 16)
    assert ResBlockDown2d(3, 8, norm=norm, preactivation=preactivation)(x).shape == (2, 8, 8, 8)
    assert ResBlockDown2d(3, 8, norm=norm, downsample=False)(x).shape == (2, 8, 16, 16)
    same = ResBlockDown2d(3, 3, downsample=False)
    assert isinstance(same.skip, nn.Identity) and same(x).shape == x.shape


def test_adain_res_block_shapes_and_parameter_count():
    block = AdaINResBlock2d(8, 4, upsample=True)
    assert block.num_adain_parameters == 2 * 8 + 2 * 4
    x = torch.randn(2, 8, 8, 8)
    assert block(x, torch.randn(2, 24)).shape == (2, 4, 16, 16)
    assert block(x, torch.randn(1, 24)).shape == (2, 4, 16, 16)
    assert AdaINResBlock2d(8, 8)(x, torch.randn(2, 32)).shape == x.shape
    with pytest.raises(ValueError):
        block(x, torch.randn(2, 23))


def test_adain_res_block_with_zero_params_is_the_instance_norm_block():
    """Known answer: AdaIN with psi = 0 is parameter-free instance norm (scale 1 + 0, shift 0)."""
    torch.manual_seed(0)
    block = AdaINResBlock2d(4, 6, upsample=True, spectral_norm=False)
    x = torch.randn(2, 4, 8, 8)
    norm = nn.InstanceNorm2d
    up = lambda t: nn.functional.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    out = block.conv1(up(torch.relu(norm(4)(x))))
    expected = block.conv2(torch.relu(norm(6)(out))) + block.skip(up(x))
    torch.testing.assert_close(block(x, torch.zeros(2, block.num_adain_parameters)), expected)


# --- embedder -------------------------------------------------------------------------------------------------


def test_embedder_shapes_and_mean_over_frames():
    torch.manual_seed(0)
    embedder = Embedder(**TINY_TRUNK).eval()  # eval: no spectral-norm power iteration between the calls
    frames, sketches = torch.rand(2, 3, 3, S, S), torch.rand(2, 3, 3, S, S)
    per_frame = embedder.embed_frames(frames, sketches)
    assert per_frame.shape == (2, 3, EMBED)
    assert (per_frame >= 0).all()  # ReLU before the sum-pool
    video = embedder(frames, sketches)
    assert video.shape == (2, EMBED)
    torch.testing.assert_close(video, per_frame.mean(dim=1))
    # per-frame embeddings do not depend on the other frames of the batch
    torch.testing.assert_close(embedder.embed_frames(frames[:1, 1:2], sketches[:1, 1:2])[0, 0], per_frame[0, 1])
    with pytest.raises(ValueError):
        embedder(torch.rand(2, 3, 3, S + 8, S + 8), torch.rand(2, 3, 3, S + 8, S + 8))


def test_trunk_sum_pools():
    """The trunk sums (not averages) the final ReLU map over space."""
    embedder = Embedder(**TINY_TRUNK)
    captured = {}
    hook = embedder.trunk.stages[-1].register_forward_hook(lambda m, i, o: captured.setdefault("map", o))
    out = embedder.embed_frames(torch.rand(1, 1, 3, S, S), torch.rand(1, 1, 3, S, S))
    hook.remove()
    final = embedder.trunk.to_embedding(captured["map"])
    assert final.shape[-2:] == (4, 4)
    torch.testing.assert_close(out[0, 0], torch.relu(final).sum(dim=(2, 3))[0])


def test_attention_resolution_is_validated():
    with pytest.raises(ValueError, match="self_attention_resolution"):
        Embedder(**{**TINY_TRUNK, "self_attention_resolution": 32})
    assert not any(isinstance(m, SelfAttention2d)
                   for m in Embedder(**{**TINY_TRUNK, "self_attention_resolution": None}).modules())
    with pytest.raises(ValueError, match="self_attention_up_resolution"):
        FSTHGenerator(**{**TINY_G, "self_attention_up_resolution": 4})
    with pytest.raises(ValueError, match="up blocks"):
        FSTHGenerator(**{**TINY_G, "up_channels": (8, 4)})


# --- generator ------------------------------------------------------------------------------------------------


def test_generator_shapes_range_and_broadcast():
    torch.manual_seed(0)
    generator = FSTHGenerator(**TINY_G).eval()  # eval: no spectral-norm power iteration between the calls
    sketch = torch.rand(2, 3, S, S)
    psi = generator.adain_parameters(torch.randn(2, EMBED))
    assert psi.shape == (2, generator.num_adain_parameters)
    image = generator(sketch, psi)
    assert image.shape == (2, 3, S, S)
    assert image.min() >= 0 and image.max() <= 1
    single = generator(sketch, psi[:1])
    torch.testing.assert_close(single[0], image[0])
    with pytest.raises(ValueError):
        generator(sketch, psi[:, :-1])
    attention = [m for m in generator.modules() if isinstance(m, SelfAttention2d)]
    assert [m.channels for m in attention] == [8, 4]  # encoder output at 8 px (8 ch), decoder at 16 px (4 ch)


def test_generator_adain_parameter_count_and_projection():
    generator = FSTHGenerator(**TINY_G)
    adains = [m for m in generator.modules() if isinstance(m, AdaptiveInstanceNorm2d)]
    assert len(adains) == 2 * (2 + 3)
    assert generator.num_adain_parameters == generator.projection.out_features == sum(m.num_parameters
                                                                                         for m in adains)
    assert generator.projection.bias is None and generator.projection.in_features == EMBED
    embedding = torch.randn(3, EMBED)
    torch.testing.assert_close(generator.adain_parameters(embedding), embedding @ generator.projection.weight.T)


def test_spectral_norm_everywhere_but_projection():
    torch.manual_seed(0)
    generator = FSTHGenerator(**TINY_G)
    assert not _is_spectral_normed(generator.projection)
    for network in (Embedder(**TINY_TRUNK), ProjectionDiscriminator(num_videos=2, **TINY_TRUNK), generator):
        layers = [m for m in _weighted_layers(network) if m is not generator.projection]
        assert layers and all(_is_spectral_normed(m) for m in layers)
    assert not any(_is_spectral_normed(m) for m in _weighted_layers(FSTHGenerator(**TINY_G, spectral_norm=False)))


# --- projection discriminator ---------------------------------------------------------------------------------


def test_projection_discriminator_known_answer():
    torch.manual_seed(0)
    discriminator = ProjectionDiscriminator(num_videos=3, **TINY_TRUNK).eval()
    with torch.no_grad():
        discriminator.bias.fill_(0.3)
    image = torch.rand(2, 6, S, S)
    index = torch.tensor([2, 0])
    out = discriminator(image, video_index=index)
    assert out["logits"].shape == (2, 1) and out["embedding"].shape == (2, EMBED)
    assert len(out["features"]) == 3 + 1  # three down blocks, one residual block
    assert out["features"][-1].shape == (2, 16, 4, 4)
    column = discriminator.video_embeddings.weight[index] + discriminator.shared_column
    torch.testing.assert_close(out["logits"], (out["embedding"] * column).sum(-1, keepdim=True) + 0.3)
    ready = torch.randn(1, EMBED)
    given = discriminator(image, column=ready)
    torch.testing.assert_close(given["logits"], (given["embedding"] * ready).sum(-1, keepdim=True) + 0.3)


def test_projection_discriminator_errors_and_resizing():
    discriminator = ProjectionDiscriminator(in_channels=3, **TINY_TRUNK)  # LPD: RGB only
    assert discriminator.num_videos == 0
    image = torch.rand(2, 3, S, S)
    with pytest.raises(ValueError, match="exactly one"):
        discriminator(image)
    with pytest.raises(ValueError, match="exactly one"):
        discriminator(image, video_index=torch.tensor([0, 0]), column=torch.zeros(1, EMBED))
    with pytest.raises(ValueError, match="video_index 0 out of range .* 0 video columns"):
        discriminator(image, video_index=torch.tensor([0, 0]))
    discriminator.set_num_videos(5)
    assert discriminator.num_videos == 5 and discriminator.video_embeddings.weight.shape == (5, EMBED)
    assert discriminator(image, video_index=torch.tensor([4, 0]))["logits"].shape == (2, 1)
    with pytest.raises(ValueError, match="video_index 5 out of range .* 5 video columns"):
        discriminator(image, video_index=torch.tensor([1, 5]))
    # a checkpoint with another number of videos loads into a discriminator built with num_videos=0
    fresh = ProjectionDiscriminator(in_channels=3, **TINY_TRUNK)
    fresh.load_state_dict(discriminator.state_dict())
    assert fresh.num_videos == 5
    torch.testing.assert_close(fresh.video_embeddings.weight, discriminator.video_embeddings.weight)


def test_video_columns_are_set_once_from_the_first_embedding():
    discriminator = ProjectionDiscriminator(num_videos=4, **TINY_TRUNK)
    random_rows = discriminator.video_embeddings.weight.detach().clone()
    assert not discriminator.video_columns_set.any()
    first, second = torch.randn(3, EMBED), torch.randn(3, EMBED)
    assert discriminator.set_video_columns(torch.tensor([2, 0, 2]), first) == 2  # index 2 twice: the first wins
    weight = discriminator.video_embeddings.weight.detach()
    torch.testing.assert_close(weight[2], first[0])
    torch.testing.assert_close(weight[0], first[1])
    torch.testing.assert_close(weight[[1, 3]], random_rows[[1, 3]])
    assert discriminator.video_columns_set.tolist() == [True, False, True, False]
    assert discriminator.set_video_columns(torch.tensor([0, 3, 2]), second) == 1  # only 3 was unset
    torch.testing.assert_close(discriminator.video_embeddings.weight.detach()[0], first[1])
    torch.testing.assert_close(discriminator.video_embeddings.weight.detach()[3], second[1])
    # the flags travel with the state dict; a checkpoint from before they existed loads as all set
    fresh = ProjectionDiscriminator(**TINY_TRUNK)
    fresh.load_state_dict(discriminator.state_dict())
    assert fresh.video_columns_set.tolist() == [True, False, True, True]
    old = {k: v for k, v in discriminator.state_dict().items() if k != "video_columns_set"}
    fresh = ProjectionDiscriminator(**TINY_TRUNK)
    fresh.load_state_dict(old)
    assert fresh.video_columns_set.all() and fresh.num_videos == 4
    fresh.set_num_videos(6)
    assert fresh.video_columns_set.shape == (6,) and not fresh.video_columns_set.any()


def test_losses_accept_projection_discriminator_output():
    torch.manual_seed(0)
    discriminator = ProjectionDiscriminator(num_videos=2, **TINY_TRUNK)
    index = torch.tensor([0, 1])
    real = discriminator(torch.rand(2, 6, S, S), video_index=index)
    fake = discriminator(torch.rand(2, 6, S, S, requires_grad=True), video_index=index)
    g_loss, d_loss = GeneratorHingeLoss()(fake), DiscriminatorHingeLoss()(real, fake)
    fm_loss = FeatureMatchingLoss()(real, fake)
    torch.testing.assert_close(g_loss, -fake["logits"].mean())
    torch.testing.assert_close(d_loss, torch.relu(1 - real["logits"]).mean() + torch.relu(1 + fake["logits"]).mean())
    assert fm_loss.ndim == 0 and fm_loss > 0
    (g_loss + fm_loss + d_loss).backward()
    assert discriminator.shared_column.grad is not None and discriminator.video_embeddings.weight.grad is not None


# --- paper scale ----------------------------------------------------------------------------------------------


def test_paper_scale_forward_at_256():
    torch.manual_seed(0)
    embedder, generator, discriminator = Embedder(), FSTHGenerator(), ProjectionDiscriminator(num_videos=1)
    assert generator.num_adain_parameters == 13120
    frames, sketches = torch.rand(1, 1, 3, 256, 256), torch.rand(1, 1, 3, 256, 256)
    with torch.no_grad():
        embedding = embedder(frames, sketches)
        image = generator(sketches[:, 0], generator.adain_parameters(embedding))
        out = discriminator(torch.cat([image, sketches[:, 0]], dim=1), video_index=torch.tensor([0]))
    assert embedding.shape == (1, 512) and image.shape == (1, 3, 256, 256) and out["logits"].shape == (1, 1)
    assert [f.shape[-1] for f in out["features"]] == [128, 64, 32, 16, 8, 4, 4]
