"""OSFV's training step against its pre-issue-13 formulation: same losses and gradients, less work.

The step now judges the driving frames with D once per batch (feature-matching targets and the first D step's
hinge), keeps D's weights out of the generator step's graph, flushes the subnormal tails of M's keypoint heatmaps
and, on the CPU, stores the conv weights channels-last. The old step is written out here (``old_training_step``,
``old_keypoint_heatmaps``) and both run one batch through a Trainer from the same weights and random state.
"""

import copy
from importlib import resources

import lightning as L
import pytest
import torch

import talkinghead.flows
from talkinghead.cli import TalkingHeadCLI
from talkinghead.lightning.adversarial import detach_outputs

from spectral_norms import converge_spectral_norms  # tests/

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")


def old_training_step(self, batch, batch_idx):
    """AdversarialModule.training_step before issue 13: the hooks, called without a shared judgement, run D on the
    driving frames in the generator step and again in the discriminator step, and each optimizer is toggled only
    around its own backward (so the generator step's graph runs through D's weights too)."""
    generator_optimizer, discriminator_optimizer = self.optimizers()
    outputs = self.run_generator(batch)
    g_terms = self.generator_losses(batch, outputs)
    self._step(generator_optimizer, self.weighted_sum(g_terms))
    d_terms = self.discriminator_losses(batch, detach_outputs(outputs))
    self._step(discriminator_optimizer, self.weighted_sum(d_terms))
    self.log_dict({f"train/g/{k}": v.detach() for k, v in g_terms.items()}
                  | {f"train/d/{k}": v.detach() for k, v in d_terms.items()})


def old_keypoint_heatmaps(keypoints, shape, variance=0.01):
    grid = talkinghead.flows.coordinate_grid_3d(*shape, device=keypoints.device, dtype=keypoints.dtype)
    squared = (grid[None, None] - keypoints[:, :, None, None, None, :]).pow(2).sum(-1)
    return torch.exp(-0.5 * squared / variance)


@pytest.fixture(scope="module")
def tiny_model():
    cli = TalkingHeadCLI(args=["--config", TINY, "--data.init_args.shards=unused", "--trainer.logger=false"],
                         run=False)
    converge_spectral_norms(cli.model.patch_discriminator)
    return cli.model


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return {"source": torch.rand(2, 3, 64, 64, generator=g), "driving": torch.rand(2, 3, 64, 64, generator=g),
            "driving_pose": torch.randn(2, 6, generator=g)}


def one_step(model, batch, callbacks=()):
    """One G step and one D step through a Trainer; the logged terms and every parameter's gradient after it (the
    generator side's from the G step, D's from the D step)."""
    torch.manual_seed(1)  # the equivariance loss's random warp
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=list(callbacks))
    trainer.fit(model, torch.utils.data.DataLoader([batch], batch_size=None))
    skip = ("train/d/total", "train/g/total", "train/skipped_nonfinite")
    terms = {k: v.item() for k, v in trainer.callback_metrics.items() if k not in skip}
    return terms, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def old_step_of(model, batch):
    reference = copy.deepcopy(model)
    reference.channels_last = False
    reference.training_step = old_training_step.__get__(reference)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(talkinghead.flows, "keypoint_heatmaps", old_keypoint_heatmaps)
        return one_step(reference, batch)


def network_of(name):
    return ".".join(name.split(".")[:2])  # networks.motion, patch_discriminator.discriminators


def test_step_gives_the_old_losses_and_gradients(tiny_model, batch):
    model = copy.deepcopy(tiny_model)
    model.channels_last = False  # the layout's own (float-order) differences are the next test's
    terms, grads = one_step(model, batch)
    old_terms, old_grads = old_step_of(tiny_model, batch)
    assert terms.keys() == old_terms.keys() and len(terms) >= 8
    for name, value in old_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert grads.keys() == old_grads.keys()
    assert any(name.startswith("patch_discriminator") for name in grads)
    # Per network, against its largest gradient: conv biases in front of BatchNorm have gradient 0 up to rounding.
    scale = {}
    for name, grad in old_grads.items():
        scale[network_of(name)] = max(scale.get(network_of(name), 0.0), grad.abs().max().item())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, old_grads[name], rtol=1e-4, atol=1e-5 * scale[network_of(name)], msg=name)


def test_channels_last_changes_only_the_summation_order(tiny_model, batch):
    model = copy.deepcopy(tiny_model)
    model.channels_last = None  # the default: channels-last on the CPU
    terms, grads = one_step(model, batch)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    old_terms, old_grads = old_step_of(tiny_model, batch)
    for name, value in old_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # At initialisation the sampled flows sit on voxel centres, where grid_sample's gradient with respect to the
    # flow jumps: there, a 1e-6 change of the source image alone moves the networks' gradients by ~1%. The layout's
    # rounding moves them less; a wrong formulation moves them by O(1).
    for network in {network_of(name) for name in old_grads}:
        names = [name for name in old_grads if network_of(name) == network]
        difference = torch.stack([(grads[n] - old_grads[n]).norm() for n in names]).norm()
        norm = torch.stack([old_grads[n].norm() for n in names]).norm()
        assert difference <= 2e-2 * norm, network


def test_discriminator_judges_the_driving_frames_once_per_batch(tiny_model, batch):
    model = copy.deepcopy(tiny_model)
    judged = []
    model.patch_discriminator.register_forward_pre_hook(
        lambda module, args: judged.append("real" if torch.equal(args[0], batch["driving"]) else "fake"))
    grads_of_d = []
    for parameter in model.patch_discriminator.parameters():
        parameter.register_hook(lambda grad: grads_of_d.append(grad))
    one_step(model, batch)
    assert judged == ["real", "fake", "fake"]  # D(driving), then D(G(x)) in the G step and in the D step
    # Only the D step computes D's weight gradients: the generator step's graph holds D's weights frozen.
    assert len(grads_of_d) == len(list(model.patch_discriminator.parameters()))
