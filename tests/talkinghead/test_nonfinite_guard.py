"""The non-finite guard of the adversarial loop: bad steps are skipped, counted and logged, a run that keeps
failing stops with a non-zero exit naming the terms, and no checkpoint with non-finite weights is written."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import lightning as L
import pytest
import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.lightning.adversarial import NonFiniteTrainingError

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")


def tiny_model(*extra):
    return TalkingHeadCLI(args=["--config", TINY, "--data.init_args.shards=unused", "--trainer.logger=false",
                                *extra], run=False).model


def batches(n):
    g = torch.Generator().manual_seed(0)
    return [{"source": torch.rand(2, 3, 64, 64, generator=g), "driving": torch.rand(2, 3, 64, 64, generator=g),
             "driving_pose": torch.randn(2, 6, generator=g)} for _ in range(n)]


def fit(model, data, steps):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=None))
    return trainer


def poison(model, bad_batches):
    """Makes the pixel term NaN on the given batch indices (counted by calls to generator_losses)."""
    original, calls = model.generator_losses, []

    def losses(batch, outputs, real=None):
        terms = original(batch, outputs, real)
        if len(calls) in bad_batches:
            terms["l1"] = terms["l1"] * float("nan")
        calls.append(1)
        return terms

    model.generator_losses = losses


def test_a_nonfinite_step_is_skipped_and_the_weights_and_statistics_stay(tmp_path):
    model = tiny_model()
    poison(model, bad_batches={0})
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("generator_ema")}
    trainer = fit(model, batches(1), steps=10)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # no optimizer step, BatchNorm statistics restored
    assert model.skipped_nonfinite == 1 and trainer.global_step == 2  # counted, G's and D's, without gradients
    assert trainer.callback_metrics["train/skipped_nonfinite"] == 1


def test_training_goes_on_after_an_isolated_bad_step():
    model = tiny_model()
    poison(model, bad_batches={1})
    trainer = fit(model, batches(3), steps=100)
    assert model.skipped_nonfinite == 1
    assert trainer.global_step == 6  # one G and one D step a batch, the skipped batch's without gradients
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_consecutive_bad_steps_stop_the_run_naming_the_terms():
    model = tiny_model("--model.init_args.nonfinite_patience=3")
    poison(model, bad_batches=set(range(100)))
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive.*l1"):
        fit(model, batches(5), steps=100)  # stops at the third of five batches
    assert model.skipped_nonfinite == 3


def test_a_checkpoint_with_nonfinite_weights_is_refused(tmp_path):
    model = tiny_model()
    trainer = fit(model, batches(1), steps=2)
    with torch.no_grad():
        next(model.networks["generator"].parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteTrainingError, match="non-finite weights"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_exploding_learning_rate_exits_nonzero_with_one_line(tmp_path, synthetic_shards):
    """The reproduction of issue 14: lr 1e6 made NaN from step 2, the run exited 0 and last.ckpt was non-finite."""
    root = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "fit", "--config", TINY, f"--data.init_args.shards={synthetic_shards}",
         "--data.init_args.image_size=32", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
         "--trainer.max_steps=40", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}",
         "--model.init_args.generator_optimizer.init_args.lr=1e6",
         "--model.init_args.discriminator_optimizer.init_args.lr=1e6", "--model.init_args.nonfinite_patience=3"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("talkinghead fit: stopped after 3 consecutive"), last
    for checkpoint in root.glob("**/*.ckpt"):
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), checkpoint
