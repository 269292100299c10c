"""Frames per second of the synthetic talking-head renderer (``render_clip``) on the CPU.

Renders whole clips of random people, motions and scenes, excludes a warm-up clip, and reports the median and
best rate over the repeats for each image size, e.g.::

    python benchmarks/synth_speed.py                     # 64 and 256 pixels, one thread, 1, 2 and 4 rays per pixel
    python benchmarks/synth_speed.py --sizes 128 --frames 64 --threads 4 --supersample 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from talkinghead.datamodules.synthetic_heads import (
    identity_generator,
    render_clip,
    sample_identity,
    sample_motion,
    sample_scene,
)


def measure(size: int, frames: int, repeats: int, supersample: int, seed: int = 0) -> list[float]:
    """Frames per second of ``repeats`` clips of ``frames`` frames at ``size`` pixels (after one warm-up clip)."""
    rates = []
    for repeat in range(repeats + 1):
        identity = sample_identity(identity_generator(seed, repeat))
        generator = identity_generator(seed, repeat, 0)
        motion, scene = sample_motion(frames, generator), sample_scene(generator)
        start = time.perf_counter()
        render_clip(identity, motion, scene, size, supersample=supersample)
        seconds = time.perf_counter() - start
        if repeat > 0:  # the first clip pays for allocations and lazy initialisation
            rates.append(frames / seconds)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="image sides in pixels")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--repeats", type=int, default=5, help="clips timed per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--supersample", type=int, nargs="+", default=[1, 2, 4],
                        help="rays per pixel: 1, 2 (quincunx, the default of render_clip) or a square")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), clips of {args.frames} frames")
    for size in args.sizes:
        for supersample in args.supersample:
            rates = measure(size, args.frames, args.repeats, supersample)
            print(
                f"{size:4d} x {size:<4d} supersample {supersample}: median {statistics.median(rates):7.1f} "
                f"frames/s, best {max(rates):7.1f} frames/s ({len(rates)} clips)"
            )


if __name__ == "__main__":
    main()
