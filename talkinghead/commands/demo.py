"""`talkinghead demo`: the embedded default job, runnable on a fresh CPU machine with no downloads.

It loads the embedded default model (tiny OSFV trained on synthetic people, `talkinghead/assets/osfv_tiny.ckpt`),
renders people it never saw, prints its held-out figures against copying the source frame and free view against
the exact re-rendered truth, and writes a sample grid, an mp4 (source | driving | output, then a free-view yaw
sweep of the source from -30 to +30 degrees) and a contact sheet of the data. Then it continues training the
model on synthetic people for a few minutes with a progress bar, to show that training runs (`--minutes 0`
skips it), and writes that checkpoint.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

# Identity ranges of the synthetic people: training (0..), the demo's held-out people (never trained on, and not
# the ones the recipe was tuned or reported on: benchmarks/osfv_learning.py).
DEMO_PEOPLE = 400_000
SIZE = 64


def default_checkpoint() -> Path:
    """The embedded default model's checkpoint (package data)."""
    return Path(str(resources.files("talkinghead.assets") / "osfv_tiny.ckpt"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="output folder (its demo files are replaced)")
    parser.add_argument("--checkpoint", default=None, help="OSFV checkpoint to show (default: the embedded one)")
    parser.add_argument("--held-out", type=int, default=4, help="held-out synthetic people to animate and score")
    parser.add_argument("--identities", type=int, default=24, help="synthetic people to continue training on")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--minutes", type=float, default=2.0, help="continued CPU training (0: skip)")
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
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not checkpoint.is_file():
        print(f"talkinghead demo: no checkpoint at {checkpoint}; pass --checkpoint FILE (an OSFV checkpoint)",
              file=sys.stderr)
        return 2
    import numpy as np
    import torch
    from PIL import Image

    from talkinghead.callbacks.samples import grid_image
    from talkinghead.datamodules.shard_format import decode_clip, encode_frames_mp4, expand_shards, iter_shard_samples
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
    from talkinghead.datamodules.transforms import clip_to_frames
    from talkinghead.evaluation import load_model
    from talkinghead.freeview import format_table, score_free_view, score_reconstruction
    from talkinghead.visualize import contact_sheet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    val = _fresh(out / "shards" / "held_out")
    print(f"[1/4] rendering {args.held_out} synthetic people the model never saw, at {SIZE}x{SIZE}")
    write_synthetic_shards(val, identities=args.held_out, first_identity=DEMO_PEOPLE, clips_per_identity=2,
                           frames=args.frames, size=SIZE, seed=args.seed, clips_per_shard=1)
    held_out = [decode_clip(s) for url in expand_shards(str(val)) for s in iter_shard_samples(url)]
    sheet = contact_sheet([c.frames for c in held_out[:4]], [c.landmarks for c in held_out[:4]], columns=8, scale=2)
    Image.fromarray(np.ascontiguousarray(sheet)).save(out / "data_contact_sheet.png")

    model = load_model(checkpoint).eval()
    if args.checkpoint:
        print(f"[2/4] the model: {checkpoint}")
    else:
        steps = torch.load(checkpoint, map_location="cpu", weights_only=True).get("global_step", 0)
        print(f"[2/4] the embedded default model: {checkpoint} ({steps} generator steps of "
              "lightning_configs/osfv/cpu_recipe.yaml on synthetic people)")
    frames = [clip_to_frames(c, SIZE) for c in held_out]
    # Deterministic pairs as in validation: each clip's frame 0 drives towards a frame far into the clip.
    pairs = {"source": torch.stack([f["image"][0] for f in frames]),
             "driving": torch.stack([f["image"][len(f["image"]) * 2 // 3] for f in frames]),
             "source_pose": torch.stack([f["pose"][0] for f in frames]),
             "driving_pose": torch.stack([f["pose"][len(f["pose"]) * 2 // 3] for f in frames]),
             "driving_mask": torch.stack([f["mask"][len(f["mask"]) * 2 // 3] for f in frames])}
    print(f"held-out same-identity reconstruction ({len(frames)} pairs of {args.held_out} people):")
    print(format_table(score_reconstruction(model, [pairs])))
    print("free view against the exact truth (the same person re-rendered with the head turned):")
    print(format_table(score_free_view(model, str(val), yaws=(-20.0, 20.0), num_clips=len(frames))))

    print("[3/4] animating held-out people")
    reconstructed = model.reconstruct(pairs["source"], pairs["driving"])
    Image.fromarray(grid_image(pairs["source"], pairs["driving"], reconstructed)).save(out / "samples.png")
    source = frames[0]["image"][:1]
    driving = frames[2 % len(frames)]["image"][: args.frames]  # another person drives: cross-identity motion
    animated = model.animate(source, driving, relative=True)
    yaws = torch.cat([torch.linspace(0, 30, 12), torch.linspace(30, -30, 24), torch.linspace(-30, 0, 12)])
    sweep = torch.cat([model.animate(source, source, relative=True, yaw=float(y)) for y in yaws])
    side_by_side = torch.cat([source.expand_as(driving), driving, animated], dim=-1)
    sweep_row = torch.cat([source.expand_as(sweep), torch.zeros_like(sweep), sweep], dim=-1)
    video = torch.cat([side_by_side, sweep_row]).clamp(0, 1)
    pixels = (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    pixels = pixels.repeat(2, axis=1).repeat(2, axis=2)  # 2x nearest upscaling: 64 px is small on screen
    (out / "animation.mp4").write_bytes(encode_frames_mp4(pixels, fps=25.0))

    trained = out / "osfv_tiny.ckpt"
    if args.minutes > 0:
        print(f"[4/4] continuing training for {args.minutes:g} minutes on {args.identities} synthetic people")
        _continue_training(args, out, model, trained)
    else:
        print("[4/4] continued training skipped (--minutes 0)")
        shutil.copyfile(checkpoint, trained)
    print("\ndone")
    for label, path in [("checkpoint", trained), ("samples", out / "samples.png"),
                        ("animation", out / "animation.mp4"), ("data", out / "data_contact_sheet.png")]:
        print(f"{label + ':':<12}{path.resolve()}")
    return 0


def _continue_training(args: argparse.Namespace, out: Path, model: Any, trained: Path) -> None:
    """Fits the CPU recipe from ``model``'s (inference) weights for a few minutes, with a progress bar."""
    from talkinghead.cli import TalkingHeadCLI
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards

    train = _fresh(out / "shards" / "train")
    write_synthetic_shards(train, identities=args.identities, clips_per_identity=2, frames=args.frames, size=SIZE,
                           seed=args.seed + 1, clips_per_shard=4, progress=True)
    seconds = int(args.minutes * 60)
    configs = resources.files("talkinghead.lightning_configs") / "osfv"
    cli = TalkingHeadCLI(
        args=[
            "--config", str(configs / "tiny.yaml"), "--config", str(configs / "cpu_recipe.yaml"),
            f"--data.init_args.shards={train}",
            f"--trainer.max_time=00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
            "--trainer.max_epochs=-1", "--trainer.max_steps=-1", "--trainer.enable_progress_bar=true",
            "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={out / 'training'}",
        ],
        run=False,
    )
    cli.model.generator_side().load_state_dict(model.inference_networks().state_dict())  # continue from the model
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.trainer.save_checkpoint(trained)
