"""`talkinghead preprocess`: real talking-head videos -> shards (tracked face, square crops, landmarks, pose).

Usage::

    talkinghead preprocess --input vox2/dev/mp4 --out data/vox2 --workers 8            # VoxCeleb2 tree
    talkinghead preprocess --input clips/ --out data/mine --crop lpd --size 256          # a folder, one person a file
    talkinghead preprocess --input list.csv --out data/mine --detect-every 5             # path,identity[,video] list
    python -m talkinghead preprocess --input ... --out ...                               # the same, as a module

Inputs (``--layout``, inferred when left out: a .csv file is ``csv``, a folder of ``id\\d+`` folders is
``voxceleb2``, any other folder is ``folder``):

- ``voxceleb2``: ROOT/idXXXXX/VIDEO_ID/CLIP.mp4 -> identity idXXXXX, video idXXXXX/VIDEO_ID (identity-prefixed:
  one YouTube video can hold two people; the bare id is kept in meta ``extra.source_video``);
- ``folder``: every video file directly in the folder, one person per file (identity = video = file stem);
- ``csv``: columns path, identity and optionally video (default: the path without extension); relative paths are
  relative to the CSV file.

Per video: PyAV decoding (display rotation applied; variable frame rate reported, frames kept as they are, the
clip's fps is then its average rate), shot changes from colour histograms (``--shot-threshold``), MTCNN every
``--detect-every`` frames with the box interpolated in between, one face tracked by overlap (the largest, most
central one at the start of a shot; other faces are reported, not followed), clips cut where the face is lost, at
shot changes and at ``--max-frames``, clips under ``--min-frames`` and faces under ``--min-face`` pixels dropped.
Crops are square: ``--crop voxceleb`` is one box per clip around all the clip's face positions (side = the union's
larger side + 0.6 face sides; margin 1.6 for a still head), ``--crop lpd`` follows the face with a 1.8 x box,
centre and side averaged over ``--smooth-window`` frames (``--crop-motion`` swaps the two behaviours, ``--margin``
the factor; ``--crop none`` keeps inputs that already are aligned face crops as they are). Where the crop leaves the
frame it is padded (``--pad reflect``, ``edge`` or ``black``), but never by more than ``--max-pad`` of its area
(default 0.15): a clip's box is shrunk about its centre until it fits (never into the face), or the clip is dropped
(``--over-pad drop``; reason heavy-padding). The share padded is in each clip's meta (``outside_fraction``) and in
the summary. Crops are then resized to ``--size`` with antialiasing. 68 landmarks come from dlib on the source frame at the face box, mapped into crop pixels; pose
labels (yaw, pitch, roll, tx, ty; tz = 0) from a weak-perspective fit of a generic 3D face to them, or yaw, pitch and
roll from Hopenet with ``--pose-checkpoint hopenet_robust_alpha1.pkl`` (deep-head-pose weights; nothing is
downloaded).

Output in ``--out``: shards ``PREFIX-TOKEN-NNNNNN.tar`` (+ ``.json`` index; one token per worker, so workers and
reruns never collide), ``preprocess_manifest.jsonl`` (one line per finished input: status, reason, clips, frames,
warnings, padding, timings), ``preprocess_summary.json`` (totals, failures with reasons, files with warnings,
padding) and
``preprocess_options.json``. Each input is recorded as soon as it is done, so rerunning the same command skips
every finished input (a killed run's unfinished shard is completed with their clips) and redoes only the input a
crash interrupted; a bad input never stops the run: it is recorded as failed with a
reason (unreadable, no-face, tiny-face, too-short, error, crashed). Exit status 0 when the run completes, even with
failed inputs; 2 for bad options or inputs that cannot be listed.

Speed (benchmarks/preprocess_speed.py): detection dominates; ``--detect-every 5`` trades box accuracy on fast
motion for about 2-3x the frames per second. ``--workers N`` runs N processes of one torch thread each (use the
number of cores); memory per worker is about ``--max-frames`` source frames plus one detection chunk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talkinghead preprocess",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="See the module docstring of talkinghead.commands.preprocess for details.",
    )
    add = parser.add_argument
    add("--input", required=True, help="a folder of videos (voxceleb2 or folder layout) or a LIST.csv")
    add("--out", required=True, help="output folder: shards, manifest, summary (a rerun resumes it)")
    add("--layout", choices=("voxceleb2", "folder", "csv"), default=None,
        help="input layout (default: inferred from --input)")
    add("--size", type=int, default=256, help="side of the square output frames in pixels (even)")
    add("--crop", choices=("voxceleb", "lpd", "none"), default="voxceleb",
        help="voxceleb: one box per clip, margin 1.6; lpd: 1.8 x the face box, following the face; none: the "
             "inputs are already aligned face crops (the centred square of the frame is kept as it is)")
    add("--crop-motion", choices=("auto", "fixed", "smooth"), default="auto",
        help="fixed box per clip or smoothed moving box (auto: fixed for voxceleb, smooth for lpd)")
    add("--margin", type=float, default=None, help="crop side / face side (default 1.6 voxceleb, 1.8 lpd)")
    add("--smooth-window", type=int, default=9, help="frames averaged for the moving crop box")
    add("--pad", choices=("reflect", "edge", "black"), default="reflect",
        help="fill where the crop leaves the frame: reflect mirrors the frame at its border (least visible); "
             "edge repeats the border pixels (streaks: 'long necks', side bars); black")
    add("--max-pad", type=float, default=0.15,
        help="largest share of a crop allowed outside the frame (0-1; 1: no limit); see --over-pad")
    add("--over-pad", choices=("shrink", "drop"), default="shrink",
        help="a clip whose crop pads more than --max-pad: shrink its box (never into the face; dropped when that "
             "is not enough) or drop it")
    add("--detect-every", type=int, default=1, help="run face detection on every N-th frame, interpolate between")
    add("--detect-max-side", type=int, default=640,
        help="shrink larger frames to this side for detection only (0: never)")
    add("--min-face", type=int, default=64, help="smallest face side kept, in source pixels")
    add("--min-frames", type=int, default=16, help="shortest clip kept")
    add("--max-frames", type=int, default=256, help="longest clip; longer runs are split")
    add("--shot-threshold", type=float, default=0.3,
        help="colour-histogram distance (0-1) between consecutive frames that marks a shot change")
    add("--track-iou", type=float, default=0.3, help="overlap with the previous box that is still the same face")
    add("--drift-iou", type=float, default=0.25,
        help="fixed crops: end a clip when the face overlaps its first box by less (0: never)")
    add("--max-video-frames", type=int, default=None, help="decode at most this many frames per video")
    add("--pose-checkpoint", default=None,
        help="Hopenet weights (deep-head-pose .pkl) for yaw/pitch/roll; default: fit to the landmarks")
    add("--device", default="cpu", help="device for face detection and Hopenet (cpu, cuda, cuda:1)")
    add("--batch-size", type=int, default=16, help="frames per face-detection batch")
    add("--workers", type=int, default=1, help="worker processes (1: in this process)")
    add("--clips-per-shard", type=int, default=1000, help="close a shard after this many clips")
    add("--shard-size", type=float, default=500.0, help="close a shard after this many megabytes")
    add("--shard-prefix", default="clips", help="shard file names start with this")
    add("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from talkinghead.preprocess import InputError, PreprocessOptions, find_inputs, preprocess_videos

    options = PreprocessOptions(
        size=args.size,
        crop=args.crop,
        crop_motion=args.crop_motion,
        margin=args.margin,
        smooth_window=args.smooth_window,
        pad=args.pad,
        max_pad=args.max_pad,
        over_pad=args.over_pad,
        detect_every=args.detect_every,
        detect_max_side=args.detect_max_side,
        min_face=args.min_face,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        shot_threshold=args.shot_threshold,
        track_iou=args.track_iou,
        drift_iou=args.drift_iou,
        max_video_frames=args.max_video_frames,
        pose_checkpoint=args.pose_checkpoint,
        device=args.device,
        batch_size=args.batch_size,
    )
    try:
        options.check()
        if args.workers < 0:
            raise ValueError(f"--workers must be at least 0, got {args.workers}")
        inputs = find_inputs(args.input, args.layout)
    except (ValueError, InputError) as error:
        parser.error(str(error))
    print(f"talkinghead preprocess: {len(inputs)} videos from {args.input} -> {args.out}", file=sys.stderr)
    try:
        preprocess_videos(
            inputs,
            args.out,
            options,
            workers=args.workers,
            clips_per_shard=args.clips_per_shard,
            shard_size_mb=args.shard_size,
            shard_prefix=args.shard_prefix,
            progress=not args.quiet,
        )
    except (FileNotFoundError, RuntimeError, ValueError, ImportError) as error:
        parser.exit(1, f"talkinghead preprocess: {error}\n")
    return 0
