"""Sample grids (source | driving | output) saved to disk and sent to the logger every N training steps.

Every model is read through one public method, ``model.reconstruct_batch(batch) -> (b, 3, h, w)``: its
re-synthesis of ``batch["driving"]`` from whatever else the batch holds (OSFV: the source frame; FSTH/LPD: the
reference frames or the fine-tuned person and the driving landmarks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from einops import rearrange
from PIL import Image

__all__ = ["SampleGrid", "grid_image", "source_frames", "head_of_batch"]


def grid_image(*columns: torch.Tensor) -> np.ndarray:
    """Rows of images side by side: each column is (b, 3, h, w) in [0, 1]; returns (b h, n w, 3) uint8."""
    stacked = torch.stack([c.detach().float().clamp(0, 1).cpu() for c in columns], dim=1)
    return (rearrange(stacked, "b n c h w -> (b h) (n w) c").numpy() * 255).round().astype(np.uint8)


def source_frames(batch: Any) -> torch.Tensor:
    """The appearance column of a batch: ``source``, else the first of the ``references`` (few-shot batches)."""
    if "source" in batch:
        return batch["source"]
    return batch["references"][:, 0]


def head_of_batch(batch: Any, count: int, device: torch.device | str | None = None) -> dict[str, Any]:
    """The first ``count`` items of a batch (tensors detached, optionally moved; lists cut the same way)."""
    head = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value[:count].detach()
            head[name] = value if device is None else value.to(device)
        elif isinstance(value, (list, tuple)):
            head[name] = value[:count]
        else:
            head[name] = value
    return head


class SampleGrid(L.Callback):
    """Every ``every_n_steps`` training batches, writes source | driving | ``model.reconstruct_batch(batch)``.

    Args:
        every_n_steps: batches between grids (0 disables).
        max_images: rows per grid.
        directory: folder for the PNGs; None puts them in ``<trainer.log_dir or default_root_dir>/samples``.
    """

    def __init__(self, every_n_steps: int = 500, max_images: int = 4, directory: str | None = None) -> None:
        self.every_n_steps, self.max_images, self.directory = every_n_steps, max_images, directory

    def folder(self, trainer: L.Trainer) -> Path:
        base = self.directory or Path(trainer.log_dir or trainer.default_root_dir) / "samples"
        return Path(base)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.every_n_steps or batch_idx % self.every_n_steps or not trainer.is_global_zero:
            return
        head = head_of_batch(batch, self.max_images)
        with torch.no_grad():
            output = pl_module.reconstruct_batch(head)
        image = grid_image(source_frames(head), head["driving"], output)
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch{trainer.current_epoch:03d}-batch{batch_idx:06d}.png"
        Image.fromarray(image).save(path)
        log_image = getattr(trainer.logger, "log_image", None)
        if log_image is not None:
            log_image(key="train/samples", images=[image], caption=["source | driving | output"])
