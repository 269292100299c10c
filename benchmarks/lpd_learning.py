"""Does tiny LPD learn, and does its pose descriptor leak identity? Synthetic shards, pose augmentation on and off.

Burkov et al. (CVPR 2020): for each setting of ``augment_pose`` (on, off) meta-learns tiny LPD (tiny_meta.yaml) for
a budget in G steps, then for each held-out person scores the person's held-out frames (``PersonDataModule``: frames
not among the T, background removed as in training) for (a) the feed-forward meta model (identity from the T
frames, pose from each held-out frame), (b) the model fine-tuned to the T frames (tiny_finetune.yaml, the same
``augment_pose``) and (c) the "copy the first of the T frames" baseline: PSNR, SSIM, L1.

The reconstruction table also has a generic "mean face" (the mean of the other held-out people's T frames) and the
feed-forward result with ANOTHER person's identity frames: the feed-forward result must beat both to show that it
depends on the person's references.

Identity leakage: for each ordered pair of different held-out people (source A, driver B) the models of A reenact
B's held-out frames; the distances of each output's identity features to A's and B's mean features (over their
real held-out frames) tell whether the output looks like the source (no leak) or like the driver (the pose
descriptor carries identity). Features: the synthetic identity judge (talkinghead.metrics.synthetic_judge, trained
by benchmarks/identity_judge.py on other synthetic people, never with LPD), and dlib's 128-d face descriptors
(``DlibFaceEmbedder``, frames upsampled to 320 px; for real faces, and it finds few faces in 64-px renders). Pose
following: the judge's landmarks of each cross-person output against the driver's exact landmarks. Real frames
give the reference points: A's own frames (no leak at all) and B's frames (a full leak). Prints markdown tables, writes results.json
and a PNG per setting (driver frame | source's first frame | feed-forward | fine-tuned) into --out::

    python benchmarks/lpd_learning.py --out /tmp/lpd_learning
    python benchmarks/lpd_learning.py --meta-steps 20 --finetune-steps 10 --people 2 --out /tmp/lpd_smoke  # smoke
    python benchmarks/lpd_learning.py --checkpoint-on /tmp/lpd_learning/meta_aug_on.ckpt \\
        --checkpoint-off /tmp/lpd_learning/meta_aug_off.ckpt                          # reuse meta-learned models
    python benchmarks/lpd_learning.py --meta-steps 600 -- --model.init_args.loss_weights.l1=0   # meta overrides
    python benchmarks/lpd_learning.py --meta-minutes 10 --export talkinghead/assets/lpd_tiny_meta.ckpt  # ship it
    python benchmarks/lpd_learning.py --settings on --meta-minutes 40 --identities 256 \\
        --export talkinghead/assets/lpd_tiny_meta.ckpt                # the shipped model (pose augmentation on)
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from few_shot_common import Judge, config_path, duration, export_meta, generator_steps, scores, write_data

from talkinghead.callbacks.samples import grid_image
from talkinghead.cli import TalkingHeadCLI
from talkinghead.datamodules.talking_heads import PersonDataModule
from talkinghead.lightning.finetune import load_meta_module
from talkinghead.lightning.lpd import LPDFineTuneModule, LPDModule

SETTINGS = {"on": True, "off": False}  # augment_pose of both stages
EMBED_SIZE = 320  # MTCNN finds more of the 64-px synthetic faces at 320 px bicubic than at 256 px bilinear


def meta_learn(args: argparse.Namespace, out: Path, train: Path, setting: str) -> tuple[Path, int, float]:
    """Runs the meta-learning fit with augment_pose on or off; returns (checkpoint, generator steps, seconds)."""
    budget = [f"--trainer.max_time={duration(int(args.meta_minutes * 60))}"] if args.meta_minutes else []
    cli = TalkingHeadCLI(
        args=[
            "--config", str(config_path("lpd", "tiny_meta.yaml")),
            f"--data.init_args.shards={train}", f"--data.init_args.num_workers={args.workers}",
            f"--model.init_args.augment_pose={str(SETTINGS[setting]).lower()}",
            *budget, "--trainer.max_steps=-1", "--trainer.max_epochs=-1",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name=meta_aug_{setting}",
            f"--trainer.default_root_dir={out / f'meta_aug_{setting}'}", f"--seed_everything={args.seed}",
            *args.overrides,
        ],
        run=False,
    )
    per_batch = cli.model.optimizer_steps_per_batch  # global_step counts a G step and a D step per batch
    if not args.meta_minutes:  # a time budget replaces the step budget (its default would otherwise cap it)
        cli.trainer.fit_loop.epoch_loop.max_steps = per_batch * args.meta_steps
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = time.perf_counter() - start
    checkpoint = out / f"meta_aug_{setting}.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    if args.export and SETTINGS[setting]:  # the paper's setting (pose augmentation on) is the one shipped
        export_meta(cli, args.export)
    global_step = cli.trainer.global_step
    batches = cli.trainer.fit_loop.total_batch_idx + 1
    print(f"meta-learning (augment_pose {setting}): global_step {global_step}, batches {batches} "
          f"(expected global_step = {per_batch} x batches = {per_batch * batches}), {seconds / 60:.1f} min",
          flush=True)
    return checkpoint, global_step // per_batch, seconds


def person_data(folder: Path, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The person's T frames, held-out frames and their landmarks, as tiny_finetune.yaml's datamodule gives them
    (background removed)."""
    data = PersonDataModule(shards=str(folder), num_frames=args.shots, image_size=64, batch_size=8, num_workers=0,
                            val_samples=args.held_out, remove_background=True)
    data.setup("fit")
    references = data.person_frames()["references"][0]
    batches = list(data.val_dataloader())
    held = torch.cat([batch["driving"] for batch in batches])
    return references, held, torch.cat([batch["driving_landmarks"] for batch in batches])


def fine_tune(args: argparse.Namespace, out: Path, meta: Path, folder: Path, setting: str):
    """Fine-tunes to the person's T frames, quietly; returns (module in eval mode, generator steps, seconds)."""
    cli = TalkingHeadCLI(
        args=[
            "--config", str(config_path("lpd", "tiny_finetune.yaml")),
            f"--model.init_args.init_from={meta}",
            f"--model.init_args.augment_pose={str(SETTINGS[setting]).lower()}",
            f"--data.init_args.shards={folder}", f"--data.init_args.num_frames={args.shots}",
            f"--data.init_args.val_samples={args.held_out}",
            "--trainer.max_epochs=-1",
            "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
            f"--trainer.default_root_dir={out / 'finetune' / f'{folder.name}_aug_{setting}'}",
            f"--seed_everything={args.seed}",
        ],
        run=False,
    )
    per_batch = cli.model.optimizer_steps_per_batch  # the G step alone when no loss term reads D
    cli.trainer.fit_loop.epoch_loop.max_steps = per_batch * args.finetune_steps
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli.model.eval(), cli.trainer.global_step // per_batch, time.perf_counter() - start


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


class IdentityFeatures:
    """Identity features of 64-px frames (NaN rows where there are none), and of each held-out person's real frames:
    ``real`` per person and their mean ``centres`` (over rows with features)."""

    name = ""

    def __init__(self, data: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        self.real = {person: self(held) for person, (_, held, _) in data.items()}
        self.centres = {person: d[d.isfinite().all(1)].mean(0) for person, d in self.real.items()}

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Descriptors(IdentityFeatures):
    """dlib's 128-d face descriptors (frames upsampled first: MTCNN misses 64-px faces); NaN where no face is found."""

    name = "dlib face-descriptor distance (128-d, same-person threshold 0.6)"

    def __init__(self, data: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        from talkinghead.metrics.identity import DlibFaceEmbedder

        self.embedder = DlibFaceEmbedder()
        super().__init__(data)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        large = F.interpolate(frames.float(), size=EMBED_SIZE, mode="bicubic", align_corners=False)
        return self.embedder(large.clamp(0, 1))


class JudgeEmbeddings(IdentityFeatures):
    """The synthetic judge's unit identity embeddings (talkinghead.metrics.synthetic_judge: trained on other
    synthetic people, never with LPD); Euclidean distance between unit vectors orders like cosine similarity."""

    name = "synthetic identity judge, embedding distance (unit 128-d)"

    def __init__(self, data: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], judge: Judge) -> None:
        self.judge = judge
        super().__init__(data)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.judge.embeddings(frames)


def distances(descriptors: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each descriptor to a centre (NaN stays NaN: no face)."""
    return (descriptors - centre).norm(dim=1)


def leakage_row(to_source: list[torch.Tensor], to_driver: list[torch.Tensor]) -> dict[str, float]:
    """Mean distances to source and driver over frames with a face, the share closer to the source, detections."""
    source, driver = torch.cat(to_source), torch.cat(to_driver)
    found = source.isfinite() & driver.isfinite()
    if not found.any():
        return {"d_source": float("nan"), "d_driver": float("nan"), "closer_to_source": float("nan"),
                "faces": 0, "frames": len(source)}
    return {"d_source": source[found].mean().item(), "d_driver": driver[found].mean().item(),
            "closer_to_source": (source[found] < driver[found]).float().mean().item(),
            "faces": int(found.sum()), "frames": len(source)}


@torch.no_grad()
def evaluate_setting(args: argparse.Namespace, out: Path, setting: str, meta_ckpt: Path, people: list[Path],
                     data: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                     features: dict[str, IdentityFeatures], judge: Judge) -> dict:
    """Reconstruction before/after fine-tuning, and cross-person outputs for the leakage table, for one setting."""
    meta, _ = load_meta_module(LPDModule, str(meta_ckpt), None)  # the weights fine-tuning starts from (EMA)
    meta.eval()
    names = [folder.name for folder in people]
    reconstruction: dict[str, dict[str, dict[str, float]]] = {}
    cross: dict[str, dict[tuple[str, str], torch.Tensor]] = {"source's first frame (no pose following)": {},
                                                             "feed-forward": {}, "fine-tuned": {}}
    finetune_seconds, finetune_steps, grid_rows = [], 0, []
    for number, (a, folder) in enumerate(zip(names, people)):
        references, held, _ = data[a]
        others = [name for name in names if name != a]
        copy = references[:1].expand_as(held)
        mean_face = torch.cat([data[o][0] for o in others]).mean(0, keepdim=True).expand_as(held)
        feed_forward = meta.reenact(references, held)
        wrong_person = meta.reenact(data[others[number % len(others)]][0], held)
        with torch.enable_grad():  # evaluate_setting runs under no_grad; fitting needs gradients
            tuned, finetune_steps, seconds = fine_tune(args, out, meta_ckpt, folder, setting)
        fine_tuned = tuned.reconstruct_batch({"driving": held})
        finetune_seconds.append(seconds)
        reconstruction[a] = {"copy first of the T frames": scores(copy, held),
                             "mean face (other people's frames)": scores(mean_face, held),
                             "feed-forward, another person's references": scores(wrong_person, held),
                             "feed-forward (before fine-tuning)": scores(feed_forward, held),
                             "fine-tuned": scores(fine_tuned, held)}
        print(f"aug {setting} {a}: " + ", ".join(f"{method.split(' (')[0]} {value['PSNR']:.2f} dB"
                                                 for method, value in reconstruction[a].items())
              + f" (fine-tuning {seconds:.0f} s)", flush=True)
        for b in names:
            if b == a:  # leakage only from cross-person pairs
                continue
            driving = data[b][1][:args.leak_frames]
            cross["source's first frame (no pose following)"][(a, b)] = references[:1].expand_as(driving)
            cross["feed-forward"][(a, b)] = meta.reenact(references, driving)
            cross["fine-tuned"][(a, b)] = tuned.reenact(driving)
        b = names[(names.index(a) + 1) % len(names)]
        if b != a:
            driving = data[b][1][:4]
            grid_rows.append(grid_image(driving, references[:1].expand_as(driving),
                                        cross["feed-forward"][(a, b)][:4], cross["fine-tuned"][(a, b)][:4]))
    if grid_rows:
        Image.fromarray(np.concatenate(grid_rows)).save(out / f"grid_aug_{setting}.png")

    start = time.perf_counter()
    # Pose following: the judge's landmarks of each cross-person output against the driver's exact landmarks.
    pose_following = {method: sum(judge.pose_error(frames, data[b][2][:len(frames)])
                                  for (_, b), frames in outputs.items()) / len(outputs)
                      for method, outputs in cross.items() if outputs}
    leakage: dict[str, dict[str, dict[str, float]]] = {}
    for kind, embed in features.items():
        leakage[kind] = {}
        for method, outputs in cross.items():
            to_source, to_driver = [], []
            for (a, b), frames in outputs.items():
                descriptors = embed(frames)
                to_source.append(distances(descriptors, embed.centres[a]))
                to_driver.append(distances(descriptors, embed.centres[b]))
            leakage[kind][method] = leakage_row(to_source, to_driver)
    return {"reconstruction": reconstruction, "leakage": leakage, "pose_following": pose_following,
            "finetune_steps": finetune_steps,
            "finetune_seconds": finetune_seconds, "leakage_seconds": time.perf_counter() - start}


def real_frames_reference(embed: IdentityFeatures, names: list[str], args: argparse.Namespace) -> dict:
    """Leakage rows of real frames: the source's own frames (no leak) and the driver's frames (a full leak)."""
    own = {"source": ([], []), "driver": ([], [])}
    for a, b in itertools.permutations(names, 2):
        for role, person in (("source", a), ("driver", b)):
            descriptors = embed.real[person][:args.leak_frames]
            own[role][0].append(distances(descriptors, embed.centres[a]))
            own[role][1].append(distances(descriptors, embed.centres[b]))
    return {"real frames of the source (no leak)": leakage_row(*own["source"]),
            "real frames of the driver (full leak)": leakage_row(*own["driver"])}


def print_pose_following(results: dict) -> None:
    print("\nPose following, cross-person: distance (px, 64-px frames) between the landmarks the synthetic judge reads "
          "from each output and the driver's exact landmarks; the judge's own error on the drivers' real frames "
          f"is {results['judge_pose_error_on_real_frames']:.2f} px:\n")
    print("| augment_pose | outputs | landmark error px |")
    print("|---|---|---:|")
    for setting, result in results["settings"].items():
        for method, value in result["pose_following"].items():
            print(f"| {setting} | {method} | {value:.2f} |")


def print_tables(results: dict, args: argparse.Namespace) -> None:
    print("\nReconstruction of held-out frames (mean over people):\n")
    print("| augment_pose | method | PSNR dB | SSIM | L1 |")
    print("|---|---|---:|---:|---:|")
    for setting, result in results["settings"].items():
        for method, value in result["mean_reconstruction"].items():
            label = f"{method} ({result['finetune_steps']} G steps)" if method == "fine-tuned" else method
            print(f"| {setting} | {label} | {value['PSNR']:.2f} | {value['SSIM']:.3f} | {value['L1']:.4f} |")
    for kind, title in results["features"].items():
        print(f"\nIdentity leakage, cross-person (source A != driver B, {args.people * (args.people - 1)} pairs, up "
              f"to {args.leak_frames} frames each), {title}, of each output to the mean of A's and of B's real "
              "held-out frames; lower d(source) and a higher share closer to the source = less leakage:\n")
        print("| augment_pose | outputs | d(output, source A) | d(output, driver B) | closer to source | "
              "frames with features |")
        print("|---|---|---:|---:|---:|---:|")
        rows = [("real", method, row) for method, row in results["real_frames"][kind].items()]
        rows += [(setting, method, row) for setting, result in results["settings"].items()
                 for method, row in result["leakage"][kind].items()]
        for setting, method, row in rows:
            print(f"| {setting} | {method} | {row['d_source']:.3f} | {row['d_driver']:.3f} | "
                  f"{row['closer_to_source']:.0%} | {row['faces']}/{row['frames']} |")
        spread = results["real_spread"][kind]
        print(f"\nreal held-out frames: same-person distance to own mean {spread['same']:.3f}, to another person's "
              f"mean {spread['other']:.3f}; features in {spread['faces']}/{spread['frames']} real frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/lpd_learning", help="work folder (shards, logs, checkpoints, PNGs)")
    parser.add_argument("--meta-steps", type=int, default=300,
                        help="meta-learning budget in generator steps, unless --meta-minutes")
    parser.add_argument("--meta-minutes", type=float, default=0.0,
                        help="meta-learning budget in minutes per setting (instead of --meta-steps)")
    parser.add_argument("--finetune-steps", type=int, default=100, help="fine-tuning generator steps per person")
    parser.add_argument("--people", type=int, default=4, help="held-out people")
    parser.add_argument("--identities", type=int, default=32, help="meta-training people (2 clips each)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--shots", type=int, default=8, help="T: frames of each held-out person to fine-tune on")
    parser.add_argument("--held-out", type=int, default=8, help="held-out frames evaluated per person")
    parser.add_argument("--leak-frames", type=int, default=8, help="driving frames per (source, driver) pair")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers of the meta fit")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-on", help="reuse this meta checkpoint (augment_pose on) instead of meta-learning")
    parser.add_argument("--checkpoint-off", help="reuse this meta checkpoint (augment_pose off)")
    parser.add_argument("--export", help="also write the meta-learned model (augment_pose on) as a small checkpoint "
                                         "here: encoders, generator and D, no VGG, no optimizer state")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                        help="augment_pose settings to run (default both; `--settings on` with --export ships one)")
    parser.add_argument("overrides", nargs="*", help="extra meta-learning `talkinghead fit` arguments after --")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train, people = write_data(args, out)
    names = [folder.name for folder in people]
    data = {folder.name: person_data(folder, args) for folder in people}
    print(f"data: {time.perf_counter() - started:.0f} s", flush=True)

    # Real frames' descriptors once: the source/driver centres and the reference rows of the leakage table.
    start = time.perf_counter()
    judge = Judge()
    features: dict[str, IdentityFeatures] = {"judge": JudgeEmbeddings(data, judge), "dlib": Descriptors(data)}
    results: dict = {"features": {kind: embed.name for kind, embed in features.items()}, "real_spread": {},
                     "real_frames": {}, "settings": {}, "judge_figures": judge.figures,
                     "judge_pose_error_on_real_frames": sum(judge.pose_error(held, landmarks)
                                                            for _, held, landmarks in data.values()) / len(data)}
    for kind, embed in features.items():
        same = torch.cat([distances(embed.real[a], embed.centres[a]) for a in names])
        other = torch.cat([distances(embed.real[b], embed.centres[a]) for a, b in itertools.permutations(names, 2)])
        results["real_spread"][kind] = {"same": same[same.isfinite()].mean().item(),
                                        "other": other[other.isfinite()].mean().item(),
                                        "faces": int(same.isfinite().sum()), "frames": len(same)}
        results["real_frames"][kind] = real_frames_reference(embed, names, args)
    print(f"real-frame descriptors: {time.perf_counter() - start:.0f} s", flush=True)

    checkpoints = {"on": args.checkpoint_on, "off": args.checkpoint_off}
    for setting in args.settings:
        if checkpoints[setting]:
            meta_ckpt, meta_seconds = Path(checkpoints[setting]), None
            meta_steps = generator_steps(meta_ckpt)
        else:
            meta_ckpt, meta_steps, meta_seconds = meta_learn(args, out, train, setting)
        result = evaluate_setting(args, out, setting, meta_ckpt, people, data, features, judge)
        result.update(meta_steps=meta_steps, meta_seconds=meta_seconds, checkpoint=str(meta_ckpt),
                      mean_reconstruction={method: mean_of([r[method] for r in result["reconstruction"].values()])
                                           for method in next(iter(result["reconstruction"].values()))})
        results["settings"][setting] = result
        seconds = result["finetune_seconds"]
        meta_took = "reused checkpoint" if meta_seconds is None else f"{meta_seconds / 60:.1f} min"
        print(f"augment_pose {setting}: meta-learning {meta_steps} G steps ({meta_took}); fine-tuning "
              f"{result['finetune_steps']} G steps, {sum(seconds) / len(seconds):.0f} s per person; "
              f"leakage descriptors {result['leakage_seconds']:.0f} s", flush=True)

    total = time.perf_counter() - started
    results["total_seconds"] = total
    results["args"] = vars(args)
    meta = ", ".join(f"augment_pose {setting} {result['meta_steps']} G steps"
                     for setting, result in results["settings"].items())
    print(f"\nLPD tiny, 64 px synthetic heads: meta-learned ({meta}) on {args.identities} people x 2 clips x "
          f"{args.frames} frames; {args.people} held-out people, T={args.shots}, {args.held_out} held-out frames "
          f"each; {torch.get_num_threads()} threads; total wall time {total / 60:.1f} min")
    print_tables(results, args)
    print_pose_following(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print("\ngrids (driver frame | source's first frame | feed-forward | fine-tuned): "
          + ", ".join(str(out / f"grid_aug_{setting}.png") for setting in args.settings))


if __name__ == "__main__":
    main()
