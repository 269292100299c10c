"""Validation metrics of same-identity reconstruction (L1, PSNR, SSIM, MS-SSIM, AKD, pose error) as a callback.

The callback owns DDP-syncing torchmetrics objects, feeds them ``model.reconstruct_batch(batch)`` on every
validation batch and logs ``val/<metric>`` once per validation epoch (the metrics sync themselves, so the computed
values are logged as they are).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import Metric

from talkinghead.callbacks.samples import source_frames
from talkinghead.metrics import (
    AKD,
    L1,
    PSNR,
    SSIM,
    PoseError,
    msssim_for_size,
    pose_from_landmarks,
)

__all__ = ["ValidationMetrics"]


class ValidationMetrics(L.Callback):
    """Reconstruction metrics of every validation batch, logged as ``val/<metric>`` at the end of the epoch.

    Logged keys: ``val/l1``, ``val/psnr``, ``val/ssim``, ``val/ms_ssim`` (5 scales, images >= ``msssim_min_size()``)
    or ``val/ms_ssim_3scale`` (smaller images), the copy-the-source baseline ``val/copy_source/l1`` and
    ``val/copy_source/psnr``, and with ``face_metrics`` and ground-truth landmarks in the batch ``val/akd``,
    ``val/akd_normalized``, ``val/akd_miss_rate``, ``val/pose_error`` (mean of yaw, pitch, roll in degrees),
    ``val/pose_error/{yaw,pitch,roll}`` and ``val/pose_error_miss_rate``.

    Args:
        face_metrics: also compute AKD and pose error (MTCNN + dlib on every output frame: slow, off by default).
        min_face_size: smallest face side in pixels the landmark extractor's detector looks for.
    """

    def __init__(self, face_metrics: bool = False, min_face_size: int = 20) -> None:
        self.face_metrics, self.min_face_size = face_metrics, min_face_size
        self.image: dict[str, Metric] = {"l1": L1(), "psnr": PSNR(), "ssim": SSIM()}
        self.copy_source: dict[str, Metric] = {"l1": L1(), "psnr": PSNR()}
        self.msssim: tuple[str, Metric] | None = None  # chosen by the first batch's image size
        self.akd, self.pose_error = AKD(), PoseError()
        self.extractor = None  # LandmarkExtractor, built on first use

    def metrics(self) -> list[Metric]:
        found = [*self.image.values(), *self.copy_source.values(), self.akd, self.pose_error]
        return found + ([self.msssim[1]] if self.msssim is not None else [])

    def _to(self, device: torch.device) -> None:
        for metric in self.metrics():
            metric.to(device)

    def _reset(self) -> None:
        for metric in self.metrics():
            metric.reset()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._to(pl_module.device)
        self._reset()

    def _choose_msssim(self, side: int, device: torch.device) -> None:
        chosen = msssim_for_size(side)
        if chosen is not None:
            self.msssim = (chosen[0], chosen[1].to(device))

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        source, driving = source_frames(batch), batch["driving"]
        with torch.no_grad():
            prediction = pl_module.reconstruct_batch(batch).float()
        self._to(prediction.device)
        for metric in self.image.values():
            metric.update(prediction, driving)
        for metric in self.copy_source.values():
            metric.update(source, driving)
        if self.msssim is None:
            self._choose_msssim(min(driving.shape[-2:]), prediction.device)
        if self.msssim is not None:
            self.msssim[1].update(prediction, driving)
        if self.face_metrics:
            self.update_face_metrics(prediction, batch)

    def update_face_metrics(self, prediction: Tensor, batch: Any) -> None:
        """AKD and pose error of the rows whose ground-truth landmarks are known (finite)."""
        target = batch.get("driving_landmarks")
        if target is None:
            return
        known = target.isfinite().flatten(1).all(1)
        if not known.any():
            return
        if self.extractor is None:
            from talkinghead.metrics import LandmarkExtractor

            self.extractor = LandmarkExtractor(device=prediction.device, min_face_size=self.min_face_size)
        found = self.extractor(prediction[known]).to(prediction.device)  # (n, 68, 2), NaN where no face
        self.akd.update(found, target[known].to(found))
        pose = batch.get("driving_pose")
        if pose is not None:
            self.pose_error.update(pose_from_landmarks(found, prediction.shape[-1]).to(found),
                                   pose[known][:, :3].to(found))

    def computed(self) -> dict[str, Tensor]:
        """{log key: value} of everything updated since the last reset."""
        values = {f"val/{name}": metric.compute() for name, metric in self.image.items() if metric.update_called}
        values |= {f"val/copy_source/{name}": metric.compute() for name, metric in self.copy_source.items()
                   if metric.update_called}
        if self.msssim is not None and self.msssim[1].update_called:
            values[f"val/{self.msssim[0]}"] = self.msssim[1].compute()
        if self.akd.update_called:
            akd = self.akd.compute()
            values |= {"val/akd": akd["akd"], "val/akd_normalized": akd["akd_normalized"],
                       "val/akd_miss_rate": akd["miss_rate"]}
        if self.pose_error.update_called:
            pose = self.pose_error.compute()
            values |= {"val/pose_error": pose["mean"], "val/pose_error_miss_rate": pose["miss_rate"]}
            values |= {f"val/pose_error/{angle}": pose[angle] for angle in ("yaw", "pitch", "roll")}
        return {key: value.detach().float() for key, value in values.items()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in self.computed().items():
            # Already synced by torchmetrics: no sync_dist.
            pl_module.log(key, value.to(pl_module.device))
        self._reset()
