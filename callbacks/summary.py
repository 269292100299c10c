"""The run's latest metrics as a JSON file: how ``talkinghead sweep`` reads a run's sweep metric back without a
W&B server (an offline wandb run keeps its history in a binary log that only ``wandb sync`` reads)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import lightning as L
import torch

__all__ = ["MetricsSummary"]


class MetricsSummary(L.Callback):
    """Writes ``{"global_step", "epoch", "metrics": {name: value}}`` with the latest value of every logged metric
    (``trainer.callback_metrics``: what ``self.log`` sent, e.g. ``val/psnr``) after each validation and at the end
    of fit. Rank 0 writes; the file is replaced atomically, so a reader never sees half of it.

    Args:
        path: the JSON file to write (its folder is created).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {}
        for name, value in trainer.callback_metrics.items():
            value = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
            metrics[name] = value if math.isfinite(value) else None  # JSON has no NaN
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({"global_step": trainer.global_step, "epoch": trainer.current_epoch,
                                       "metrics": metrics}, indent=1, sort_keys=True))
        os.replace(partial, self.path)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)
