"""Does tiny FSTH learn? Meta-learns it on synthetic shards, then evaluates few-shot synthesis of held-out people.

Zakharov et al. (ICCV 2019): meta-learning (tiny_meta.yaml) for a CPU budget, then for each held-out person and each
shot count T, (a) the feed-forward result of the meta-learned model (E embeds the T frames, G draws the person
from landmarks) and (b) the result after fine-tuning G and D to the T frames (tiny_finetune.yaml), both on the same
held-out frames of that person (``PersonDataModule.val_dataloader``: frames not among the T), against
"copy the first of the T frames" and "mean of the T frames" baselines, and two that say whether the
feed-forward result depends on the person's references at all: a generic "mean face" (the mean of the other
held-out people's T frames) and the feed-forward result drawn with ANOTHER held-out person's references. Frames
have their background removed, as tiny_meta.yaml / tiny_finetune.yaml train on them. Identity and pose are scored by
the synthetic judge (talkinghead/assets/synthetic_judge.safetensors, benchmarks/identity_judge.py), which no model
trains with: cosine similarity of each output to the person's identity (their real held-out frames) and to the
other held-out people's, the share identified as the right person, and the distance between the landmarks the
judge reads from the output and the driving landmarks. Prints a markdown table (PSNR, SSIM, L1
averaged over people) and writes a PNG per T (held-out frame | copy | feed-forward | fine-tuned) into --out::

    python benchmarks/fsth_learning.py --meta-minutes 8 --finetune-steps 100 --out /tmp/fsth_learning
    python benchmarks/fsth_learning.py --meta-steps 600 --out /tmp/fsth_learning     # budget in G steps
    python benchmarks/fsth_learning.py --checkpoint /tmp/fsth_learning/meta.ckpt     # reuse a meta-learned model
    python benchmarks/fsth_learning.py --meta-steps 300 -- --model.init_args.loss_weights.l1=0   # meta overrides
    python benchmarks/fsth_learning.py --meta-minutes 30 --export talkinghead/assets/fsth_tiny_meta.ckpt  # ship it

``--export`` writes the meta-learned model as a small checkpoint (embedder, generator and the meta-learned
discriminator that fine-tuning starts from; no VGG, no optimizer state), loadable by ``load_from_checkpoint``
and as ``init_from`` of tiny_finetune.yaml.

Options --finetune-lr and --finetune-override change the fine-tuning stage (e.g. --finetune-override
--model.init_args.loss_weights.adversarial=0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from few_shot_common import Judge, config_path, duration, export_meta, generator_steps, scores, write_data

from talkinghead.callbacks.samples import grid_image
from talkinghead.cli import TalkingHeadCLI
from talkinghead.datamodules.talking_heads import PersonDataModule
from talkinghead.lightning.finetune import load_meta_module
from talkinghead.lightning.fsth import FSTHModule

SHOTS = (1, 8)


def meta_learn(args: argparse.Namespace, out: Path, train: Path) -> tuple[Path, int, float]:
    """Runs the meta-learning fit; returns (checkpoint, generator steps, seconds)."""
    budget = [] if args.meta_steps else [f"--trainer.max_time={duration(int(args.meta_minutes * 60))}"]
    cli = TalkingHeadCLI(
        args=[
            "--config", str(config_path("fsth", "tiny_meta.yaml")),
            f"--data.init_args.shards={train}", f"--data.init_args.num_workers={args.workers}",
            *budget, "--trainer.max_steps=-1", "--trainer.max_epochs=-1", "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.default_root_dir={out / 'meta'}", f"--seed_everything={args.seed}",
            *args.overrides,
        ],
        run=False,
    )
    per_batch = cli.model.optimizer_steps_per_batch  # global_step counts the G step and the D steps (2)
    if args.meta_steps:
        cli.trainer.fit_loop.epoch_loop.max_steps = per_batch * args.meta_steps
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = time.perf_counter() - start
    checkpoint = out / "meta.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    if args.export:
        export_meta(cli, args.export)
    global_step = cli.trainer.global_step
    batches = cli.trainer.fit_loop.total_batch_idx + 1
    print(f"meta-learning: global_step {global_step}, batches {batches} "
          f"(expected global_step = {per_batch} x batches = {per_batch * batches}), {seconds / 60:.1f} min")
    return checkpoint, global_step // per_batch, seconds


def person_data(folder: Path, shots: int, args: argparse.Namespace) -> tuple[PersonDataModule, dict, dict]:
    """The person's T frames (person_frames) and held-out frames (val_dataloader, concatenated)."""
    data = PersonDataModule(shards=str(folder), num_frames=shots, image_size=64, batch_size=8, num_workers=0,
                            val_samples=args.held_out, remove_background=True)  # as the tiny configs' data
    data.setup("fit")
    person = data.person_frames()
    batches = list(data.val_dataloader())
    held = {name: torch.cat([b[name] for b in batches]) for name in ("driving", "driving_landmarks")}
    return data, person, held


def fine_tune(args: argparse.Namespace, out: Path, meta: Path, folder: Path, shots: int):
    """Fine-tunes to the person's T frames; returns (module, generator steps, seconds)."""
    name = f"{folder.name}_T{shots}"
    extra = []
    if args.finetune_lr:
        extra = [f"--model.init_args.generator_optimizer.init_args.lr={args.finetune_lr}",
                 f"--model.init_args.discriminator_optimizer.init_args.lr={args.finetune_lr}"]
    cli = TalkingHeadCLI(
        args=[
            "--config", str(config_path("fsth", "tiny_finetune.yaml")),
            f"--model.init_args.init_from={meta}",
            f"--data.init_args.shards={folder}", f"--data.init_args.num_frames={shots}",
            f"--data.init_args.val_samples={args.held_out}",
            "--trainer.max_epochs=-1",
            "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={out / 'finetune' / name}", f"--seed_everything={args.seed}",
            *extra, *args.finetune_override,
        ],
        run=False,
    )
    per_batch = cli.model.optimizer_steps_per_batch  # one G step alone when an override drops every D term
    cli.trainer.fit_loop.epoch_loop.max_steps = per_batch * args.finetune_steps
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli.model.eval(), cli.trainer.global_step // per_batch, time.perf_counter() - start


@torch.no_grad()
def embedding_report(meta: FSTHModule, people: list[Path], args: argparse.Namespace) -> None:
    """Whether E still tells people apart: mean |e| and the spread of e across held-out people (0 = collapsed)."""
    embeddings = []
    for folder in people:
        _, person, _ = person_data(folder, 8, args)
        embeddings.append(meta.video_embedding(meta.networks, person["references"], person["references_landmarks"]))
    e = torch.cat(embeddings)
    print(f"embedder: mean |e| {e.abs().mean():.4f}, {(e > 0).float().mean():.0%} of entries > 0, "
          f"std across held-out people {e.std(0).mean():.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/fsth_learning", help="work folder (shards, logs, checkpoints, PNGs)")
    parser.add_argument("--meta-minutes", type=float, default=8.0, help="meta-learning budget, unless --meta-steps")
    parser.add_argument("--meta-steps", type=int, default=0, help="meta-learning budget in generator steps")
    parser.add_argument("--finetune-steps", type=int, default=100, help="fine-tuning generator steps per person/T")
    parser.add_argument("--finetune-lr", type=float, default=0.0, help="G and D lr of fine-tuning (0: the config's)")
    parser.add_argument("--finetune-override", action="append", default=[],
                        help="extra fine-tuning fit argument (repeatable), e.g. --finetune-override="
                             "--model.init_args.loss_weights.adversarial=0")
    parser.add_argument("--people", type=int, default=4, help="held-out people")
    parser.add_argument("--identities", type=int, default=32, help="meta-training people (2 clips each)")
    parser.add_argument("--frames", type=int, default=24, help="frames per clip")
    parser.add_argument("--held-out", type=int, default=8, help="held-out frames evaluated per person")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers of the meta fit")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="reuse this meta-learning checkpoint instead of meta-learning")
    parser.add_argument("--export", help="also write the meta-learned model as a small checkpoint here")
    parser.add_argument("overrides", nargs="*", help="extra meta-learning `talkinghead fit` arguments after --")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train, people = write_data(args, out)

    if args.checkpoint and args.export:
        parser.error("--export writes the checkpoint of a meta-learning run; drop --checkpoint")
    if args.checkpoint:
        meta_ckpt, meta_seconds = Path(args.checkpoint), None
        meta_steps = generator_steps(meta_ckpt)
    else:
        meta_ckpt, meta_steps, meta_seconds = meta_learn(args, out, train)
    meta, _ = load_meta_module(FSTHModule, str(meta_ckpt), None)  # the same weights fine-tuning starts from
    meta.eval()

    embedding_report(meta, people, args)
    judge = Judge()
    rows: dict[tuple[int, str], list[dict[str, float]]] = {}
    judged: dict[tuple[int, str], list[dict[str, float]]] = {}
    finetune_seconds: dict[int, list[float]] = {}
    for shots in SHOTS:
        grid_rows = []
        persons = {folder: person_data(folder, shots, args)[1:] for folder in people}
        centroids = {folder.name: judge.centroid(persons[folder][1]["driving"]) for folder in people}
        for number, folder in enumerate(people):
            person, held = persons[folder]
            references, landmarks = person["references"][0], person["references_landmarks"][0]
            others = [persons[f][0] for f in people if f != folder]
            other = others[number % len(others)]  # another held-out person's T frames
            target = held["driving"]
            copy = references[:1].expand_as(target)
            mean = references.mean(0, keepdim=True).expand_as(target)
            mean_face = torch.cat([o["references"][0] for o in others]).mean(0, keepdim=True).expand_as(target)
            feed_forward = meta.reenact(references, landmarks, held["driving_landmarks"])
            wrong_person = meta.reenact(other["references"][0], other["references_landmarks"][0],
                                        held["driving_landmarks"])
            tuned, steps, seconds = fine_tune(args, out, meta_ckpt, folder, shots)
            batch = {"driving": target, "driving_landmarks": held["driving_landmarks"]}
            fine_tuned = tuned.reconstruct_batch(batch)
            finetune_seconds.setdefault(shots, []).append(seconds)
            for method, prediction in (("real held-out frames (the judge's reference)", target),
                                       ("copy first of the T frames", copy), ("mean of the T frames", mean),
                                       ("mean face (other people's frames)", mean_face),
                                       ("feed-forward, another person's references", wrong_person),
                                       ("feed-forward (meta only)", feed_forward),
                                       (f"fine-tuned ({steps} G steps)", fine_tuned)):
                judged.setdefault((shots, method), []).append(
                    judge.identity_and_pose(prediction, folder.name, centroids, held["driving_landmarks"]))
                if prediction is not target:
                    rows.setdefault((shots, method), []).append(scores(prediction, target))
            print(f"T={shots} {folder.name}: " + ", ".join(
                f"{method.split(' (')[0]} {values[-1]['PSNR']:.2f} dB"
                for (t, method), values in rows.items() if t == shots), flush=True)
            grid_rows.append(grid_image(target[:4], copy[:4], feed_forward[:4], fine_tuned[:4]))
        from PIL import Image
        import numpy as np

        Image.fromarray(np.concatenate(grid_rows)).save(out / f"grid_T{shots}.png")

    total = time.perf_counter() - started
    meta_took = "reused checkpoint" if meta_seconds is None else f"{meta_seconds / 60:.1f} min"
    print(f"\nFSTH tiny, 64 px synthetic heads: meta-learned {meta_steps} G steps ({meta_took}) on "
          f"{args.identities} people x 2 clips; {args.people} held-out people, {args.held_out} held-out frames each; "
          f"{torch.get_num_threads()} threads")
    print(f"fine-tuning {args.finetune_steps} G steps per person and T: "
          + ", ".join(f"T={t} {sum(s) / len(s):.0f} s each" for t, s in finetune_seconds.items())
          + f"; total wall time {total / 60:.1f} min\n")
    print("| T | method | PSNR dB | SSIM | L1 |")
    print("|---|---|---:|---:|---:|")
    summary = {}
    for (shots, method), values in rows.items():
        mean_of = {key: sum(v[key] for v in values) / len(values) for key in ("PSNR", "SSIM", "L1")}
        summary[f"T={shots} {method}"] = mean_of
        print(f"| {shots} | {method} | {mean_of['PSNR']:.2f} | {mean_of['SSIM']:.3f} | {mean_of['L1']:.4f} |")
    print(f"\nIdentity and pose by the synthetic judge (cosine to the person's / other held-out people's identity, "
          f"share identified among {len(people)} people, judge landmarks vs driving landmarks in px):\n")
    print("| T | method | cos own | cos others | identified | pose error px |")
    print("|---|---|---:|---:|---:|---:|")
    judge_summary = {}
    for (shots, method), values in judged.items():
        mean_of = {key: sum(v[key] for v in values) / len(values) for key in values[0]}
        judge_summary[f"T={shots} {method}"] = mean_of
        print(f"| {shots} | {method} | {mean_of['cos_own']:.3f} | {mean_of['cos_others']:.3f} | "
              f"{mean_of['identified']:.0%} | {mean_of['pose_px']:.2f} |")
    (out / "results.json").write_text(json.dumps({"meta_steps": meta_steps, "meta_seconds": meta_seconds,
                                                  "total_seconds": total, "rows": summary,
                                                  "judge": judge_summary, "judge_figures": judge.figures},
                                                 indent=2))
    print(f"\ngrids (held-out frame | copy first | feed-forward | fine-tuned): "
          + ", ".join(str(out / f"grid_T{t}.png") for t in SHOTS))


if __name__ == "__main__":
    main()
