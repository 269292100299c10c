"""Exact resume: a run resumed from a checkpoint, mid-epoch or at an epoch boundary, ends with the same weights as
an uninterrupted one (global RNG states and the data stream's position travel in the checkpoint)."""

from __future__ import annotations

import csv
from importlib import resources

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from talkinghead.cli import TalkingHeadCLI

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")


def build(shards, workers):
    cli = TalkingHeadCLI(args=["--config", TINY, f"--data.init_args.shards={shards}", "--data.init_args.image_size=32",
                               "--data.init_args.batch_size=2", f"--data.init_args.num_workers={workers}",
                               "--data.init_args.samples_per_epoch=8", "--trainer.logger=false"], run=False)
    return cli.model, cli.datamodule


def fit(model, data, max_steps, root, ckpt_path=None, every=None):
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    logger = CSVLogger(root, name="logs", version=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=logger, log_every_n_steps=1,
                        enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=bool(every), callbacks=callbacks,
                        default_root_dir=root)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return trainer


def logged(root):
    """(step, train/g_loss) rows of a run's CSV log."""
    with open(root / "logs" / "version_0" / "metrics.csv") as handle:
        return [(int(row["step"]), row["train/g_loss"]) for row in csv.DictReader(handle) if row.get("train/g_loss")]


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# 8 samples at batch 2: 4 batches an epoch; one G and one D step per batch, so global_step = 2 x batches.
@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(("stop_batch", "where"), [(3, "mid-epoch"), (4, "epoch boundary")])
def test_resumed_run_matches_the_uninterrupted_one(tmp_path, synthetic_shards, workers, stop_batch, where, recwarn):
    total = 6
    model, data = build(synthetic_shards, workers)
    fit(model, data, 2 * total, tmp_path / "a")
    uninterrupted = weights(model)

    model, data = build(synthetic_shards, workers)
    fit(model, data, 2 * stop_batch, tmp_path / "b", every=2 * stop_batch)
    checkpoint = next((tmp_path / "b").glob("*.ckpt"))
    model, data = build(synthetic_shards, workers)
    trainer = fit(model, data, 2 * total, tmp_path / "c", ckpt_path=checkpoint)
    assert trainer.global_step == 2 * total
    resumed = weights(model)
    different = [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])]
    assert not different, f"{where}, {workers} workers: {len(different)} tensors differ, e.g. {different[:3]}"
    # The resumed run logs the same values at the same steps as the uninterrupted one did for those batches.
    assert logged(tmp_path / "c") == logged(tmp_path / "a")[stop_batch:]
    # Lightning cannot see that the DataModule resumes its stream: its "not resumable" warning is not shown.
    assert not [w for w in recwarn if "dataloader is not resumable" in str(w.message)]
