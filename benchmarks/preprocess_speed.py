"""End-to-end speed of `talkinghead preprocess` per CPU core: real videos -> 256 px shards, one worker, one thread.

For each video and each ``--detect-every`` setting, runs the whole per-video pipeline (decode, shot test, MTCNN,
tracking, crop, dlib landmarks, pose fit, H.264 encoding, shard writing) in this process with one torch thread and
prints a table of frames per second per core and the split of the time between the stages, e.g.::

    python benchmarks/preprocess_speed.py                                   # ../shared/data/real/*.mp4, 1 and 5
    python benchmarks/preprocess_speed.py --videos my.mp4 --detect-every 1 2 5 --max-video-frames 600

The default videos live outside the repository (../shared/data/real: franck.mp4, 360 x 288, 4800 frames, and
three 256 x 256 VoxCeleb-style clips); tests never read them. Models are built and warmed up before timing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from talkinghead.datamodules.shard_format import ShardWriter
from talkinghead.preprocess import InputVideo, PreprocessOptions, VideoPreprocessor
from talkinghead.preprocess.pipeline import STAGES

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def run(processor: VideoPreprocessor, path: Path, out: Path, prefix: str) -> dict:
    """One timed video: the FileResult's fields plus the wall time including the shard's completion."""
    video = InputVideo(str(path.resolve()), identity=path.stem, video=path.stem, name=path.stem,
                       source_video=path.stem)
    start = time.perf_counter()
    with ShardWriter(out, prefix=prefix) as writer:
        result = processor.process(video, writer.write)
    seconds = time.perf_counter() - start
    if result.status != "ok":
        print(f"  {path.name}: {result.status} {result.reason}: {result.message}")
    return {**result.to_json(), "wall": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", type=Path, default=None,
                        help=f"video files (default: {DEFAULT_VIDEOS}/*.mp4)")
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 5], help="settings to compare")
    parser.add_argument("--size", type=int, default=256, help="output side")
    parser.add_argument("--crop", choices=("voxceleb", "lpd"), default="voxceleb", help="crop placement")
    parser.add_argument("--max-video-frames", type=int, default=None, help="decode at most this many frames")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the per-core figure)")
    args = parser.parse_args()

    videos = args.videos or sorted(DEFAULT_VIDEOS.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no videos: pass --videos or put .mp4 files in {DEFAULT_VIDEOS}")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores, load average "
          f"{load:.1f} at start; output {args.size} px, crop {args.crop}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for every in args.detect_every:
            options = PreprocessOptions(size=args.size, crop=args.crop, detect_every=every,
                                        max_video_frames=args.max_video_frames)
            processor = VideoPreprocessor(options)
            run(processor, videos[0], Path(scratch), f"warmup-{every}")  # builds MTCNN, the pose template
            for index, path in enumerate(videos):
                row = run(processor, path, Path(scratch), f"b{every}-{index}")
                rows.append((every, path, row))
                print(f"  done {path.name} detect-every {every}: {row['frames']} frames in {row['wall']:.1f} s",
                      flush=True)

    header = (f"{'file':<12} {'input':>9} {'every':>5} {'frames':>6} {'kept':>6} {'clips':>5} {'seconds':>8} "
              f"{'fps/core':>8}   " + " ".join(f"{stage:>7}" for stage in ("decode", "detect", "landmk", "pose",
                                                                            "crop", "enc+wr")))
    print("\n" + header + "\n" + "-" * len(header))
    for every, path, row in rows:
        shares = [100 * row["timings"][stage] / row["wall"] for stage in STAGES]
        print(f"{path.name:<12} {row['width']:>4}x{row['height']:<4} {every:>5} {row['frames']:>6} "
              f"{row['frames_kept']:>6} {row['clips']:>5} {row['wall']:>8.1f} {row['frames'] / row['wall']:>8.1f}   "
              + " ".join(f"{share:>6.1f}%" for share in shares))
    for every in args.detect_every:
        frames = sum(row["frames"] for e, _, row in rows if e == every)
        seconds = sum(row["wall"] for e, _, row in rows if e == every)
        print(f"all videos, detect-every {every}: {frames} frames in {seconds:.1f} s = {frames / seconds:.1f} "
              "frames/s per core")


if __name__ == "__main__":
    main()
