"""Does tiny OSFV learn? Trains the CPU recipe on synthetic shards for a fixed budget and evaluates held-out people.

The recipe is lightning_configs/osfv/tiny.yaml layered with cpu_recipe.yaml (which says where it departs from the
paper); extra `talkinghead fit` arguments override it.

Prints, on people never trained on (a disjoint identity range): same-identity reconstruction on deterministic
pairs against copying the source frame (all pairs, the large-motion pairs, and on the person's mask), and free
view against the exact truth (the held-out person re-rendered by the synthetic renderer with the head turned by
the requested yaw) against "no turn"; and writes the held-out learning curve (learning_curve.png)::

    python benchmarks/osfv_learning.py --minutes 10 --out /tmp/osfv_learning
    python benchmarks/osfv_learning.py --steps 1200 --out /tmp/osfv_learning   # a budget in steps, not time
    python benchmarks/osfv_learning.py --out /tmp/osfv_learning --checkpoint CKPT   # evaluate a saved checkpoint
    python benchmarks/osfv_learning.py --minutes 30 --identities 192 --out /tmp/osfv_tp --export talkinghead/assets/osfv_tiny.ckpt
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
from talkinghead.freeview import format_table, score_free_view, score_reconstruction
from talkinghead.evaluation import load_model
from talkinghead.lightning.osfv import OSFVModule
from talkinghead.lightning.slim import write_inference_checkpoint


# Held-out people for the report: an identity range that neither training nor the recipe's tuning ever saw
# (benchmarks/osfv_diagnose.py tunes on 100_000.., the demo shows 400_000..).
HELD_OUT = 300_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (wall clock), unless --steps")
    parser.add_argument("--steps", type=int, default=0,
                        help="training budget in generator steps instead of minutes (independent of machine load)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--out", default="/tmp/osfv_learning", help="work folder (shards, logs, checkpoint)")
    parser.add_argument("--identities", type=int, default=48, help="training people")
    parser.add_argument("--val-identities", type=int, default=16, help="held-out people (two clips each, one pair per clip)")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="evaluate this checkpoint of a run in --out instead of training")
    parser.add_argument("--json", help="also write the figures (steps, minutes, both tables) as JSON here")
    parser.add_argument("--export", help="also write the trained model as a small inference-only checkpoint here "
                        "(how talkinghead/assets/osfv_tiny.ckpt, the embedded default, is made)")
    # Anything else: `talkinghead fit` arguments, e.g. --model.init_args.loss_weights.gan=1 (after an optional --).
    args, overrides = parser.parse_known_args()
    args.overrides = [o for o in overrides if o != "--"]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    train, val = out / "train", out / "val"
    if not train.exists():
        write_synthetic_shards(train, identities=args.identities, clips_per_identity=2, frames=args.frames, size=64,
                               seed=args.seed, clips_per_shard=4)
        write_synthetic_shards(val, identities=args.val_identities, first_identity=HELD_OUT, clips_per_identity=2,
                               frames=args.frames, size=64, seed=args.seed, clips_per_shard=1)
    configs = resources.files("talkinghead.lightning_configs") / "osfv"
    seconds = int(args.minutes * 60)
    budget = [] if args.steps else [
        f"--trainer.max_time=00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"]
    batch = [] if args.batch_size is None else [f"--data.init_args.batch_size={args.batch_size}"]
    cli = TalkingHeadCLI(
        args=[
            "--config", str(configs / "tiny.yaml"), "--config", str(configs / "cpu_recipe.yaml"),
            f"--data.init_args.shards={train}", f"--data.init_args.val_shards={val}",
            f"--data.init_args.val_samples={2 * args.val_identities}", *batch, "--data.init_args.samples_per_epoch=800",
            *budget, "--trainer.max_steps=-1", "--trainer.max_epochs=-1", "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.default_root_dir={out / 'logs'}", f"--seed_everything={args.seed}",
            *args.overrides,
        ],
        run=False,
    )
    # Lightning's global_step counts optimizer steps: G and D steps, or G steps alone when no term reads D.
    per_batch = cli.model.optimizer_steps_per_batch
    if args.checkpoint:
        model, trained = load_model(args.checkpoint), None
        steps = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["global_step"] // per_batch
    else:
        if args.steps:
            cli.trainer.fit_loop.epoch_loop.max_steps = per_batch * args.steps
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        model, trained = cli.model, time.perf_counter() - start
        steps = cli.trainer.global_step // per_batch
        if args.export:
            written = write_inference_checkpoint(model, args.export, cli.trainer.global_step,
                                                 {"image_size": cli.datamodule.image_size})
            print(f"inference-only checkpoint: {written}")
    cli.datamodule.setup("validate")
    figures = report(model, cli.datamodule.val_dataloader(), steps, trained, args, val)
    for metrics in sorted(out.glob("lightning_logs/version_*/metrics.csv"))[-1:]:
        figures["extrapolation"] = learning_curve(metrics, out / "learning_curve.png", per_batch,
                                                  None if trained is None else steps / (trained / 60))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, allow_nan=True))


def report(model: OSFVModule, batches: Iterable[dict], steps: int, trained: float | None,
           args: argparse.Namespace, val: Path) -> dict:
    """Prints held-out reconstruction against copying the source, and free view against the exact truth; returns
    the figures ({"generator_steps", "train_minutes", "reconstruction", "free_view"})."""
    model = model.eval()
    print(f"\ntrained {steps} generator steps"
          + ("" if trained is None else f" in {trained / 60:.1f} min on {torch.get_num_threads()} threads"))
    print(f"held-out same-identity reconstruction: {2 * args.val_identities} deterministic pairs "
          f"(frame 0 drives a fixed other frame) of {args.val_identities} people never trained on")
    reconstruction = score_reconstruction(model, batches)
    print(format_table(reconstruction))
    print("free view against the exact truth (the held-out person re-rendered with the head turned), "
          f"one source frame of each of {2 * args.val_identities} held-out clips; fg = the person's mask:")
    free_view = score_free_view(model, str(val), num_clips=2 * args.val_identities)
    print(format_table(free_view))
    return {"generator_steps": steps, "train_minutes": None if trained is None else trained / 60,
            "reconstruction": reconstruction, "free_view": free_view}


def learning_curve(metrics_csv: Path, out: Path, per_batch: int, steps_per_minute: float | None) -> dict:
    """Plots val/psnr (and copying the source) against generator steps from a CSVLogger metrics file, and
    extrapolates when the validation L1 and PSNR would reach copying the source (see :func:`extrapolate`)."""
    import csv

    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get("val/psnr")]
    if not rows:
        return {}
    steps = [int(r["step"]) // per_batch for r in rows]
    plot_curve([(n, float(r["val/psnr"]), float(r["val/copy_source/psnr"])) for n, r in zip(steps, rows)], out)
    found = {}
    for name, better in (("l1", "lower"), ("psnr", "higher")):
        values = [float(r[f"val/{name}"]) for r in rows]
        target = float(rows[-1][f"val/copy_source/{name}"])
        n = extrapolate(steps, values, target, log_values=name == "l1")
        found[name] = {"copy_source": target, "last": values[-1], "steps_to_copy": n}
        when = ("not on this curve's trend" if n is None else f"~{n} generator steps" + (
            "" if steps_per_minute is None else f" (~{n / steps_per_minute:.0f} min at this run's pace)"))
        print(f"val/{name}: {values[-1]:.4g} after {steps[-1]} steps, copy {target:.4g}; a power law through the "
              f"later half of the curve reaches copy at {when}")
    return found


def extrapolate(steps: list[int], values: list[float], target: float, log_values: bool) -> int | None:
    """Where a power law fitted to the later half of a learning curve meets ``target``: L1 = a n^-b (log-log fit)
    or PSNR = a + b log n. Optimistic (no plateau term): a lower bound on the steps needed, or None when the trend
    does not get there (or already has: then the last step)."""
    import numpy as np

    points = [(step, value) for step, value in zip(steps, values) if step > 0]  # log n needs n >= 1
    if len({step for step, _ in points}) < 2:  # a line needs two steps (a very short run has one or none)
        return None
    half = max(2, len(points) // 2)
    n = np.log(np.asarray([step for step, _ in points[-half:]], dtype=float))
    v = np.asarray([value for _, value in points[-half:]], dtype=float)
    if log_values:
        slope, intercept = np.polyfit(n, np.log(v), 1)
        if values[-1] <= target:
            return steps[-1]
        return None if slope >= 0 else int(np.exp((np.log(target) - intercept) / slope))
    slope, intercept = np.polyfit(n, v, 1)
    if values[-1] >= target:
        return steps[-1]
    return None if slope <= 0 else int(np.exp((target - intercept) / slope))


def plot_curve(points: list[tuple[int, float, float]], out: Path,
               title: str = "held-out val PSNR: tiny OSFV (red) vs copying the source (grey)") -> None:
    """A PNG of (generator step, model PSNR, copy-source PSNR) points."""
    from PIL import Image, ImageDraw

    steps, model, copy = zip(*sorted(points))
    width, height, pad = 640, 360, 48
    low, high = min(model + copy) - 0.5, max(model + copy) + 0.5
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def xy(step: int, value: float) -> tuple[float, float]:
        return (pad + (width - 2 * pad) * step / max(steps[-1], 1),
                height - pad - (height - 2 * pad) * (value - low) / (high - low))

    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    for value in range(int(low) + 1, int(high) + 1):
        draw.text((4, xy(0, value)[1] - 6), f"{value} dB", fill="black")
    draw.text((pad, height - pad + 8), "0", fill="black")
    draw.text((width - pad - 60, height - pad + 8), f"{steps[-1]} G steps", fill="black")
    draw.line([xy(s, v) for s, v in zip(steps, copy)], fill=(150, 150, 150), width=2)
    draw.line([xy(s, v) for s, v in zip(steps, model)], fill=(200, 30, 30), width=2)
    for s, v in zip(steps, model):
        draw.ellipse([xy(s, v)[0] - 2, xy(s, v)[1] - 2, xy(s, v)[0] + 2, xy(s, v)[1] + 2], fill=(200, 30, 30))
    draw.text((pad + 8, pad + 6), title, fill="black")
    image.save(out)
    print(f"learning curve: {out}")


if __name__ == "__main__":
    main()
