"""OSFV scored against exact ground truth on synthetic shards (SPEC section 7): free view and reconstruction.

Free view
---------
A synthetic clip is a pure function of (seed, person, clip, frame count, fps), which
:func:`~talkinghead.datamodules.synthetic_heads.write_synthetic_shards` records in every clip's metadata
(``extra``: seed, identity_index, clip_index, supersample). So the renderer can draw the SAME person under the SAME
light, with the same expression and the background of that moment, with only the head turned
(:func:`~talkinghead.datamodules.synthetic_heads.synthetic_frame`). That turned render is the exact truth of
``model.animate(source, source[None], relative=True, yaw=d)``.

Which turn is "yaw + d"? ``animate`` composes the user rotation on the left, R_d <- R_u R_d with
R_u = rotation_matrix(d, 0, 0): a turn about the CAMERA's vertical axis. The renderer draws a head-frame point at
R p + t (:mod:`talkinghead.geometry`), and the model's keypoints are x = R x_c + t + δ in the same coordinates, so
the truth is the frame re-rendered with rotation R_y(d) R and the same translation (:func:`turned_pose`). Positive
d turns the nose to image left in both. It equals adding d to the pose's Euler yaw only when pitch and roll are 0;
otherwise Euler yaw + d would turn about the head's pitched axis instead, which is not what the model is asked.

Scores per requested yaw (default -30 .. +30), averaged over clips, for three rows: "model" (the free view),
"model, no turn" (the model's output with no turn requested: the control that tells turning from blurring) and
"no turn" (the unturned source, i.e. copying it), all against the truth: PSNR and L1 on the full image and on the
foreground ("fg": the union of the truth's and the source's person masks from the renderer — head, hair, neck and
clothes — so pixels the head leaves or enters both count). A "truth check" group compares the re-rendered
unturned source with the stored one (about 100 dB on lossless npy shards; codec error on mp4 shards).

Reconstruction
--------------
:func:`score_reconstruction` scores ``model.reconstruct_batch`` and copying the source against the driving frame
on any (source, driving) batches: all pairs, and the large-motion pairs whose stored yaw labels differ by at least
15 degrees; full image and the driving frame's stored foreground mask.

Both return ``{group: {row: {column: value}}}`` with columns "n", "PSNR", "L1", "PSNR fg", "L1 fg" (NaN where
nothing was counted); :func:`format_table` prints them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from talkinghead.geometry import matrix_to_angles, rotation_matrix

if TYPE_CHECKING:
    from talkinghead.datamodules.synthetic_heads import RenderedClip

__all__ = [
    "FREE_VIEW_TRUTH_YAWS",
    "LARGE_MOTION_DEGREES",
    "COLUMNS",
    "MODEL",
    "NO_TURN",
    "MODEL_NO_TURN",
    "COPY_SOURCE",
    "TRUTH_CHECK",
    "Scores",
    "NotSyntheticError",
    "SyntheticClipSource",
    "turned_pose",
    "region_scores",
    "synthetic_clip_sources",
    "score_free_view",
    "score_reconstruction",
    "format_table",
]

FREE_VIEW_TRUTH_YAWS = (-30.0, -20.0, -10.0, 10.0, 20.0, 30.0)  # requested yaw offsets, degrees
LARGE_MOTION_DEGREES = 15.0  # |yaw_driving - yaw_source| of a large-motion pair
COLUMNS = ("n", "PSNR", "L1", "PSNR fg", "L1 fg")
MODEL, NO_TURN, COPY_SOURCE = "model", "no turn", "copy source frame"
# The model's own output with no turn requested, against the turned truth: the control that separates turning the
# head from merely blurring it (a blurred image scores better than a sharp misaligned one).
MODEL_NO_TURN = "model, no turn"
TRUTH_CHECK = "truth check"
# Below this the stored frames are not what this renderer draws for their metadata (another renderer version,
# or edited shards), and the "truth" would be wrong; mp4 shards at crf 18 stay far above it.
_MIN_TRUTH_CHECK_PSNR = 30.0
_MIN_MSE = 1e-10  # as talkinghead.metrics.psnr_per_image: identical images score 100 dB

Scores = dict[str, dict[str, dict[str, float]]]  # {group: {row: {column: value}}}


class NotSyntheticError(ValueError):
    """The clips cannot be re-rendered: not synthetic, or written without the renderer's seed and indices."""


@dataclass(frozen=True)
class SyntheticClipSource:
    """What a synthetic clip is rendered from, as its shard metadata records it."""

    seed: int  # write_synthetic_shards' seed
    identity_index: int  # person i (synth-0000i)
    clip_index: int  # the person's clip c
    num_frames: int  # the clip's length (part of what defines its light and background)
    fps: float  # frame rate the motion was timed for
    size: int  # stored frame side
    supersample: int  # antialiasing rays per pixel

    @classmethod
    def from_meta(cls, meta: Any, num_frames: int, where: str = "clip") -> SyntheticClipSource:
        """From a :class:`~talkinghead.datamodules.shard_format.ClipMeta` (or its dict) and the clip's length.

        Raises:
            NotSyntheticError: one line naming the clip, when it is not synthetic or lacks the seed and indices.
        """
        meta = meta if isinstance(meta, Mapping) else vars(meta)
        if meta.get("source") != "synthetic":
            raise NotSyntheticError(
                f"{where} is not synthetic (source {meta.get('source')!r}): exact free-view truth needs shards "
                f"written by `talkinghead synth` / write_synthetic_shards")
        extra = meta.get("extra") or {}
        missing = [key for key in ("seed", "identity_index", "clip_index") if key not in extra]
        if missing:
            raise NotSyntheticError(
                f"{where} is synthetic but its metadata lacks {', '.join(missing)} (written by an older "
                f"talkinghead): rewrite the shards with `talkinghead synth` for exact free-view truth")
        return cls(int(extra["seed"]), int(extra["identity_index"]), int(extra["clip_index"]), int(num_frames),
                   float(meta.get("fps", 25.0)), int(meta["size"]), int(extra.get("supersample", 2)))

    def render(self, frame: int, pose: Tensor | None = None) -> RenderedClip:
        """Frame ``frame`` re-rendered at the stored size, the head at ``pose`` (6,) or at its own pose (None).

        Returns:
            A one-frame :class:`~talkinghead.datamodules.synthetic_heads.RenderedClip`.
        """
        from talkinghead.datamodules.synthetic_heads import synthetic_frame

        return synthetic_frame(self.seed, self.identity_index, self.clip_index, self.num_frames, frame, self.size,
                               pose=pose, fps=self.fps, supersample=self.supersample)


def turned_pose(pose: Tensor, yaw: float) -> Tensor:
    """The pose ``animate(..., yaw=yaw)`` asks for: rotation R_y(yaw) R, the same translation.

    Args:
        pose: (..., 6) yaw, pitch, roll (degrees), tx, ty, tz.
        yaw: degrees about the camera's vertical axis; positive turns the nose to image left.

    Returns:
        (..., 6) the turned pose: angles whose rotation_matrix is R_y(yaw) R (one Euler decomposition of it).
    """
    angles = pose[..., :3].double()
    turn = rotation_matrix(*(torch.tensor(float(a), dtype=torch.float64) for a in (yaw, 0.0, 0.0)))
    rotation = turn @ rotation_matrix(*angles.unbind(-1))
    turned = torch.stack(matrix_to_angles(rotation), dim=-1).to(pose.dtype)
    return torch.cat([turned, pose[..., 3:]], dim=-1)


def region_scores(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    """Per-image L1 and PSNR (data range 1, capped at 100 dB), over the image or a mask.

    Args:
        prediction, target: (b, 3, h, w) in [0, 1].
        mask: (b, 1, h, w) in {0, 1}; None scores whole images. An image whose mask is unknown (NaN) or empty
            scores NaN.

    Returns:
        {"L1": (b,), "PSNR": (b,)} float32.
    """
    if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] != 3:
        raise ValueError(f"expected two (b, 3, h, w) batches of one shape, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    error = (prediction.float() - target.float())
    if mask is None:
        mask = torch.ones_like(error[:, :1])
    if mask.shape != (error.shape[0], 1, *error.shape[2:]):
        raise ValueError(f"mask must be (b, 1, h, w) = {(error.shape[0], 1, *error.shape[2:])}, got "
                         f"{tuple(mask.shape)}")
    mask = mask.float().to(error.device)
    known = mask.flatten(1).isfinite().all(1)
    mask = torch.nan_to_num(mask)
    area = mask.flatten(1).sum(1) * error.shape[1]
    valid = known & (area > 0)
    area = area.clamp_min(1)
    l1 = (error.abs() * mask).flatten(1).sum(1) / area
    mse = (error.square() * mask).flatten(1).sum(1) / area
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(_MIN_MSE))
    nan = torch.tensor(math.nan, device=error.device)
    return {"L1": torch.where(valid, l1, nan).cpu(), "PSNR": torch.where(valid, psnr, nan).cpu()}


class _Collector:
    """Per-image scores of one table row, summarised as means over the finite values."""

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor]] = {column: [] for column in COLUMNS[1:]}

    def add(self, prediction: Tensor, target: Tensor, mask: Tensor | None, keep: Tensor | None = None) -> None:
        """Scores a batch (fg columns NaN without a mask); ``keep`` (b,) bool selects the images counted."""
        unknown = {name: torch.full((len(prediction),), math.nan) for name in ("PSNR", "L1")}
        regions = {"": region_scores(prediction, target),
                   " fg": unknown if mask is None else region_scores(prediction, target, mask)}
        for suffix, scores in regions.items():
            for name, values in scores.items():
                self.values[name + suffix].append(values if keep is None else values[keep])

    def row(self) -> dict[str, float]:
        row = {"n": float(sum(len(v) for v in self.values["PSNR"]))}
        for column, chunks in self.values.items():
            values = torch.cat(chunks) if chunks else torch.zeros(0)
            finite = values[values.isfinite()]
            row[column] = float(finite.double().mean()) if len(finite) else math.nan
        return {column: row[column] for column in COLUMNS}


def _group_label(yaw: float) -> str:
    return f"yaw {yaw:+g}"


def synthetic_clip_sources(shards: str | Sequence[str], num_clips: int) -> list[tuple[SyntheticClipSource, Any]]:
    """The first ``num_clips`` clips of the shards, each with what it was rendered from.

    Returns:
        [(source, raw sample)], in stored order.

    Raises:
        NotSyntheticError: the first clip that cannot be re-rendered, in one line.
        ShardError: unreadable shards.
    """
    import json

    from talkinghead.datamodules.shard_format import expand_shards, iter_shard_samples, sample_num_frames

    found = []
    for url in expand_shards(shards):
        for sample in iter_shard_samples(url):
            where = f"clip {sample['__key__']!r} of {os.path.basename(url)}"
            meta = json.loads(sample["meta.json"]) if "meta.json" in sample else {}
            found.append((SyntheticClipSource.from_meta(meta, sample_num_frames(sample), where), sample))
            if len(found) == num_clips:
                return found
    return found


def _as_frames(rendered: RenderedClip, meta: Any, size: int) -> dict[str, Tensor]:
    """A render as the data module would give it: image (1, 3, s, s) and mask (1, 1, s, s), resized alike."""
    from talkinghead.datamodules.shard_format import Clip
    from talkinghead.datamodules.transforms import clip_to_frames

    clip = Clip(frames=rendered.frames.numpy(), landmarks=rendered.landmarks.numpy(), meta=meta,
                pose=rendered.pose.numpy(), mask=rendered.mask.numpy())
    return clip_to_frames(clip, size)


@torch.no_grad()
def score_free_view(
    model: Any,
    shards: str | Sequence[str],
    yaws: Sequence[float] = FREE_VIEW_TRUTH_YAWS,
    num_clips: int = 16,
    image_size: int | None = None,
    frame: int = 0,
) -> Scores:
    """Free view of each clip's source frame against the exact re-rendered truth, beside "no turn".

    Args:
        model: has ``animate(source, driving_frames, relative, yaw=...)`` and ``device`` (e.g. OSFVModule).
        shards: synthetic shards (folder, glob, list, ...), held-out people for a learning claim.
        yaws: requested yaw offsets in degrees (positive: nose to image left).
        num_clips: clips used, the first in stored order; one source frame each.
        image_size: side the model works at; frames and truths are resized alike (as the data module resizes);
            None keeps the stored size.
        frame: the source frame's number in each clip (0, the validation pairs' source).

    Returns:
        {"yaw -30": {"model": {...}, "no turn": {...}}, ..., "all yaws": {...}, "truth check": {"re-rendered
        source": {...}}}, values means over clips (PSNR in dB, L1 in [0, 1]).

    Raises:
        NotSyntheticError: a clip cannot be re-rendered (not synthetic, or old metadata).
        ValueError: no clips; or the re-rendered source differs from the stored one (another renderer version).
    """
    from talkinghead.datamodules.shard_format import decode_clip
    from talkinghead.datamodules.transforms import clip_to_frames

    clips = synthetic_clip_sources(shards, num_clips)
    if not clips:
        raise ValueError(f"no clips in {shards!r}")
    rows = {_group_label(y): {MODEL: _Collector(), MODEL_NO_TURN: _Collector(), NO_TURN: _Collector()} for y in yaws}
    overall = {MODEL: _Collector(), MODEL_NO_TURN: _Collector(), NO_TURN: _Collector()}
    check = _Collector()
    for source, sample in clips:
        stored = decode_clip(sample, [frame])
        size = image_size or stored.frames.shape[1]
        image = clip_to_frames(stored, size)["image"]  # (1, 3, s, s): what the model sees
        unturned = source.render(frame)
        base = _as_frames(unturned, stored.meta, size)
        reproduced = float(region_scores(base["image"], image)["PSNR"][0])
        if reproduced < _MIN_TRUTH_CHECK_PSNR:
            raise ValueError(
                f"clip {sample['__key__']!r}: the stored frame is not what this renderer draws for its metadata "
                f"(re-rendered PSNR {reproduced:.1f} dB): rewrite the shards with this talkinghead version")
        check.add(base["image"], image, None)
        still = model.animate(image[0], image, relative=True).float().cpu().clamp(0, 1)
        for yaw in yaws:
            truth = _as_frames(source.render(frame, turned_pose(unturned.pose[0], yaw)), stored.meta, size)
            mask = torch.maximum(truth["mask"], base["mask"])  # (1, 1, s, s): union of the person masks
            output = model.animate(image[0], image, relative=True, yaw=float(yaw)).float().cpu().clamp(0, 1)
            for name, images in ((MODEL, output), (MODEL_NO_TURN, still), (NO_TURN, image)):
                rows[_group_label(yaw)][name].add(images, truth["image"], mask)
                overall[name].add(images, truth["image"], mask)
    scores: Scores = {group: {name: c.row() for name, c in row.items()} for group, row in rows.items()}
    scores["all yaws"] = {name: c.row() for name, c in overall.items()}
    scores[TRUTH_CHECK] = {"re-rendered source": check.row()}
    return scores


def _yaw(batch: Mapping[str, Any], role: str, count: int) -> Tensor:
    """(b,) stored yaw labels of a role's frames, NaN where unknown."""
    pose = batch.get(f"{role}_pose")
    return torch.full((count,), math.nan) if pose is None else pose[:, 0].float().cpu()


@torch.no_grad()
def score_reconstruction(model: Any, batches: Iterable[Mapping[str, Any]],
                         large_motion: float = LARGE_MOTION_DEGREES) -> Scores:
    """Same-identity reconstruction and copying the source, against the driving frame.

    Args:
        model: has ``reconstruct_batch(batch)`` and ``device`` (e.g. OSFVModule).
        batches: (source, driving) batches in the batch vocabulary (``source``, ``driving``, ``source_pose``,
            ``driving_pose``, ``driving_mask``), e.g. a PairsDataModule's val_dataloader(); pose and mask may be
            NaN (unknown), which leaves those pairs out of the large-motion group and the fg columns.
        large_motion: |yaw_driving - yaw_source| in degrees (stored labels) from which a pair is large-motion.

    Returns:
        {"all pairs": {"model": {...}, "copy source frame": {...}}, "large motion (yaw change >= 15 deg)":
        {...}}; "fg" columns are over the driving frame's foreground mask.
    """
    large = f"large motion (yaw change >= {large_motion:g} deg)"
    rows = {group: {MODEL: _Collector(), COPY_SOURCE: _Collector()} for group in ("all pairs", large)}
    for batch in batches:
        on_device = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        output = model.reconstruct_batch(on_device).float().cpu().clamp(0, 1)
        source, driving = batch["source"].float().cpu(), batch["driving"].float().cpu()
        mask = batch.get("driving_mask")
        mask = None if mask is None else mask.cpu()
        turn = _yaw(batch, "driving", len(driving)) - _yaw(batch, "source", len(driving))
        is_large = turn.abs() >= large_motion  # False where a label is unknown (NaN)
        for name, images in ((MODEL, output), (COPY_SOURCE, source)):
            rows["all pairs"][name].add(images, driving, mask)
            rows[large][name].add(images, driving, mask, keep=is_large)
    return {group: {name: c.row() for name, c in row.items()} for group, row in rows.items()}


def _cell(value: float, column: str) -> str:
    if column == "n":
        return str(int(value))
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if column.startswith("PSNR") else f"{value:.4f}"


def format_table(scores: Scores, markdown: bool = False) -> str:
    """The scores as a plain-text (or markdown) table: one line per (group, row), one column per metric."""
    header = ["group", "row", *COLUMNS]
    lines = [[group, name, *(_cell(values[c], c) for c in COLUMNS)]
             for group, row in scores.items() for name, values in row.items()]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        return "\n".join(out + ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
                                 for line in lines])
    cells = [header, *lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells)
