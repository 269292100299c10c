"""`talkinghead inspect`: look at shards: a contact sheet of clips (landmarks drawn, masks outlined) and a summary.

    talkinghead inspect 'data/train/*.tar' --out sheet.png --clips 8 --frames 6

The summary counts every clip of the shards from their small members (meta.json, landmarks.npy), without decoding
video; only the clips on the sheet are decoded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead inspect", description=__doc__.splitlines()[0])
    parser.add_argument("shards", help="shards: a folder of .tar files, a glob, a brace pattern or a URL")
    parser.add_argument("--out", required=True, help="the contact sheet to write (.png)")
    parser.add_argument("--clips", type=int, default=8, help="clips on the sheet (one row each), spread over the data")
    parser.add_argument("--frames", type=int, default=6, help="frames shown per clip")
    parser.add_argument("--scale", type=int, default=None,
                        help="integer upscaling of the frames on the sheet (default: to about 128 px)")
    parser.add_argument("--json", help="also write the summary as JSON here")
    return parser


def outline_mask(tile: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """A copy of ``tile`` (h, w, 3) with the border of a (h, w) {0, 1} mask drawn in ``colour``."""
    inside = mask.astype(bool)
    border = inside & ~(np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1))
    out = tile.copy()
    out[border] = colour
    return out


def summarise(urls: Sequence[str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(summary, [(shard url, sample key)] of every clip) from the small members of every sample."""
    from talkinghead.datamodules.shard_format import iter_shard_samples, sample_num_frames

    clips, frames, sizes, people, keys, padding, sources = 0, 0, Counter(), set(), Counter(), [], Counter()
    index: list[tuple[str, str]] = []
    for url in urls:
        for sample in iter_shard_samples(url):
            meta = json.loads(sample["meta.json"])
            clips += 1
            frames += sample_num_frames(sample)
            sizes[int(meta["size"])] += 1
            people.add(meta["identity"])
            sources["synthetic" if meta.get("source") == "synthetic" else "video"] += 1
            keys.update(name for name in sample if not name.startswith("__"))
            extra = meta.get("extra") or {}
            if "outside_fraction" in extra:
                padding.append(float(extra["outside_fraction"]))
            index.append((url, sample["__key__"]))
    summary: dict[str, Any] = {
        "shards": len(urls), "clips": clips, "frames": frames, "people": len(people),
        "frames_per_clip": round(frames / clips, 1) if clips else 0,
        "sizes": {str(size): count for size, count in sorted(sizes.items())},
        "keys": {name: count for name, count in sorted(keys.items())},
        "sources": dict(sources),
        "padding": None if not padding else {
            "clips_recorded": len(padding), "mean_outside_fraction": round(float(np.mean(padding)), 4),
            "max_outside_fraction": round(float(np.max(padding)), 4),
            "clips_over_5_percent": int(np.sum(np.asarray(padding) > 0.05))},
    }
    return summary, index


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"{summary['shards']} shards, {summary['clips']} clips, {summary['frames']} frames "
             f"({summary['frames_per_clip']} per clip), {summary['people']} people",
             "image sizes: " + ", ".join(f"{size} px x {count} clips" for size, count in summary["sizes"].items()),
             "members: " + ", ".join(f"{name} ({count})" for name, count in summary["keys"].items()),
             "sources: " + ", ".join(f"{name} ({count})" for name, count in summary["sources"].items())]
    padding = summary["padding"]
    if padding is None:
        lines.append("padding: not recorded (synthetic shards, or written before preprocessing recorded it)")
    else:
        lines.append(f"padding (share of a crop outside the source frame): mean {padding['mean_outside_fraction']:.1%}, "
                     f"max {padding['max_outside_fraction']:.1%}, {padding['clips_over_5_percent']} of "
                     f"{padding['clips_recorded']} clips over 5%")
    return lines


def contact_sheet_of(index: Sequence[tuple[str, str]], clips: int, frames: int, scale: int | None) -> np.ndarray:
    """Rows of ``frames`` frames from ``clips`` clips spread evenly over the index, landmarks and masks drawn."""
    from PIL import Image

    from talkinghead.datamodules.shard_format import decode_clip, iter_shard_samples, sample_num_frames
    from talkinghead.visualize import draw_landmarks

    picks = sorted(set(np.linspace(0, len(index) - 1, min(clips, len(index))).round().astype(int).tolist()))
    wanted: dict[str, set[str]] = {}
    for i in picks:
        wanted.setdefault(index[i][0], set()).add(index[i][1])
    rows, tile_side = [], None
    for url, keys in wanted.items():
        for sample in iter_shard_samples(url):
            if sample["__key__"] not in keys:
                continue
            count = sample_num_frames(sample)
            chosen = np.linspace(0, count - 1, min(frames, count)).round().astype(int).tolist()
            clip = decode_clip(sample, chosen)
            side = clip.frames.shape[1]
            tile_side = tile_side or side * (scale or max(1, round(128 / side)))  # one tile size for the sheet
            factor = tile_side / side
            row = np.zeros((tile_side, frames * tile_side, 3), dtype=np.uint8)
            for t in range(len(chosen)):
                tile = np.asarray(Image.fromarray(clip.frames[t]).resize((tile_side, tile_side), Image.NEAREST))
                if clip.mask is not None:
                    mask = Image.fromarray(clip.mask[t] * 255).resize((tile_side, tile_side), Image.NEAREST)
                    tile = outline_mask(tile, np.asarray(mask) > 127)
                if np.isfinite(clip.landmarks[t]).all():
                    tile = draw_landmarks(tile, (clip.landmarks[t] + 0.5) * factor - 0.5, radius=max(1.0, factor / 2))
                row[:, t * tile_side:(t + 1) * tile_side] = tile
            rows.append(row)
    return np.concatenate(rows, axis=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from PIL import Image

    from talkinghead.datamodules.shard_format import ShardError, expand_shards

    for flag, value in (("--clips", args.clips), ("--frames", args.frames), ("--scale", args.scale or 1)):
        if value < 1:
            parser.exit(2, f"talkinghead inspect: {flag} must be at least 1, got {value}\n")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        parser.exit(2, f"talkinghead inspect: --out {out}: the contact sheet is a PNG; name it *.png\n")
    try:
        urls = expand_shards(args.shards)
        summary, index = summarise(urls)
        if not index:
            raise ShardError(f"no clips in {args.shards}")
        sheet = contact_sheet_of(index, args.clips, args.frames, args.scale)
    except (ShardError, KeyError, ValueError) as error:
        message = str(error).replace("--data.init_args.shards", "SHARDS")
        parser.exit(2, f"talkinghead inspect: {message.splitlines()[0]}\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(sheet)).save(out)
    for line in summary_lines(summary):
        print(line)
    print(f"contact sheet: {out} ({min(args.clips, len(index))} clips x {args.frames} frames; landmarks as dots"
          f"{', masks outlined in magenta' if 'mask.npz' in summary['keys'] else ''})")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
