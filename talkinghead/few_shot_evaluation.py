"""The few-shot protocol of FSTH and LPD behind `talkinghead evaluate --mode few-shot` (SPEC section 4).

Zakharov et al. (ICCV 2019, section 4) score a meta-learned model on people it never saw: for each person, T frames
(T = 1, 8, 32) give the person, and held-out frames of that person, never among the T, are re-synthesised from their
own pose. For each person and each T this module scores four outputs on the same held-out frames:

- ``T=8 fine-tuned``: the meta-learned checkpoint fine-tuned to the T frames by the package's own fine-tuning stage
  (:class:`~talkinghead.lightning.fsth.FSTHFineTuneModule` / :class:`~talkinghead.lightning.lpd.LPDFineTuneModule`,
  through ``talkinghead fit`` with a fine-tuning config), then driven by each held-out frame;
- ``T=8 feed-forward``: the meta-learned model alone (the embedder / identity encoder reads the T frames);
- ``T=8 mean of T frames`` and ``T=8 copy first frame``: the baselines a model has to beat.

The held-out frames are chosen once per person, before the T (``PersonDataModule(held_out_frames=N)``), so every T
is scored on the same frames. Columns are those of :mod:`talkinghead.evaluation` (L1, PSNR, SSIM, LPIPS / FID when
their weights are local, AKD / AED / CSIM / pose error by the face tools), plus, on synthetic shards, the synthetic
judge's identity and landmark scores (``judge cos`` to the person, ``judge landmarks px`` to the driving frame;
:mod:`talkinghead.metrics.synthetic_judge`, trained on other synthetic people and never with these models).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

__all__ = ["FEW_SHOT_ROWS", "FewShotSettings", "few_shot_kind", "default_finetune_config", "people_in", "person_data",
           "finetuning_cli", "evaluate_few_shot", "reconstruct_pairs"]

log = logging.getLogger(__name__)

FEW_SHOT_ROWS = ("fine-tuned", "feed-forward", "mean of T frames", "copy first frame")
FINETUNE_CONFIGS = {"fsth": ("tiny_finetune.yaml", "finetune_vox256.yaml"),
                    "lpd": ("tiny_finetune.yaml", "finetune_vox256.yaml")}


def few_shot_kind(model: Any) -> str | None:
    """"fsth" / "lpd" for a meta-learned FSTH / LPD module (what the few-shot protocol evaluates), else None."""
    from talkinghead.lightning.fsth import FSTHModule
    from talkinghead.lightning.lpd import LPDModule

    if isinstance(model, FSTHModule):
        return "fsth"
    if isinstance(model, LPDModule):
        return "lpd"
    return None


def default_finetune_config(kind: str, image_size: int) -> Path:
    """The package's fine-tuning config for a meta-learned model: the tiny CPU recipe up to 64 px, the paper's
    (``finetune_vox256.yaml``) above."""
    tiny, paper = FINETUNE_CONFIGS[kind]
    return Path(str(resources.files("talkinghead.lightning_configs") / kind / (tiny if image_size <= 64 else paper)))


def people_in(shards: str | Sequence[str], count: int) -> list[str]:
    """The first ``count`` identities of the shards, in the order their clips are listed."""
    from talkinghead.datamodules.shard_format import expand_shards, read_index

    identities = [entry.identity for url in expand_shards(shards) for entry in read_index(url)]
    return list(dict.fromkeys(identities))[:count]


@dataclass
class FewShotSettings:
    """What ``--mode few-shot`` runs.

    Attributes:
        shots: the T values, e.g. (1, 8, 32).
        finetune_steps: generator steps of fine-tuning per person and T (each with the config's D steps); 0 skips
            the fine-tuned rows.
        held_out: held-out frames scored per person.
        people: held-out people (the first identities of the shards).
        finetune_config: a fine-tuning config (its model and data sections: losses, optimizers, batch size,
            augmentation); None: :func:`default_finetune_config`.
        remove_background: black out the frames' background (where the shards store masks), as the model's
            training data did.
        seed: seed of every fine-tuning run.
    """

    shots: tuple[int, ...] = (1, 8)
    finetune_steps: int = 100
    held_out: int = 8
    people: int = 4
    finetune_config: str | os.PathLike | None = None
    remove_background: bool = False
    seed: int = 0


def person_data(shards: str | Sequence[str], identity: str, shots: int, settings: FewShotSettings,
                image_size: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(the T frames: references (T, 3, s, s), references_landmarks; the held-out frames: driving (n, 3, s, s),
    driving_landmarks, driving_pose) of one person, as the fine-tuning run reads them."""
    from talkinghead.datamodules.talking_heads import PersonDataModule

    data = PersonDataModule(shards=shards, identity=identity, num_frames=shots, held_out_frames=settings.held_out,
                            image_size=image_size, batch_size=64, num_workers=0,
                            remove_background=settings.remove_background)
    data.setup("fit")
    person = data.person_frames()
    held = list(data.val_dataloader())
    return ({name: person[name][0] for name in ("references", "references_landmarks")},
            {name: torch.cat([batch[name] for batch in held]) for name in ("driving", "driving_landmarks",
                                                                             "driving_pose")})


def finetuning_cli(checkpoint: str | os.PathLike, config: str | os.PathLike, shards: str, identity: str, shots: int,
                   settings: FewShotSettings, image_size: int, root: str | os.PathLike,
                   device: str | torch.device = "cpu") -> Any:
    """The ``talkinghead fit`` run that fine-tunes the meta-learned checkpoint to one person's T frames (the same
    frames and held-out frames as :func:`person_data`), with no logger, callbacks or checkpoints, stopping after
    ``settings.finetune_steps`` generator steps; built, not fitted (``cli.trainer.fit(cli.model, cli.datamodule)``).
    """
    from talkinghead.cli import TalkingHeadCLI

    accelerator = "cpu" if torch.device(device).type == "cpu" else "gpu"
    cli = TalkingHeadCLI(
        args=["--config", str(config), f"--model.init_args.init_from={checkpoint}",
              f"--data.init_args.shards={shards}", f"--data.init_args.identity={identity}",
              f"--data.init_args.num_frames={shots}", f"--data.init_args.held_out_frames={settings.held_out}",
              f"--data.init_args.image_size={image_size}", "--data.init_args.num_workers=0",
              f"--data.init_args.remove_background={str(settings.remove_background).lower()}",
              f"--trainer.accelerator={accelerator}", "--trainer.devices=1", "--trainer.max_steps=1",
              "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0", "--trainer.logger=false",
              "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              f"--trainer.default_root_dir={root}", f"--seed_everything={settings.seed}"],
        run=False,
    )
    # global_step counts every optimizer step: a G step and discriminator_steps D steps per batch (G alone when
    # no loss term reads D).
    cli.trainer.fit_loop.epoch_loop.max_steps = settings.finetune_steps * cli.model.optimizer_steps_per_batch
    return cli


def _fine_tune(checkpoint: str | os.PathLike, config: Path, shards: str, identity: str, shots: int,
               settings: FewShotSettings, image_size: int, device: str | torch.device, root: Path) -> L.LightningModule:
    """The meta-learned checkpoint fine-tuned to the person's T frames by ``talkinghead fit`` with ``config``."""
    with _quiet():
        cli = finetuning_cli(checkpoint, config, shards, identity, shots, settings, image_size, root, device)
        cli.trainer.fit(cli.model, cli.datamodule)
    return cli.model.to(device).eval()


@contextlib.contextmanager
def _quiet():
    """Keeps each fine-tuning run's Lightning banners and known warnings out of the evaluation's output (loading the
    meta-learned checkpoint has already said what its losses lack, e.g. face-VGG weights)."""
    quieter = {"lightning.pytorch": logging.WARNING, "lightning.fabric": logging.WARNING,
               "talkinghead.lightning.fsth": logging.ERROR, "talkinghead.lightning.lpd": logging.ERROR}
    loggers = [logging.getLogger(name) for name in quieter]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for message in ("LightningCLI's args parameter", "The perceptual loss uses RANDOM-INIT",
                        "Found .* module\\(s\\) in eval mode", ".*does not have many workers",
                        "`isinstance\\(treespec, LeafSpec\\)` is deprecated"):
            warnings.filterwarnings("ignore", message=message)
        for logger, level in zip(loggers, quieter.values()):
            logger.setLevel(level)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _feed_forward(kind: str, meta: L.LightningModule, person: dict[str, Tensor], held: dict[str, Tensor],
                  device: str | torch.device) -> Tensor:
    references = person["references"].to(device)
    if kind == "fsth":
        output = meta.reenact(references, person["references_landmarks"].to(device),
                              held["driving_landmarks"].to(device))
    else:
        output = meta.reenact(references, held["driving"].to(device))
    return output.float().cpu().clamp(0, 1)


class _Judge:
    """The synthetic judge's scores of a row: cosine of each output's identity embedding to the person's (the mean
    embedding of their real held-out frames) and the distance of the landmarks it reads to the driving ones."""

    def __init__(self) -> None:
        from talkinghead.metrics.synthetic_judge import load_judge

        self.judge, _ = load_judge()
        self.sums: dict[str, list[float]] = {}

    def update(self, row: str, outputs: Tensor, person: Tensor, landmarks: Tensor) -> None:
        read = self.judge.read(outputs)
        cos = read["embedding"] @ person
        error = (read["landmarks"] - landmarks).norm(dim=-1).mean(-1)
        totals = self.sums.setdefault(row, [0.0, 0.0, 0])
        totals[0] += cos.sum().item()
        totals[1] += error.sum().item()
        totals[2] += len(outputs)

    def row(self, row: str) -> dict[str, float]:
        cos, error, count = self.sums[row]
        return {"judge cos": cos / count, "judge landmarks px": error / count}


def evaluate_few_shot(
    model: L.LightningModule,
    checkpoint: str | os.PathLike,
    shards: str,
    settings: FewShotSettings,
    image_size: int,
    face_metrics: bool = True,
    fid_weights: str = "IMAGENET1K_V1",
    lpips_weights: str = "DEFAULT",
    device: str | torch.device = "cpu",
    pose_checkpoint: str | None = None,
    facenet_weights: str | None = None,
    judge: bool = False,
    scope: dict[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Scores a meta-learned FSTH / LPD checkpoint by the few-shot protocol (module docstring).

    Args:
        model: the meta-learned module (:func:`talkinghead.evaluation.load_model` of ``checkpoint``).
        checkpoint: its file: each fine-tuning run starts from it (``init_from``).
        shards: the held-out people's shards (folder, glob, brace pattern or URL: each fine-tuning run is a
            ``talkinghead fit`` given them as ``--data.init_args.shards``); the first ``settings.people`` identities
            are scored.
        settings: shots, fine-tuning steps and config, held-out frames, people.
        image_size: the model's training size.
        judge: add the synthetic judge's columns (for synthetic shards).
        face_metrics, fid_weights, lpips_weights, device, pose_checkpoint, facenet_weights, scope: as
            :func:`talkinghead.evaluation.evaluate`.

    Returns:
        rows ``T=<t> <what>`` for each T in ``settings.shots`` and each of :data:`FEW_SHOT_ROWS` (the fine-tuned row
        only with ``finetune_steps`` > 0).

    Raises:
        ValueError: not a meta-learned FSTH / LPD model, no people in the shards, or a person with fewer frames than
            T + held-out (a :class:`~talkinghead.datamodules.shard_format.ShardError`), or FSTH on frames without
            landmarks.
    """
    from talkinghead.evaluation import _faces, _FaceTools, _progress, _RowScores, _target_pose
    from talkinghead.metrics import metric_availability

    kind = few_shot_kind(model)
    if kind is None:
        raise ValueError(f"--mode few-shot evaluates meta-learned FSTH or LPD checkpoints; {type(model).__name__} "
                         "is not one (one-shot models: --mode same-identity)")
    if not settings.shots or min(settings.shots) < 1:
        raise ValueError(f"shots must be 1 or more, got {settings.shots}")
    if settings.held_out < 1 or settings.people < 1 or settings.finetune_steps < 0:
        raise ValueError("held-out frames and people must be at least 1 and fine-tuning steps at least 0")
    config = Path(settings.finetune_config or default_finetune_config(kind, image_size))
    if not config.is_file():
        raise FileNotFoundError(f"fine-tuning config not found: {config}")
    people = people_in(shards, settings.people)
    if not people:
        raise ValueError(f"no clips in {shards!r}")
    # Every person's frames are read (and refused, in one line, when too few) before any fine-tuning starts.
    frames = {(identity, shots): person_data(shards, identity, shots, settings, image_size)
              for identity in people for shots in settings.shots}
    if kind == "fsth":
        for (identity, _), (person, held) in frames.items():
            if not (person["references_landmarks"].isfinite().all() and held["driving_landmarks"].isfinite().all()):
                raise ValueError(f"FSTH draws from landmarks, and person {identity!r} has frames without them: "
                                 "preprocess the videos with landmarks (talkinghead preprocess)")
    availability = metric_availability(fid_weights=fid_weights, lpips_weights=lpips_weights)
    tools = (_FaceTools(device, image_size, pose_checkpoint, facenet_weights)
             if face_metrics and availability["akd"] is None else None)
    judged = _Judge() if judge else None
    model = model.to(device).eval()
    names = [f"T={shots} {what}" for shots in settings.shots for what in FEW_SHOT_ROWS
             if what != "fine-tuned" or settings.finetune_steps > 0]
    rows = {name: _RowScores(image_size, availability, face_metrics, fid_weights, lpips_weights, True)
            for name in names}
    if scope is not None:
        scope.update(people=len(people), **{"held-out frames": sum(len(frames[(p, settings.shots[0])][1]["driving"])
                                                                   for p in people)},
                     config=str(config))
    with tempfile.TemporaryDirectory(prefix="talkinghead-few-shot-") as root:
        for identity, shots in _progress(list(frames), "evaluate few-shot", "person x T"):
            person, held = frames[(identity, shots)]
            target = held["driving"]
            references = person["references"]
            outputs = {
                f"T={shots} feed-forward": _feed_forward(kind, model, person, held, device),
                f"T={shots} mean of T frames": references.mean(0, keepdim=True).expand_as(target),
                f"T={shots} copy first frame": references[:1].expand_as(target),
            }
            if settings.finetune_steps > 0:
                tuned = _fine_tune(checkpoint, config, shards, identity, shots, settings, image_size, device,
                                   Path(root) / f"{identity}_T{shots}")
                batch = {"driving": target.to(device), "driving_landmarks": held["driving_landmarks"].to(device)}
                outputs[f"T={shots} fine-tuned"] = tuned.reconstruct_batch(batch).float().cpu().clamp(0, 1)
                del tuned
            source = references[:1].expand_as(target)
            faces: dict[str, Any] = {}
            if tools is not None:
                source_faces = _faces(tools, references[:1])
                target_faces = {"landmarks": held["driving_landmarks"], "embedding": tools.embedder(target)}
                pose = _target_pose(held["driving_pose"], tools.pose(target, held["driving_landmarks"]))
            centroid = None
            if judged is not None:
                centroid = judged.judge.identity(target)
            for name, output in outputs.items():
                if tools is not None:
                    faces = _faces(tools, output)
                rows[name].update(
                    output, source, target, target, faces or None,
                    source_faces["embedding"].expand(len(target), -1) if tools is not None else None,
                    target_faces if tools is not None else None, pose if tools is not None else None)
                if judged is not None:
                    judged.update(name, output, centroid, held["driving_landmarks"])
    results = []
    for name in names:
        row = rows[name].row()
        if judged is not None:
            row.update(judged.row(name))
        results.append((name, row))
    return results


def reconstruct_pairs(model: L.LightningModule, source: Tensor, driving: Tensor, source_landmarks: Tensor,
                      driving_landmarks: Tensor) -> Tensor:
    """Each driving frame re-synthesised with its source's identity by a one-shot model (``reconstruct``) or a
    meta-learned few-shot one (the source as its single reference frame, T = 1: the feed-forward result).

    Raises:
        ValueError: FSTH and landmarks missing (FSTH draws from the driving landmarks).
    """
    kind = few_shot_kind(model)
    if kind is None:
        return model.reconstruct(source, driving)
    if kind == "fsth" and not (source_landmarks.isfinite().all() and driving_landmarks.isfinite().all()):
        raise ValueError("FSTH draws from landmarks, and these frames have none: preprocess the videos with "
                         "landmarks (talkinghead preprocess)")
    return model.reconstruct_batch({"references": source[:, None], "references_landmarks": source_landmarks[:, None],
                                    "driving": driving, "driving_landmarks": driving_landmarks})
