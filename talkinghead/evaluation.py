"""Paper-style evaluation of a trained talking-head checkpoint (SPEC section 4), behind `talkinghead evaluate`.

Three modes, each giving a model row and a "copy source frame" baseline row:

- same-identity: (source, driving) pairs of one clip (the DataModule's fixed validation pairs); the output
  re-synthesises the driving frame, which is the ground truth: L1, PSNR, SSIM, MS-SSIM, FID, LPIPS, AKD, AED,
  CSIM (to the source) and pose error (to the driving pose).
- cross-identity: the source of one clip driven by a frame of another person's clip; there is no ground truth, so
  only CSIM (to the source), pose error (to the driver) and FID (against the driving frames) are scored.
- free-view: each source re-rendered at yaw offsets; the measured yaw change (head pose from the output's landmarks
  minus that of the unrotated output) is compared with the requested one, with pitch / roll drift beside it.
  On synthetic shards `talkinghead evaluate` adds a table against the exact re-rendered truth
  (:func:`talkinghead.freeview.score_free_view`).

Scores that cannot be computed are strings "n/a (reason)". Faces the detector misses are counted (face miss rate).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from talkinghead.lightning.adversarial import class_from_path
from talkinghead.metrics import (
    AED,
    AKD,
    CSIM,
    FID,
    L1,
    LPIPS,
    PSNR,
    SMALL_MSSSIM_SCALES,
    SSIM,
    PoseError,
    metric_availability,
    msssim_for_size,
    msssim_min_size,
    pose_from_landmarks,
)
from talkinghead.networks.protocols import Animates
from talkinghead.safe_load import safe_torch_load

__all__ = ["COLUMNS", "MODES", "FREE_VIEW_YAWS", "Row", "load_model", "evaluate", "checkpoint_image_size",
           "find_checkpoint_image_size", "checkpoint_data_setting"]

Value = float | str
Row = tuple[str, dict[str, Value]]

MODES = ("same-identity", "cross-identity", "free-view", "few-shot")  # few-shot: talkinghead.few_shot_evaluation
# The paper-style table's columns, in order; evaluate() may add extra ones after them (ms_ssim_3scale, drift, ...).
COLUMNS = ("L1", "PSNR", "SSIM", "MS-SSIM", "FID", "LPIPS", "AKD", "AED", "CSIM", "pose error")
FREE_VIEW_YAWS = (-20.0, -10.0, 10.0, 20.0)  # requested yaw offsets in degrees
FACE_OFF = "n/a (face metrics off)"
NO_GROUND_TRUTH = "n/a (no ground truth in cross-identity)"
NOT_IN_FREE_VIEW = "n/a (not measured in free-view)"
BASELINE = "copy source frame"


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> L.LightningModule:
    """The LightningModule a `talkinghead fit` checkpoint holds, rebuilt without its config, in eval mode.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file would need more than tensors and plain values to load (nothing of it ran).
        ValueError: the file has no hyper_parameters["_class_path"] (not written by the talkinghead CLI), or names
            a class that does not exist.
    """
    path = Path(checkpoint)
    state = safe_torch_load(path, "checkpoint")  # refuses pickled code (UnsafeCheckpointError, a ValueError)
    class_path = state.get("hyper_parameters", {}).get("_class_path") if isinstance(state, dict) else None
    if not class_path:
        raise ValueError(f"not a talkinghead checkpoint: {path} has no hyper_parameters['_class_path'] "
                         f"(write checkpoints with `talkinghead fit`)")
    cls = class_from_path(class_path)
    if cls is None:
        raise ValueError(f"{path} names {class_path}, which this talkinghead version does not have")
    with warnings.catch_warnings():  # inference never runs the training losses: their weights do not matter here
        warnings.filterwarnings("ignore", message="The perceptual loss uses RANDOM-INIT")
        model = cls.load_from_checkpoint(path, map_location=torch.device(device), weights_only=True)
    return model.to(device).eval()


def checkpoint_image_size(checkpoint: str | os.PathLike, default: int = 256) -> int:
    """The data image size a checkpoint was trained at (see :func:`find_checkpoint_image_size`), else ``default``."""
    size, _ = find_checkpoint_image_size(checkpoint, default)
    return size


def find_checkpoint_image_size(checkpoint: str | os.PathLike, default: int = 256,
                               state: dict[str, Any] | None = None) -> tuple[int, str]:
    """(size, where it came from): the size every checkpoint the package writes records, else the checkpoint's
    datamodule hyper-parameters, else the config.yaml LightningCLI writes next to the run, else ``default``
    (where is then "guessed: ..."). ``state``: the checkpoint's contents when the caller has loaded them already."""
    from talkinghead.lightning.adversarial import IMAGE_SIZE_KEY

    path = Path(checkpoint)
    try:
        state = safe_torch_load(path, "checkpoint") if state is None else state
        for size, where in ((state.get(IMAGE_SIZE_KEY), "the checkpoint"),
                            ((state.get("datamodule_hyper_parameters") or {}).get("image_size"),
                             "the checkpoint's data hyper-parameters")):
            if size:
                return int(size), where
    except Exception:  # noqa: BLE001 - a best-effort default only
        pass
    import yaml

    for folder in list(path.resolve().parents)[:3]:
        config = folder / "config.yaml"
        if config.is_file():
            try:
                data = yaml.safe_load(config.read_text()).get("data", {})
                size = (data.get("init_args") or data).get("image_size")
                if size:
                    return int(size), f"guessed from the run's {config}"
            except Exception:  # noqa: BLE001
                pass
    return default, f"guessed: the default {default} (the checkpoint does not record its training image size)"


def checkpoint_data_setting(checkpoint: str | os.PathLike, name: str, default: Any = None) -> Any:
    """A data hyper-parameter the checkpoint records (``datamodule_hyper_parameters[name]``), else ``default``."""
    try:
        state = safe_torch_load(Path(checkpoint), "checkpoint")
        return (state.get("datamodule_hyper_parameters") or {}).get(name, default)
    except Exception:  # noqa: BLE001 - a best-effort default only; load_model reports unreadable files
        return default


def _value(tensor: Tensor | float) -> float:
    return float(tensor)


NO_FACE = "n/a (no face found)"


def _face_value(tensor: Tensor | float) -> Value:
    """A face metric's mean, or why there is none (every frame a detector miss)."""
    value = float(tensor)
    return NO_FACE if math.isnan(value) else value


class _FaceTools:
    """One MTCNN + dlib landmark extractor and the dlib identity embedder built on it (built once per evaluate)."""

    def __init__(self, device: str | torch.device, image_size: int, pose_checkpoint: str | None = None,
                 facenet_weights: str | None = None) -> None:
        from talkinghead.metrics import DlibFaceEmbedder, FacenetEmbedder, LandmarkExtractor

        if facenet_weights is None:
            self.embedder = DlibFaceEmbedder(device=device)
            self.landmarks = self.embedder.landmarks
        else:  # identity embeddings from facenet-pytorch's InceptionResnetV1 (VGGFace2), landmarks from dlib
            self.embedder = FacenetEmbedder(facenet_weights, device=device)
            self.landmarks = LandmarkExtractor(device=device)
        self.image_size, self.device = image_size, device
        self.pose_network = None
        if pose_checkpoint is not None:
            from talkinghead.losses.head_pose import load_hopenet

            self.pose_network = load_hopenet(pose_checkpoint).to(device)

    def pose(self, images: Tensor, landmarks: Tensor) -> Tensor:
        """(b, 3) yaw, pitch, roll of images: the head-pose network's when given, else PnP on the landmarks."""
        if self.pose_network is None:
            return pose_from_landmarks(landmarks, self.image_size)
        with torch.no_grad():
            return self.pose_network(images.to(self.device))[:, :3].float().cpu()


def _pairs(shards: str | Sequence[str], num_pairs: int, image_size: int,
           remove_background: bool = False) -> list[dict[str, Any]]:
    """The first num_pairs fixed (source, driving) validation items of the shards, unaugmented."""
    from talkinghead.datamodules.talking_heads import PairsDataModule

    data = PairsDataModule(shards, val_shards=shards, image_size=image_size, val_samples=num_pairs, batch_size=8,
                           num_workers=0, flip_probability=0.0, remove_background=remove_background)
    data.setup("validate")
    return [data.val_items[i] for i in range(len(data.val_items))]


def _stack(items: Sequence[dict[str, Any]], key: str) -> Tensor:
    return torch.stack([item[key] for item in items])


def _batches(items: Sequence[Any], size: int = 8):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _finite_rows(values: Tensor) -> Tensor:
    return values.flatten(1).isfinite().all(1)


class _RowScores:
    """The metric objects of one table row, fed batch by batch."""

    def __init__(self, image_size: int, availability: dict[str, str | None], face_metrics: bool,
                 fid_weights: str, lpips_weights: str, with_ground_truth: bool) -> None:
        self.image_size, self.face_metrics, self.ground_truth = image_size, face_metrics, with_ground_truth
        self.availability = availability
        self.l1, self.psnr, self.ssim = L1(), PSNR(), SSIM()
        self.msssim = msssim_for_size(image_size)  # (name, metric): 5 scales, 3 for small images, or None
        self.fid = FID(fid_weights) if availability["fid"] is None else None
        self.lpips = LPIPS(weights=lpips_weights) if availability["lpips"] is None and with_ground_truth else None
        self.akd, self.aed, self.csim, self.pose = AKD(), AED(), CSIM(), PoseError()

    def update(self, output: Tensor, source: Tensor, target: Tensor | None, real: Tensor,
               output_faces: dict[str, Tensor] | None, source_embedding: Tensor | None,
               target_faces: dict[str, Tensor] | None, target_pose: Tensor | None) -> None:
        if target is not None:
            self.l1.update(output, target)
            self.psnr.update(output, target)
            self.ssim.update(output, target)
            for metric in (None if self.msssim is None else self.msssim[1], self.lpips):
                if metric is not None:
                    metric.update(output, target)
        if self.fid is not None:
            self.fid.update(real, real=True)
            self.fid.update(output, real=False)
        if output_faces is not None:
            if target_faces is not None:
                self.akd.update(output_faces["landmarks"], target_faces["landmarks"])
                self.aed.update(output_faces["embedding"], target_faces["embedding"])
            self.csim.update(output_faces["embedding"], source_embedding)
            self.pose.update(output_faces["pose"], target_pose)

    def row(self) -> dict[str, Value]:
        gt = None if self.ground_truth else NO_GROUND_TRUTH
        row: dict[str, Value] = {
            "L1": gt or _value(self.l1.compute()),
            "PSNR": gt or _value(self.psnr.compute()),
            "SSIM": gt or _value(self.ssim.compute()),
        }
        standard = self.msssim is not None and self.msssim[0] == "ms_ssim"
        if standard:
            row["MS-SSIM"] = gt or _value(self.msssim[1].compute())
        else:
            row["MS-SSIM"] = gt or f"n/a (images under {msssim_min_size()} px; see ms_ssim_3scale)"
        row["FID"] = self.availability["fid"] or _value(self.fid.compute())
        row["LPIPS"] = gt or self.availability["lpips"] or _value(self.lpips.compute())
        misses: list[float] = []
        if not self.face_metrics:
            face = {"AKD": FACE_OFF, "AED": FACE_OFF, "CSIM": FACE_OFF, "pose error": FACE_OFF}
        elif self.availability["akd"] is not None:
            face = dict.fromkeys(("AKD", "AED", "CSIM", "pose error"), self.availability["akd"])
        else:
            face = {}
            if self.ground_truth:
                akd, aed = self.akd.compute(), self.aed.compute()
                face["AKD"], face["AED"] = _face_value(akd["akd"]), _face_value(aed["aed"])
                misses += [_value(akd["miss_rate"]), _value(aed["miss_rate"])]
            else:
                face["AKD"] = face["AED"] = gt
            csim, pose = self.csim.compute(), self.pose.compute()
            face["CSIM"], face["pose error"] = _face_value(csim["csim"]), _face_value(pose["mean"])
            misses += [_value(csim["miss_rate"]), _value(pose["miss_rate"])]
        row.update(face)
        if not standard:
            row["ms_ssim_3scale"] = gt or (_value(self.msssim[1].compute()) if self.msssim is not None else
                                           f"n/a (images under {msssim_min_size(scales=SMALL_MSSSIM_SCALES)} px)")
        misses = [m for m in misses if not math.isnan(m)]
        if self.face_metrics and self.availability["akd"] is None:  # always shown when face metrics ran, 0 too
            row["face miss rate"] = max(misses) if misses else 0.0
        return row


def _faces(tools: _FaceTools, images: Tensor) -> dict[str, Tensor]:
    """Landmarks (b, 68, 2), dlib embeddings (b, 128) and head pose (b, 3) of images, NaN where no face is found
    (the pose from a head-pose network is defined even then)."""
    landmarks = tools.landmarks(images)
    return {"landmarks": landmarks, "embedding": tools.embedder(images), "pose": tools.pose(images, landmarks)}


def _target_landmarks(tools: _FaceTools, images: Tensor, stored: Tensor) -> Tensor:
    """Stored landmarks where finite (exact on synthetic shards), else those found on the images."""
    known = _finite_rows(stored)
    if known.all():
        return stored
    found = tools.landmarks(images)
    return torch.where(known[:, None, None], stored, found)


def _target_pose(stored: Tensor, estimated: Tensor) -> Tensor:
    """Stored (yaw, pitch, roll) labels where finite, else the estimated pose of the driving frames."""
    stored = stored[:, :3]
    known = _finite_rows(stored)
    if known.all():
        return stored
    return torch.where(known[:, None], stored, estimated.to(stored.dtype))


def evaluate(
    model: L.LightningModule,
    shards: str | Sequence[str],
    mode: str = "same-identity",
    num_pairs: int = 64,
    image_size: int = 256,
    face_metrics: bool = True,
    fid_weights: str = "IMAGENET1K_V1",
    lpips_weights: str = "DEFAULT",
    device: str | torch.device = "cpu",
    pose_checkpoint: str | None = None,
    facenet_weights: str | None = None,
    scope: dict[str, int] | None = None,
    remove_background: bool = False,
) -> list[Row]:
    """Scores a model and the copy-source baseline on the first num_pairs clips of the shards.

    Args:
        model: an :class:`~talkinghead.networks.protocols.Animates` (``reconstruct(source, driving)`` and
            ``animate(source, frames, relative, yaw, ...)``): OSFV's module or OSFVModel; or, in same- and
            cross-identity, a meta-learned FSTH / LPD module, given the source as its one reference frame (the
            feed-forward result at T = 1; the few-shot protocol itself is
            :func:`talkinghead.few_shot_evaluation.evaluate_few_shot`).
        shards: evaluation shards (folder, glob, list, ...).
        mode: one of :data:`MODES`.
        num_pairs: clips used (one pair, or one source, per clip).
        image_size: side the frames are resized to (the model's training size).
        face_metrics: AKD / AED / CSIM / pose error (MTCNN + dlib on the CPU or ``device``).
        fid_weights, lpips_weights: what :class:`FID` / :class:`LPIPS` get; absent weights give "n/a (...)".
        device: where the model and MTCNN run.
        pose_checkpoint: local Hopenet weights for the head pose of outputs and unlabelled frames; None fits a
            generic 3D face to the dlib landmarks (weak-perspective PnP).
        facenet_weights: local InceptionResnetV1 weights for AED / CSIM (facenet-pytorch); None uses dlib's 128-d
            face descriptor, which works offline.
        scope: a dict to fill with what was scored: clips, people, and pairs (same-/cross-identity) or sources
            and views (free view).
        remove_background: black out the frames' background where the shards store masks (as a model trained on
            such frames saw them).

    Returns:
        [("model", {column: value}), ("copy source frame", {...})], values floats or "n/a (reason)" strings.
    """
    from talkinghead.few_shot_evaluation import few_shot_kind, reconstruct_pairs

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "few-shot":
        raise ValueError("the few-shot protocol fine-tunes from the checkpoint file: call "
                         "talkinghead.few_shot_evaluation.evaluate_few_shot")
    few_shot = few_shot_kind(model)
    if not isinstance(model, Animates) and few_shot is None:
        raise ValueError(f"evaluate scores one-shot models (reconstruct and animate from one source image, e.g. "
                         f"OSFV) and meta-learned FSTH / LPD ones; {type(model).__name__} is neither")
    if few_shot is not None and mode == "free-view":
        raise ValueError(f"free view turns the head of a 3D one-shot model (OSFV); {few_shot.upper()} draws the pose "
                         "of a driving frame and has no free view: use --mode same-identity, cross-identity or "
                         "few-shot")
    availability = metric_availability(fid_weights=fid_weights, lpips_weights=lpips_weights)
    tools = (_FaceTools(device, image_size, pose_checkpoint, facenet_weights)
             if face_metrics and availability["akd"] is None else None)
    items = _pairs(shards, num_pairs, image_size, remove_background)
    if not items:
        raise ValueError(f"no clips in {shards!r}")
    model = model.to(device)
    if scope is not None:
        scope.update(clips=len(items), people=len({item["identity"] for item in items}))
        if mode == "free-view":
            scope.update(sources=len(items), views=len(items) * len(FREE_VIEW_YAWS))
        else:
            scope.update(pairs=len(items))
    if mode == "free-view":
        return _free_view(model, items, image_size, availability, tools, face_metrics, device)
    ground_truth = mode == "same-identity"
    rows = {name: _RowScores(image_size, availability, face_metrics, fid_weights, lpips_weights, ground_truth)
            for name in ("model", BASELINE)}
    if ground_truth:
        pairs = [(item, item) for item in items]
    else:
        pairs = list(zip(items, _other_identity(items)))
    for chunk in _progress(list(_batches(pairs)), f"evaluate {mode}", "batch"):
        source = _stack([s for s, _ in chunk], "source")
        driving = _stack([d for _, d in chunk], "driving")
        marks = (_stack([s for s, _ in chunk], "source_landmarks"), _stack([d for _, d in chunk], "driving_landmarks"))
        output = reconstruct_pairs(model, source.to(device), driving.to(device), *(m.to(device) for m in marks))
        output = output.float().cpu().clamp(0, 1)
        faces = {}
        if tools is not None:
            landmarks = _target_landmarks(tools, driving, _stack([d for _, d in chunk], "driving_landmarks"))
            target = {"landmarks": landmarks, "embedding": tools.embedder(driving)}
            pose = _target_pose(_stack([d for _, d in chunk], "driving_pose"), tools.pose(driving, landmarks))
            source_faces = _faces(tools, source)
            faces = {"model": _faces(tools, output), BASELINE: source_faces}
        for name, images in (("model", output), (BASELINE, source)):
            rows[name].update(
                images, source, driving if ground_truth else None, driving, faces.get(name),
                source_faces["embedding"] if tools else None, target if tools and ground_truth else None,
                pose if tools else None)
    return [(name, scores.row()) for name, scores in rows.items()]


def _progress(items: Sequence[Any], description: str, unit: str) -> Any:
    """A progress bar over ``items`` on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(items, desc=description, unit=unit, file=sys.stderr, disable=None, leave=False)


def _other_identity(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each item, a driver of a different identity: the list of identities rotated by one (the k-th clip of
    the next identity, wrapping around), deterministic."""
    by_identity: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_identity.setdefault(item["identity"], []).append(item)
    identities = list(by_identity)
    if len(identities) < 2:
        raise ValueError(f"cross-identity needs clips of at least 2 identities, the first {len(items)} clips have "
                         f"{len(identities)}; pass more --pairs or other shards")
    drivers, seen = [], dict.fromkeys(identities, 0)
    for item in items:
        other = by_identity[identities[(identities.index(item["identity"]) + 1) % len(identities)]]
        k = seen[item["identity"]]
        seen[item["identity"]] += 1
        drivers.append(other[k % len(other)])
    return drivers


def _free_view(model: L.LightningModule, items: Sequence[dict[str, Any]], image_size: int,
               availability: dict[str, str | None], tools: _FaceTools | None, face_metrics: bool,
               device: str | torch.device) -> list[Row]:
    """Yaw-offset renders of each source: |measured yaw change - requested|, pitch / roll drift, CSIM to the
    source."""
    requested = torch.tensor(FREE_VIEW_YAWS)
    target = torch.stack([requested, torch.zeros_like(requested), torch.zeros_like(requested)], -1)  # (v, 3)
    errors = {"model": PoseError(), BASELINE: PoseError()}
    csim = {"model": CSIM(), BASELINE: CSIM()}
    for item in _progress(items, "evaluate free-view", "source"):
        source = item["source"]
        views = torch.cat([model.animate(source.to(device), source[None].to(device), relative=True, yaw=float(y))
                           for y in (0.0, *FREE_VIEW_YAWS)]).float().cpu().clamp(0, 1)  # (1 + v, 3, h, w)
        if tools is None:
            continue
        source_faces = _faces(tools, source[None])
        for name, images in (("model", views), (BASELINE, source[None].expand(len(views), -1, -1, -1))):
            found = source_faces if name == BASELINE else _faces(tools, images)
            if name == BASELINE:
                found = {k: v.expand(len(views), *v.shape[1:]) for k, v in found.items()}
            pose = found["pose"]  # (1 + v, 3)
            errors[name].update(pose[1:] - pose[:1], target)
            csim[name].update(found["embedding"][1:], source_faces["embedding"].expand(len(requested), -1))
    rows: list[Row] = []
    for name in ("model", BASELINE):
        row: dict[str, Value] = {column: NOT_IN_FREE_VIEW for column in COLUMNS}
        if not face_metrics:
            reason = FACE_OFF
        else:
            reason = availability["pose"]
        if reason is not None:
            row.update({"CSIM": reason, "pose error": reason, "pitch drift": reason, "roll drift": reason})
        else:
            pose, identity = errors[name].compute(), csim[name].compute()
            row.update({"CSIM": _face_value(identity["csim"]), "pose error": _face_value(pose["yaw"]),
                        "pitch drift": _face_value(pose["pitch"]), "roll drift": _face_value(pose["roll"])})
            misses = [m for m in (_value(pose["miss_rate"]), _value(identity["miss_rate"])) if not math.isnan(m)]
            row["face miss rate"] = max(misses) if misses else 0.0  # always shown when face metrics ran
        rows.append((name, row))
    return rows
