"""Validation images and videos (source | driving | output) written to disk and sent to a wandb logger."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from talkinghead.callbacks.samples import grid_image, head_of_batch, source_frames
from talkinghead.datamodules.shard_format import encode_frames_mp4
from talkinghead.networks.protocols import Animates

__all__ = ["ValidationMedia", "PredictionVideo", "write_mp4"]


def write_mp4(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float = 10.0) -> Path:
    """Encodes (t, h, w, 3) uint8 RGB frames as an H.264 yuv420p mp4 (odd sides are padded by 1 px).

    Returns:
        the path written.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"expected (t, h, w, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    _, h, w, _ = frames.shape
    # yuv420p halves the chroma resolution: both sides must be even.
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.write_bytes(encode_frames_mp4(frames, fps=fps))
    return path


class ValidationMedia(L.Callback):
    """Every ``every_n_epochs`` validation epochs, a PNG grid and an mp4 of fixed validation items.

    The pairs are the first ``max_images`` of the first validation batch seen (kept for the whole run, so epochs
    compare). The grid rows are source | driving | ``model.reconstruct_batch(batch)``. The video drives the first
    kept item with the kept batch's driving frames as a sequence (up to ``max_frames``), each frame
    source | driving | output: through ``model.animate(source, frames)`` (relative motion) when the model has one
    and the batch a ``source``, else through ``reconstruct_batch`` with the first item's other roles repeated.
    Files go to ``<log_dir>/media/epoch=NNN.{png,mp4}``; with a WandbLogger they are also
    logged as ``val/samples`` (image) and ``val/animation`` (video); other loggers get nothing beyond the disk.

    Args:
        every_n_epochs: validation epochs between media (0 disables).
        max_images: rows of the grid.
        max_frames: frames of the video.
        fps: frame rate of the video.
        directory: folder for the files; None uses ``<trainer.log_dir or default_root_dir>/media``.
    """

    def __init__(self, every_n_epochs: int = 1, max_images: int = 4, max_frames: int = 16, fps: float = 10.0,
                 directory: str | None = None) -> None:
        self.every_n_epochs, self.max_images, self.max_frames = every_n_epochs, max_images, max_frames
        self.fps, self.directory = fps, directory
        self.kept: dict[str, torch.Tensor] | None = None
        self.written: list[Path] = []

    def folder(self, trainer: L.Trainer) -> Path:
        return Path(self.directory or Path(trainer.log_dir or trainer.default_root_dir) / "media")

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.kept is None and not trainer.sanity_checking:
            self.kept = head_of_batch(batch, max(self.max_images, self.max_frames), device="cpu")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (self.kept is None or trainer.sanity_checking or not self.every_n_epochs
                or trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero):
            return
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"epoch={trainer.current_epoch:03d}"
        device = pl_module.device
        grid = head_of_batch(self.kept, self.max_images, device=device)
        with torch.no_grad():
            output = pl_module.reconstruct_batch(grid)
        image_path = stem.with_suffix(".png")
        Image.fromarray(grid_image(source_frames(grid), grid["driving"], output)).save(image_path)
        self.written.append(image_path)
        sequence = head_of_batch(self.kept, self.max_frames, device=device)
        with torch.no_grad():
            source, animated = self.animate(pl_module, sequence)
        t, _, h, _ = animated.shape
        rows = grid_image(source.expand(t, -1, -1, -1), sequence["driving"], animated)  # (t h, 3 w, 3)
        video_path = write_mp4(stem.with_suffix(".mp4"), rows.reshape(t, h, *rows.shape[1:]), fps=self.fps)
        self.written.append(video_path)
        self.send(trainer, image_path, video_path)

    @staticmethod
    def animate(pl_module: L.LightningModule, sequence: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(source (1, 3, h, w), output (t, 3, h, w)) of the first item driven by every item's driving frame."""
        source = source_frames(sequence)[:1]
        if isinstance(pl_module, Animates) and "source" in sequence:
            return source, pl_module.animate(source[0], sequence["driving"])
        t = sequence["driving"].shape[0]
        driven = {name: value[:1].expand(t, *value.shape[1:]) if isinstance(value, torch.Tensor) else value
                  for name, value in sequence.items() if not name.startswith("driving")}
        driven |= {name: value for name, value in sequence.items() if name.startswith("driving")}
        return source, pl_module.reconstruct_batch(driven)

    @staticmethod
    def send(trainer: L.Trainer, image_path: Path, video_path: Path | None) -> None:
        """Logs the files to every WandbLogger of the trainer (wandb imported only then)."""
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            logger.log_image(key="val/samples", images=[str(image_path)], caption=["source | driving | output"])
            if video_path is not None:
                import wandb

                logger.experiment.log({"val/animation": wandb.Video(str(video_path), format="mp4")})


class PredictionVideo(L.Callback):
    """Writes what ``talkinghead predict`` produced as mp4 files: driving | output side by side, per driving video.

    Reads each predict step's ``{"driving": (b, 3, h, w), "prediction": (b, 3, h, w), "video": [ids]}`` in order and
    writes ``<directory>/<video id>.mp4`` at the end (slashes in ids become "_"); the paths are printed and kept in
    ``written``.

    Args:
        directory: output folder; None uses ``<trainer.default_root_dir>/predictions``.
        fps: frame rate of the videos.
    """

    def __init__(self, directory: str | None = None, fps: float = 25.0) -> None:
        self.directory, self.fps = directory, fps
        self.frames: dict[str, list[np.ndarray]] = {}
        self.written: list[Path] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.frames = {}

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        driving, prediction = outputs["driving"], outputs["prediction"]
        videos = outputs.get("video") or ["prediction"] * driving.shape[0]
        rows = grid_image(driving, prediction)  # (b h, 2 w, 3)
        for video, row in zip(videos, np.split(rows, driving.shape[0])):
            self.frames.setdefault(str(video), []).append(row)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = Path(self.directory or Path(trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        for video, rows in self.frames.items():
            path = write_mp4(folder / f"{video.replace('/', '_')}.mp4", np.stack(rows), fps=self.fps)
            self.written.append(path)
            print(f"wrote {path} ({len(rows)} frames: driving | output)")
