"""channels_last (AdversarialModule): on the CPU the few-shot models train channels-last by default, with the losses
of PyTorch's default layout up to the summation order (OSFV's own test is in test_osfv_training_step.py)."""

from importlib import resources

import pytest
import torch

from talkinghead.cli import TalkingHeadCLI

from spectral_norms import converge_spectral_norms  # tests/

CONFIGS = resources.files("talkinghead.lightning_configs")


@pytest.mark.parametrize("model", ["fsth", "lpd"])
def test_channels_last_changes_only_the_summation_order(model, synthetic_shards, tmp_path):
    def one_batch(channels_last: str) -> tuple[dict[str, float], torch.nn.Module]:
        cli = TalkingHeadCLI(args=["--config", str(CONFIGS / model / "tiny_meta.yaml"),
                                   f"--data.init_args.shards={synthetic_shards}", "--data.init_args.num_workers=0",
                                   "--trainer.enable_progress_bar=false", "--trainer.logger=false",
                                   "--trainer.max_steps=2",
                                   f"--trainer.default_root_dir={tmp_path}",
                                   f"--model.init_args.channels_last={channels_last}"], run=False)
        converge_spectral_norms(cli.model.projection_discriminator)
        torch.manual_seed(1)
        cli.trainer.fit(cli.model, cli.datamodule)
        skip = ("train/skipped_nonfinite",)
        return {k: v.item() for k, v in cli.trainer.callback_metrics.items() if k not in skip}, cli.model

    terms, module = one_batch("null")  # the default: channels-last on the CPU
    old_terms, old_module = one_batch("false")
    convs = [p for p in module.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in old_module.parameters() if p.dim() == 4)
    assert terms.keys() == old_terms.keys() and "train/d/total" in terms
    for name, value in old_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("layout, dims", [(torch.channels_last, 4), (torch.channels_last_3d, 5)])
def test_losses_over_channels_last_maps_hand_back_channels_last_gradients(layout, dims):
    from talkinghead.losses import FeatureMatchingLoss, in_memory_order

    shape = (2, 8, 5, 6, 7)[:dims]
    leaf = torch.randn(shape).contiguous(memory_format=layout).requires_grad_(True)
    y = torch.randn(shape)  # the target in the default layout, as a batch's frames are

    def gradient_reaching_the_map(loss_of) -> torch.Tensor:
        """The gradient an activation (not a leaf, whose .grad autograd re-lays to match it) receives."""
        x, seen = leaf * 1, []
        x.register_hook(seen.append)
        loss_of(x).backward()
        return seen[0]

    def loss(x):
        a, b = in_memory_order(x, y)
        assert a.is_contiguous() and torch.equal(a, x.permute(0, *range(2, dims), 1))
        return (a - b).abs().mean()

    assert loss(leaf).item() == pytest.approx((leaf - y).abs().mean().item(), rel=1e-6)
    grad = gradient_reaching_the_map(loss)
    assert grad.is_contiguous(memory_format=layout) and not grad.is_contiguous()
    # What a plain mean over two channels-last maps (as VGG's) hands back: the other layout.
    assert gradient_reaching_the_map(lambda x: (x - y.contiguous(memory_format=layout)).abs().mean()).is_contiguous()
    matching = FeatureMatchingLoss()
    grad = gradient_reaching_the_map(lambda x: matching([{"features": [y]}], [{"features": [x]}]))
    assert grad.is_contiguous(memory_format=layout) and not grad.is_contiguous()

    plain = torch.randn(shape)
    assert in_memory_order(plain, y)[0] is plain  # the default layout stays as it is
