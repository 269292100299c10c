"""Training-data throughput of the shard DataModules: items/s from mp4 shards per worker count and items_per_clip.

    python benchmarks/data_throughput.py --out /tmp/throughput                      # synthetic 256-px mp4 shards
    python benchmarks/data_throughput.py --shards DIR --workers 0,1,2,4 --items-per-clip 1,4
    python benchmarks/data_throughput.py --out /tmp/throughput --modules pairs --transfer float32,uint8

Without ``--shards`` it first writes synthetic talking-head shards with ``talkinghead synth --codec mp4`` (H.264,
as preprocess writes real videos) into OUT/shards, ``--clips`` clips of ``--frames`` frames at ``--size`` px. For
each DataModule (``pairs``: PairsDataModule, OSFV's (source, driving) items; ``few_shot``: FewShotDataModule with
K = ``--references``, FSTH's and LPD's), each ``items_per_clip`` (1: one clip decoded per item, the default; k:
one decode per clip for k items) and each worker count, it iterates the training loader, drops the first
``--skip`` batches (worker start-up, the shuffle buffer filling) and prints items/s over the next ``--batches``.
Items are augmented as the paper configs train (flip, colour jitter 0.1/0.1/0.1/0.02; ``--no-color-jitter`` for
none). ``--transfer uint8`` measures ``uint8_transfer: true``: the workers send uint8 images with the jitter only
drawn, and the DataModule's on_after_batch_transfer converts and jitters on the training device; that hook's
CPU time per batch is printed apart (on a GPU it runs there, batched).

The model's side of the comparison: a training step consumes ``batch`` items per step time, so a configuration
that streams R items/s per worker keeps up with a step time down to ``batch / R`` per worker, and with 3x margin
down to ``3 batch / R`` ("3x step ms" in the table: the shortest step time one worker feeds three times over).
``--step-ms`` adds the workers a given step time needs at that margin (e.g. a GPU figure from device_check.py).
Figures depend on the machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path


def write_shards(out: Path, args: argparse.Namespace) -> Path:
    shards = out / "shards"
    if any(shards.glob("*.tar")):
        return shards  # a second run reuses them
    identities = max(1, args.clips // 2)
    command = [sys.executable, "-m", "talkinghead", "synth", "--out", str(shards), "--identities", str(identities),
               "--clips-per-identity", "2", "--frames", str(args.frames), "--size", str(args.size), "--codec", "mp4",
               "--clips-per-shard", "4", "--quiet"]
    print("writing shards:", " ".join(command[2:]), file=sys.stderr)
    subprocess.run(command, check=True)
    return shards


def measure(kind: str, shards: Path, args: argparse.Namespace, workers: int, items_per_clip: int,
            transfer: str) -> tuple[float, float]:
    """Items per second of one configuration's training loader, and its batch hook's CPU ms per batch."""
    from talkinghead.datamodules.talking_heads import FewShotDataModule, PairsDataModule
    from talkinghead.datamodules.transforms import ColorJitter

    common = dict(shards=str(shards), image_size=args.size, batch_size=args.batch, num_workers=workers,
                  samples_per_epoch=args.batch * (args.skip + args.batches + 2) * max(1, workers),
                  items_per_clip=items_per_clip, seed=0, uint8_transfer=transfer == "uint8",
                  color_jitter=None if args.no_color_jitter else ColorJitter(0.1, 0.1, 0.1, 0.02))
    data = (PairsDataModule(**common) if kind == "pairs"
            else FewShotDataModule(**common, num_references=args.references))
    data.setup("fit")
    loader = iter(data.train_dataloader())
    for _ in range(args.skip):
        next(loader)
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(loader)
    seconds = time.perf_counter() - start
    del loader
    start = time.perf_counter()
    for _ in range(5):
        data.on_after_batch_transfer(batch, 0)
    return args.batches * args.batch / seconds, (time.perf_counter() - start) / 5 * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/data_throughput", help="folder for the synthetic shards")
    parser.add_argument("--shards", help="existing shards to read instead of synthetic ones")
    parser.add_argument("--size", type=int, default=256, help="image side of the items (and of synthetic shards)")
    parser.add_argument("--clips", type=int, default=16, help="synthetic clips to write")
    parser.add_argument("--frames", type=int, default=48, help="frames per synthetic clip")
    parser.add_argument("--modules", default="pairs,few_shot", help="pairs and/or few_shot")
    parser.add_argument("--workers", default="0,1,2,4", help="DataLoader worker counts")
    parser.add_argument("--items-per-clip", default="1,4", help="items made from each clip read")
    parser.add_argument("--references", type=int, default=8, help="K of the few-shot items")
    parser.add_argument("--transfer", default="float32", help="float32 and/or uint8 (the uint8_transfer option)")
    parser.add_argument("--no-color-jitter", action="store_true", help="items without the paper configs' jitter")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per configuration")
    parser.add_argument("--skip", type=int, default=3, help="untimed batches first")
    parser.add_argument("--step-ms", type=float, help="a model step time to size the workers for (3x margin)")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shards = Path(args.shards) if args.shards else write_shards(out, args)
    print(f"\n{shards}: {args.size} px items, batch {args.batch}, {args.batches} timed batches "
          f"(after {args.skip}); few-shot K = {args.references}; "
          f"{'no colour jitter' if args.no_color_jitter else 'colour jitter 0.1/0.1/0.1/0.02'}")
    header = (f"  {'module':<9} {'transfer':>8} {'items/clip':>10} {'workers':>7} {'items/s':>8} {'per worker':>10} "
              f"{'3x step ms':>10} {'hook ms':>7}")
    print(header + ("  workers for --step-ms" if args.step_ms else ""))
    for kind in args.modules.split(","):
        for transfer in args.transfer.split(","):
            for items_per_clip in map(int, args.items_per_clip.split(",")):
                for workers in map(int, args.workers.split(",")):
                    rate, hook_ms = measure(kind, shards, args, workers, items_per_clip, transfer)
                    per_worker = rate / max(1, workers)
                    line = (f"  {kind:<9} {transfer:>8} {items_per_clip:>10} {workers:>7} {rate:>8.1f} "
                            f"{per_worker:>10.1f} {3e3 * args.batch / per_worker:>10.0f} {hook_ms:>7.1f}")
                    if args.step_ms:
                        line += f"  {math.ceil(3 * args.batch / (args.step_ms / 1e3) / per_worker):>21}"
                    print(line, flush=True)


if __name__ == "__main__":
    main()
