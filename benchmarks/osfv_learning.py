"""Does tiny OSFV learn? Trains it on synthetic shards for a fixed CPU budget and evaluates held-out people.

Prints, for same-identity reconstruction of held-out people (deterministic pairs), L1 and PSNR of the model
against the "copy the source frame" baseline, and for free view the error between a requested yaw and the yaw
that the trained head-pose estimator reads back from the output (plus that estimator's own error against the
synthetic ground truth, for scale)::

    python benchmarks/osfv_learning.py --minutes 10 --out /tmp/osfv_learning
    python benchmarks/osfv_learning.py --steps 1200 --out /tmp/osfv_learning   # a budget in steps, not time
    python benchmarks/osfv_learning.py --out /tmp/osfv_learning --checkpoint CKPT   # evaluate a saved checkpoint
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
from talkinghead.lightning.osfv import OSFVModule, psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (wall clock), unless --steps")
    parser.add_argument("--steps", type=int, default=0,
                        help="training budget in generator steps instead of minutes (independent of machine load)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="/tmp/osfv_learning", help="work folder (shards, logs, checkpoint)")
    parser.add_argument("--identities", type=int, default=48, help="training people")
    parser.add_argument("--val-identities", type=int, default=16, help="held-out people (two clips each, one pair per clip)")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="evaluate this checkpoint of a run in --out instead of training")
    parser.add_argument("overrides", nargs="*", help="extra `talkinghead fit` arguments after --, e.g. "
                        "-- --model.init_args.loss_weights.l1=0 to train with the paper's terms only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    train, val = out / "train", out / "val"
    if not train.exists():
        write_synthetic_shards(train, identities=args.identities, clips_per_identity=2, frames=args.frames, size=64,
                               seed=args.seed, clips_per_shard=4)
        write_synthetic_shards(val, identities=args.val_identities, first_identity=100_000, clips_per_identity=2,
                               frames=args.frames, size=64, seed=args.seed, clips_per_shard=1)
    config = resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml"
    seconds = int(args.minutes * 60)
    if args.steps:  # two optimizers: max_steps counts G and D steps
        budget = [f"--trainer.max_steps={2 * args.steps}"]
    else:
        budget = [f"--trainer.max_time=00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
                  "--trainer.max_steps=-1"]
    cli = TalkingHeadCLI(
        args=[
            "--config", str(config),
            f"--data.init_args.shards={train}", f"--data.init_args.val_shards={val}",
            f"--data.init_args.val_samples={2 * args.val_identities}", f"--data.init_args.batch_size={args.batch_size}",
            *budget, "--trainer.max_epochs=-1", "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.default_root_dir={out / 'logs'}", f"--seed_everything={args.seed}",
            *args.overrides,
        ],
        run=False,
    )
    if args.checkpoint:
        model, trained, steps = OSFVModule.load_from_checkpoint(args.checkpoint, map_location="cpu"), None, None
        steps = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["global_step"] // 2
    else:
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        model, trained = cli.model, time.perf_counter() - start
        steps = cli.trainer.global_step // 2  # two optimizers: global_step counts both
    cli.datamodule.setup("validate")
    report(model.eval(), cli.datamodule.val_dataloader(), steps, trained, args)


def report(model: OSFVModule, batches: Iterable[dict], steps: int, trained: float | None,
           args: argparse.Namespace) -> None:
    """Prints reconstruction against copying the source, and the free-view yaw error, on held-out pairs."""
    l1, l1_copy, quality, quality_copy, count = 0.0, 0.0, 0.0, 0.0, 0
    l1_auto, quality_auto = 0.0, 0.0
    yaw_errors, estimator_errors = {}, []
    for batch in batches:
        source, driving = batch["source"], batch["driving"]
        prediction = model.reconstruct(source, driving)
        n = len(source)
        l1 += torch.nn.functional.l1_loss(prediction, driving).item() * n
        l1_copy += torch.nn.functional.l1_loss(source, driving).item() * n
        quality += psnr(prediction, driving).item() * n
        quality_copy += psnr(source, driving).item() * n
        itself = model.reconstruct(driving, driving)  # no motion: how well F and G alone reproduce an image
        l1_auto += torch.nn.functional.l1_loss(itself, driving).item() * n
        quality_auto += psnr(itself, driving).item() * n
        count += n
        with model.evaluating() as networks, torch.no_grad():
            read = model.estimate_pose(networks, driving)
            estimator_errors += (read["yaw"] - batch["driving_pose"][:, 0]).abs().tolist()
            for image in source:
                base = model.estimate_pose(networks, image[None])["yaw"]
                for requested in (-20.0, -10.0, 10.0, 20.0):
                    output = model.animate(image, image[None], relative=True, yaw=requested)
                    seen = model.estimate_pose(networks, output)["yaw"]
                    yaw_errors.setdefault(requested, []).append((seen - base - requested).abs().item())

    took = "" if trained is None else f" in {trained / 60:.1f} min on {torch.get_num_threads()} threads"
    print(f"\ntrained {steps} generator steps{took}")
    print(f"held-out same-identity reconstruction, {count} deterministic pairs of {args.val_identities} new people "
          f"(batch {args.batch_size}):")
    print(f"  {'':<22}{'L1':>8}{'PSNR dB':>10}")
    print(f"  {'copy source frame':<22}{l1_copy / count:>8.4f}{quality_copy / count:>10.2f}")
    print(f"  {'tiny OSFV':<22}{l1 / count:>8.4f}{quality / count:>10.2f}")
    print(f"  {'(driving from itself)':<22}{l1_auto / count:>8.4f}{quality_auto / count:>10.2f}")
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print("free view: |yaw read back - (source yaw + requested)| by H on the output, degrees:")
    for requested, errors in yaw_errors.items():
        print(f"  requested {requested:+5.0f}: mean error {mean(errors):5.1f}")
    print(f"  (H's own yaw error on held-out driving frames vs exact labels: {mean(estimator_errors):.1f})")

if __name__ == "__main__":
    main()
