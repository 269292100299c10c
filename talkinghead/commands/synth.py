"""`talkinghead synth`: render procedural talking heads into shards (no downloads)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talkinghead synth",
        description="Render procedural 3D talking heads with exact pose, landmarks and masks into shards.",
    )
    parser.add_argument("--out", required=True, help="output folder for the shards (new or empty)")
    parser.add_argument("--identities", type=int, default=8, help="number of people")
    parser.add_argument("--first-identity", type=int, default=0,
                        help="number of the first person; use disjoint ranges for held-out sets")
    parser.add_argument("--clips-per-identity", type=int, default=2, help="clips (videos) per person")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed writes the same shards")
    parser.add_argument("--codec", choices=("auto", "npy", "mp4"), default="auto",
                        help="frame storage: npy (lossless), mp4 (H.264), auto = npy up to 128 px")
    parser.add_argument("--clips-per-shard", type=int, default=8, help="clips per shard file")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the motion")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _positive(parser, args, "identities", "clips_per_identity", "frames", "clips_per_shard")
    if args.size < 16 or args.size % 2:
        parser.error(f"--size must be an even number of pixels >= 16, got {args.size}")
    from talkinghead.datamodules.shard_format import ShardError
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards

    start = time.perf_counter()
    try:
        shards = write_synthetic_shards(
            args.out,
            identities=args.identities,
            first_identity=args.first_identity,
            clips_per_identity=args.clips_per_identity,
            frames=args.frames,
            size=args.size,
            seed=args.seed,
            codec=args.codec,
            clips_per_shard=args.clips_per_shard,
            fps=args.fps,
            progress=not args.quiet,
        )
    except ShardError as error:
        parser.exit(1, f"talkinghead synth: {error}\n")
    seconds = time.perf_counter() - start
    clips = args.identities * args.clips_per_identity
    print(
        f"wrote {clips} clips ({clips * args.frames} frames, {args.size}x{args.size}) in {len(shards)} shards "
        f"to {args.out} in {seconds:.1f} s"
    )
    return 0
