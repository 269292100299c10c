"""A tiny trainable LightningModule for exercising the data path and the CLI (not a talking-head model).

It learns a per-channel affine map from source to driving images and records which shard samples each rank saw,
so tests can check how DataModules split data under DDP.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F


class ProbeModule(L.LightningModule):
    def __init__(self, record_dir: str | None = None, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.scale = torch.nn.Parameter(torch.ones(1, 3, 1, 1))
        self.shift = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.seen: list[str] = []

    def training_step(self, batch, batch_idx):
        source = batch["source"] if "source" in batch else batch["references"][:, 0]
        loss = F.l1_loss(source * self.scale + self.shift, batch["driving"])
        self.seen += batch["sample"] if "sample" in batch else []
        self.log("train/l1", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        source = batch["source"] if "source" in batch else batch["references"][:, 0]
        self.log("val/l1", F.l1_loss(source * self.scale + self.shift, batch["driving"]), sync_dist=True)

    def on_train_end(self) -> None:
        if self.hparams.record_dir:
            path = Path(self.hparams.record_dir) / f"rank-{self.global_rank}-pid-{os.getpid()}.txt"
            path.write_text("\n".join(self.seen))
            # how Lightning placed this process: the cluster environment it detected and the rank arithmetic
            strategy = self.trainer.strategy
            placement = {"environment": type(getattr(strategy, "cluster_environment", None)).__name__,
                         "world_size": self.trainer.world_size, "global_rank": self.global_rank,
                         "node_rank": self.trainer.node_rank, "local_rank": self.trainer.local_rank,
                         "epochs": self.trainer.current_epoch}
            (path.parent / f"placement-rank-{self.global_rank}.json").write_text(json.dumps(placement))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class VideoColumnsRecorder(L.Callback):
    """Saves each rank's projection-discriminator video columns (W and which rows are set) at the end of fit, so a
    test can check that every rank holds the same W (FSTH / LPD meta-learning under DDP)."""

    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        discriminator = module.projection_discriminator
        torch.save({"W": discriminator.video_embeddings.weight.detach().cpu(),
                    "set": discriminator.video_columns_set.cpu()},
                   Path(self.record_dir) / f"columns-rank-{trainer.global_rank}.pt")
