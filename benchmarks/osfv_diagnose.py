"""Why does (or doesn't) tiny OSFV learn? Four diagnostics on synthetic clips held in memory, without the Trainer.

    python benchmarks/osfv_diagnose.py overfit --steps 400          # (a) one clip: same-identity PSNR on its frames
    python benchmarks/osfv_diagnose.py gradients --steps 500        # (b) per-term gradient norms per network
    python benchmarks/osfv_diagnose.py autoencode --steps 400       # (c) F -> G alone (driving = source)
    python benchmarks/osfv_diagnose.py init                         # (d) motion path and keypoints at init
    python benchmarks/osfv_diagnose.py train --steps 300            # a quick recipe check on held-out people

Every mode builds the module from a config (``--config``, the tiny one by default, plus ``-- overrides`` in
LightningCLI syntax), so a recipe change is diagnosed exactly as it would train. The training loop here is the
module's own: ``run_generator`` -> ``generator_losses`` -> weighted sum -> the generator optimizer, then the
discriminator step, as ``AdversarialModule.training_step`` does.
"""

from __future__ import annotations

import argparse
import random
import time
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from talkinghead.cli import TalkingHeadCLI
from talkinghead.datamodules.shard_format import decode_clip, expand_shards, iter_shard_samples
from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
from talkinghead.datamodules.transforms import clip_to_frames
from talkinghead.flows import coordinate_grid_3d
from talkinghead.lightning.adversarial import detach_outputs
from talkinghead.lightning.osfv import OSFVModule
from talkinghead.metrics import psnr_per_image

NETWORKS = ("appearance", "canonical_keypoints", "head_pose", "motion", "generator")


def build_module(config: str, overrides: list[str]) -> OSFVModule:
    cli = TalkingHeadCLI(args=["--config", config, "--data.init_args.shards=unused", *overrides], run=False)
    module = cli.model
    module.setup("fit")
    return module


def load_clips(folder: Path, size: int) -> list[dict[str, torch.Tensor]]:
    clips = []
    for url in expand_shards(str(folder)):
        for sample in iter_shard_samples(url):
            frames = clip_to_frames(decode_clip(sample), size)
            clips.append({"image": frames["image"], "pose": frames["pose"]})
    return clips


def sample_batch(clips: list[dict], batch_size: int, rng: random.Random, same: bool = False) -> dict:
    source, driving, pose, source_pose = [], [], [], []
    for _ in range(batch_size):
        clip = clips[rng.randrange(len(clips))]
        i, j = rng.sample(range(len(clip["image"])), 2)
        j = i if same else j
        source.append(clip["image"][i])
        driving.append(clip["image"][j])
        pose.append(clip["pose"][j])
        source_pose.append(clip["pose"][i])
    return {"source": torch.stack(source), "driving": torch.stack(driving), "driving_pose": torch.stack(pose),
            "source_pose": torch.stack(source_pose)}


def train_step(module: OSFVModule, optimizers: list, batch: dict) -> dict[str, float]:
    g_opt, d_opt = optimizers
    outputs = module.run_generator(batch)
    terms = module.generator_losses(batch, outputs)
    g_opt.zero_grad(set_to_none=True)
    module.weighted_sum(terms).backward()
    g_opt.step()
    if module.uses_discriminator():
        d_terms = module.discriminator_losses(batch, detach_outputs(outputs))
        d_opt.zero_grad(set_to_none=True)
        module.weighted_sum(d_terms).backward()
        d_opt.step()
    if module.generator_ema is not None:
        module.generator_ema.update_parameters(module.generator_side())
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def score_pairs(module: OSFVModule, clips: list[dict], pairs: int, seed: int, same: bool = False) -> tuple[float, float, float]:
    """Mean PSNR of the model, of copying the source, and L1 of the model, on fixed pairs."""
    batch = sample_batch(clips, pairs, random.Random(seed), same=same)
    prediction = module.reconstruct(batch["source"], batch["driving"])
    return (psnr_per_image(prediction, batch["driving"]).mean().item(),
            psnr_per_image(batch["source"], batch["driving"]).mean().item(),
            F.l1_loss(prediction, batch["driving"]).item())


def data(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    out = Path(args.out)
    train, val = out / "train", out / "val"
    if not train.exists():
        write_synthetic_shards(train, identities=args.identities, clips_per_identity=2, frames=32, size=64, seed=0,
                               clips_per_shard=4)
        write_synthetic_shards(val, identities=8, first_identity=100_000, clips_per_identity=1, frames=32, size=64,
                               seed=0, clips_per_shard=1)
    return load_clips(train, args.size), load_clips(val, args.size)


def run_training(args: argparse.Namespace, clips: list[dict], same: bool, val: list[dict] | None) -> None:
    module = build_module(args.config, args.overrides).train()
    if args.teacher_pose:  # the module's own switch (what cpu_recipe.yaml sets)
        module.flow_rotation_from_labels = True
    optimizers = module.configure_optimizers()
    rng = random.Random(1)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        terms = train_step(module, optimizers, sample_batch(clips, args.batch_size, rng, same=same))
        if step % args.every == 0 or step == args.steps:
            model, copy, l1 = score_pairs(module, clips, 32, seed=7, same=same)
            line = f"step {step:5d} {time.perf_counter() - start:7.1f}s  train-clip PSNR {model:6.2f} (copy {copy:6.2f}) L1 {l1:.4f}"
            if val is not None:
                vm, vc, vl1 = score_pairs(module, val, 32, seed=7, same=same)
                line += f" | held-out PSNR {vm:6.2f} (copy {vc:6.2f}) L1 {vl1:.4f}"
            print(line + "  " + " ".join(f"{k}={v:.3g}" for k, v in terms.items()), flush=True)
    with torch.no_grad(), module.evaluating() as networks:
        batch = sample_batch(val if val is not None else clips, 16, random.Random(7), same=same)
        state, pose = networks.encode_source(batch["source"]), networks.estimate_pose(batch["driving"])
        motion = networks.motion(state.feature, state.keypoints, networks.keypoints(state.canonical, pose),
                                 state.pose["rotation"], pose["rotation"])
        print(f"M's background (identity) flow share of the volume: {motion['masks'][:, 0].mean():.3f}")
    if args.save:
        torch.save(module.state_dict(), Path(args.out) / f"{args.save}.pt")
        from PIL import Image

        from talkinghead.callbacks.samples import grid_image

        batch = sample_batch(val if val is not None else clips, 8, random.Random(7), same=same)
        with torch.no_grad():
            prediction = module.reconstruct(batch["source"], batch["driving"])
            turned = torch.cat([module.animate(s, s[None], yaw=20.0) for s in batch["source"]])
        grid = grid_image(batch["source"], batch["driving"], prediction, turned)
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(
            Path(args.out) / f"{args.save}.png")


def time_steps(args: argparse.Namespace, clips: list[dict]) -> None:
    """Median seconds of one G (+ D) step, per network forward and for the whole step."""
    module = build_module(args.config, args.overrides).train()
    optimizers = module.configure_optimizers()
    rng = random.Random(1)
    times = []
    for _ in range(args.steps):
        batch = sample_batch(clips, args.batch_size, rng)
        start = time.perf_counter()
        train_step(module, optimizers, batch)
        times.append(time.perf_counter() - start)
    times = sorted(times[2:])
    print(f"step: median {times[len(times) // 2]:.3f} s at batch {args.batch_size} "
          f"({args.batch_size / times[len(times) // 2]:.1f} samples/s)", flush=True)
    with torch.no_grad():
        for net in NETWORKS:
            print(f"  {net:<20} {sum(p.numel() for p in module.networks[net].parameters()) / 1e6:6.3f} M parameters")


def gradients(args: argparse.Namespace, clips: list[dict]) -> None:
    """Per loss term: the gradient norm it puts on each network and on the generated image (weighted terms)."""
    module = build_module(args.config, args.overrides).train()
    optimizers = module.configure_optimizers()
    rng = random.Random(1)
    side = module.generator_side()
    for step in range(1, args.steps + 1):
        batch = sample_batch(clips, args.batch_size, rng)
        if step % args.every == 0 or step == 1:
            outputs = module.run_generator(batch)
            outputs["prediction"].retain_grad()
            terms = module.generator_losses(batch, outputs)
            print(f"step {step}: weighted term -> gradient norm on [image] " + " ".join(NETWORKS), flush=True)
            for name, value in terms.items():
                side.zero_grad(set_to_none=True)
                outputs["prediction"].grad = None
                (module.loss_weights[name] * value).backward(retain_graph=True)
                image = outputs["prediction"].grad
                norms = []
                for net in NETWORKS:
                    grads = [p.grad for p in side[net].parameters() if p.grad is not None]
                    norms.append(torch.stack([g.norm() for g in grads]).norm().item() if grads else 0.0)
                print(f"  {name:<18} value {value.item():9.4f}  [{0.0 if image is None else image.norm().item():8.4f}] "
                      + " ".join(f"{n:9.4f}" for n in norms), flush=True)
            side.zero_grad(set_to_none=True)
        train_step(module, optimizers, batch)


@torch.no_grad()
def init_check(args: argparse.Namespace, clips: list[dict]) -> None:
    """At initialisation: how far the composed flow is from identity, and how the keypoints spread."""
    module = build_module(args.config, args.overrides)
    batch = sample_batch(clips, 16, random.Random(3))
    for mode in ("train", "eval"):
        module.train(mode == "train")
        out = module.run_generator(batch)
        deformation = out["deformation"]
        _, d, h, w, _ = deformation.shape
        grid = coordinate_grid_3d(d, h, w, dtype=deformation.dtype)
        shift = (deformation - grid).norm(dim=-1)
        kp = out["driving_kp"]
        pairwise = torch.cdist(kp, kp)
        off = pairwise[:, ~torch.eye(kp.shape[1], dtype=torch.bool)]
        masks = out["masks"]
        print(f"[{mode}] |w(p) - p| mean {shift.mean():.4f} max {shift.max():.4f} (normalised units; a voxel is "
              f"{2 / w:.4f}); background mask share {masks[:, 0].mean():.3f}; occlusion mean {out['occlusion'].mean():.3f}")
        print(f"[{mode}] keypoints: min pair distance {off.min():.4f}, mean {off.mean():.4f}; x range "
              f"[{kp[..., 0].min():.2f}, {kp[..., 0].max():.2f}], y [{kp[..., 1].min():.2f}, {kp[..., 1].max():.2f}], "
              f"z [{kp[..., 2].min():.2f}, {kp[..., 2].max():.2f}]; yaw read {out['driving_pose']['yaw'][:4].tolist()}")
    module.train()
    terms = module.generator_losses(batch, module.run_generator(batch))
    print("weighted terms at init: " + " ".join(f"{k}={module.loss_weights[k] * v.item():.3g}" for k, v in terms.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["overfit", "gradients", "autoencode", "init", "train", "time"])
    parser.add_argument("--config", default=str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml"))
    parser.add_argument("--out", default="/tmp/osfv_diagnose", help="folder of the synthetic shards")
    parser.add_argument("--identities", type=int, default=48)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher-pose", action="store_true",
                        help="experiment: flows use the shards' exact rotations in training (inference uses H's)")
    parser.add_argument("--save", help="name under --out for the trained weights (.pt) and held-out samples (.png: "
                        "source | driving | output | source turned by yaw +20)")
    parser.add_argument("--recipe", action="store_true", help="layer lightning_configs/osfv/cpu_recipe.yaml on --config")
    args, overrides = parser.parse_known_args()  # the rest: LightningCLI overrides, e.g. --model.init_args...
    args.overrides = [o for o in overrides if o != "--"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.recipe:
        args.overrides = ["--config", str(Path(args.config).with_name("cpu_recipe.yaml")), *args.overrides]
    train, val = data(args)
    if args.mode == "overfit":
        run_training(args, train[:1], same=False, val=None)
    elif args.mode == "autoencode":
        run_training(args, train, same=True, val=val)
    elif args.mode == "time":
        time_steps(args, train)
    elif args.mode == "train":
        run_training(args, train, same=False, val=val)
    elif args.mode == "gradients":
        gradients(args, train)
    else:
        init_check(args, train)


if __name__ == "__main__":
    main()
