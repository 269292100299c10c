"""Training throughput (samples per second) and peak GPU memory, logged every training batch."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

__all__ = ["Throughput", "batch_length"]


def batch_length(batch: Any) -> int | None:
    """Length of the first tensor in a batch (a tensor, mapping or sequence), or None if there is none."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else None
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, Sequence) and not \
        isinstance(batch, str) else ()
    for value in values:
        found = batch_length(value)
        if found is not None:
            return found
    return None


class Throughput(L.Callback):
    """Logs ``train/samples_per_s`` (averaged over a window of batches) and, on CUDA, ``train/peak_memory_gb``.

    The time of a batch is from ``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward and optimizer
    steps; data loading excluded).

    Args:
        window: batches averaged over.
    """

    def __init__(self, window: int = 20) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)
        self.started: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        cuda = pl_module.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(pl_module.device)
        size = batch_length(batch)
        if self.started is None or size is None:
            return
        self.samples.append((size, time.perf_counter() - self.started))
        self.started = None
        seconds = sum(s for _, s in self.samples)
        if seconds > 0:
            pl_module.log("train/samples_per_s", sum(n for n, _ in self.samples) / seconds, on_step=True,
                          on_epoch=False, batch_size=size)
        if cuda:
            pl_module.log("train/peak_memory_gb", torch.cuda.max_memory_allocated(pl_module.device) / 1e9,
                          on_step=True, on_epoch=False, batch_size=size)
