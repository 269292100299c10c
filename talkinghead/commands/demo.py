"""`talkinghead demo`: the embedded default job, runnable on a fresh CPU machine with no downloads.

Today it renders synthetic talking-head shards, reads them back through the shard reader and the pairs
DataModule, and writes a contact sheet of a few clips with their landmarks drawn. Training and animation
join it as the models land.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="output folder (replaced if it holds a demo)")
    parser.add_argument("--identities", type=int, default=8, help="synthetic people to render")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    from PIL import Image

    from talkinghead.datamodules.shard_format import decode_clip, expand_shards, iter_shard_samples
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
    from talkinghead.datamodules.talking_heads import PairsDataModule
    from talkinghead.visualize import contact_sheet

    out = Path(args.out)
    shards = out / "shards"
    if shards.exists():
        # Only our own output is replaced: a folder of shards the demo wrote earlier.
        if any(p.suffix not in (".tar", ".json") for p in shards.iterdir()):
            raise SystemExit(f"{shards} holds files the demo did not write; pass another --out")
        shutil.rmtree(shards)
    print(f"[1/3] rendering {args.identities} synthetic people at {args.size}x{args.size} into {shards}")
    write_synthetic_shards(
        shards, identities=args.identities, clips_per_identity=2, frames=args.frames, size=args.size,
        seed=args.seed, clips_per_shard=4, progress=True,
    )

    print("[2/3] reading them back through the pairs DataModule")
    data = PairsDataModule(shards=str(shards), image_size=args.size, batch_size=4, num_workers=0,
                           samples_per_epoch=8)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    print("      batch:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items() if hasattr(v, "shape")))

    print("[3/3] drawing a contact sheet with the stored landmarks")
    clips = [decode_clip(sample) for url in expand_shards(str(shards)) for sample in iter_shard_samples(url)]
    clips = clips[:: max(1, len(clips) // 6)][:6]
    sheet = contact_sheet([c.frames for c in clips], [c.landmarks for c in clips], columns=8,
                          scale=max(1, 128 // args.size))
    path = out / "contact_sheet.png"
    Image.fromarray(np.ascontiguousarray(sheet)).save(path)
    print(f"\ncontact sheet: {path.resolve()}\nshards:        {shards.resolve()}")
    return 0
