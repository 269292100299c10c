"""`talkinghead demo`: the embedded default job, runnable on a fresh CPU machine with no downloads.

It renders synthetic talking-head shards (training people and held-out people), trains the tiny OSFV config on
them for a few minutes through the same LightningCLI configs as `talkinghead fit`, and writes a checkpoint, a
sample grid (source | driving | output on held-out people), an mp4 (source | driving | output, then a free-view
yaw sweep of the source) and a contact sheet of the data with its landmarks.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="output folder (its demo files are replaced)")
    parser.add_argument("--identities", type=int, default=24, help="synthetic people to train on")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--minutes", type=float, default=4.0, help="CPU training time")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    return parser


def _fresh(folder: Path) -> Path:
    """Empties a folder of shards the demo wrote before; refuses to touch anything else."""
    if folder.exists():
        if any(p.suffix not in (".tar", ".json") for p in folder.iterdir()):
            raise SystemExit(f"{folder} holds files the demo did not write; pass another --out")
        shutil.rmtree(folder)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    from talkinghead.callbacks.samples import grid_image
    from talkinghead.cli import TalkingHeadCLI
    from talkinghead.datamodules.shard_format import decode_clip, encode_frames_mp4, expand_shards, iter_shard_samples
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
    from talkinghead.datamodules.transforms import clip_to_frames
    from talkinghead.visualize import contact_sheet

    out = Path(args.out)
    size = 64
    train, val = _fresh(out / "shards" / "train"), _fresh(out / "shards" / "val")
    print(f"[1/4] rendering {args.identities} synthetic people (+2 held out) at {size}x{size}")
    write_synthetic_shards(train, identities=args.identities, clips_per_identity=2, frames=args.frames, size=size,
                           seed=args.seed, clips_per_shard=4, progress=True)
    write_synthetic_shards(val, identities=2, first_identity=100_000, clips_per_identity=1, frames=args.frames,
                           size=size, seed=args.seed, clips_per_shard=1)
    clips = [decode_clip(s) for url in expand_shards(str(train)) for s in iter_shard_samples(url)][::8][:4]
    sheet = contact_sheet([c.frames for c in clips], [c.landmarks for c in clips], columns=8, scale=2)
    Image.fromarray(np.ascontiguousarray(sheet)).save(out / "data_contact_sheet.png")

    print(f"[2/4] training tiny OSFV for {args.minutes:g} minutes on the CPU (lightning_configs/osfv/tiny.yaml)")
    config = resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml"
    cli = TalkingHeadCLI(
        args=[
            "--config", str(config),
            f"--data.init_args.shards={train}", f"--data.init_args.val_shards={val}",
            f"--trainer.max_time=00:00:{int(args.minutes * 60) // 60:02d}:{int(args.minutes * 60) % 60:02d}",
            "--trainer.max_epochs=-1", "--trainer.max_steps=-1", "--trainer.enable_progress_bar=true",
            f"--trainer.default_root_dir={out / 'training'}",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    checkpoint = out / "osfv_tiny.ckpt"
    cli.trainer.save_checkpoint(checkpoint)

    print("[3/4] animating held-out people")
    model = cli.model.eval()
    data = cli.datamodule
    batch = next(iter(data.val_dataloader()))
    grid = grid_image(batch["source"], batch["driving"], model.reconstruct(batch["source"], batch["driving"]))
    Image.fromarray(grid).save(out / "samples.png")
    held_out = [decode_clip(s) for url in expand_shards(str(val)) for s in iter_shard_samples(url)]
    source_clip, driving_clip = held_out[0], held_out[1]
    source = clip_to_frames(source_clip, size)["image"][:1]
    driving = clip_to_frames(driving_clip, size)["image"]
    animated = model.animate(source, driving, relative=True)
    yaws = torch.cat([torch.linspace(0, 30, 12), torch.linspace(30, -30, 24), torch.linspace(-30, 0, 12)])
    sweep = torch.cat([model.animate(source, source, relative=True, yaw=float(y)) for y in yaws])
    side_by_side = torch.cat([source.expand_as(driving), driving, animated], dim=-1)
    sweep_row = torch.cat([source.expand_as(sweep), torch.zeros_like(sweep), sweep], dim=-1)
    video = torch.cat([side_by_side, sweep_row]).clamp(0, 1)
    frames = (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    frames = frames.repeat(2, axis=1).repeat(2, axis=2)  # 2x nearest upscaling: 64 px is small on screen
    (out / "animation.mp4").write_bytes(encode_frames_mp4(frames, fps=25.0))

    print("[4/4] done\n")
    for label, path in [("checkpoint", checkpoint), ("samples", out / "samples.png"),
                        ("animation", out / "animation.mp4"), ("data", out / "data_contact_sheet.png")]:
        print(f"{label + ':':<12}{path.resolve()}")
    return 0
