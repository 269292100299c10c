"""Time of one G+D training step (``training_step``: G forward, losses and update, then the D update) on synthetic
batches held in memory, so data loading is not timed::

    python benchmarks/train_step.py --model osfv --size 64 --batch 16 --steps 10          # the tiny config
    python benchmarks/train_step.py --model osfv --size 64 --batch 16 --compare           # vs the old step, one run
    python benchmarks/train_step.py --model fsth --size 64 --batch 4 --compare            # FSTH vs before issue 16
    python benchmarks/train_step.py --model osfv --size 256 --batch 4 --steps 1 --warmup 0 \\
        --config lightning_configs/osfv/vox256.yaml                                        # paper scale
    python benchmarks/train_step.py --model osfv --size 256 --batch 4 --device cuda --precision bf16-mixed \\
        --config lightning_configs/osfv/vox256.yaml --compare

The module comes from the config through ``TalkingHeadCLI(run=False)`` (extra arguments after ``--`` are
LightningCLI overrides, e.g. ``-- --model.init_args.channels_last=false``); its own ``training_step`` runs under a
plain one-device Trainer, which applies ``--precision`` (bf16-mixed: torch.autocast). Prints the median step time,
samples/s and peak memory: the process's peak RSS on the CPU (building the module included, and with
``--compare`` the larger of the two), ``torch.cuda.max_memory_allocated`` over each formulation's steps on a GPU.

``--compare`` also times the step as it was before issue 13 on a copy of the same module (``Reference``): the
discriminator judges the real frames in the generator step and again in the discriminator step, the generator
step's graph runs through D's weights, the motion estimator's keypoint heatmaps keep their subnormal tails, and the
weights keep PyTorch's default layout. For FSTH and LPD (``--model fsth|lpd``, random frames with face-like
landmarks) the reference is the step without a D(real) pass shared by feature matching and the first D step (FSTH
before issue 16, LPD before issue 17). The two
alternate in ``--rounds`` rounds, so machine load hits both alike.
``--against SITE`` times another version of the package in the same run instead: SITE is a folder holding it
installed (``git worktree add /tmp/base REV && pip install --no-deps --no-build-isolation --target /tmp/before
/tmp/base``); this script then runs itself in ``--rounds`` alternating subprocesses, one importing talkinghead from
SITE ("before") and one from this checkout ("after"), with the same batches and arguments, and prints both and the
speed-up. Unlike ``--compare`` this also measures process-wide changes (talkinghead.allocator)::

    python benchmarks/train_step.py --model fsth --size 128 --batch 4 --threads 2 --against /tmp/before
    python benchmarks/train_step.py --model lpd --size 128 --batch 4 --threads 2 --against /tmp/before \
        -- "--model.init_args.generator.init_args.channels=[64, 64, 32, 16, 16]"   # 5 up blocks for 128 px

``--profile`` adds torch.profiler's most expensive operators over the last round's timed steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import tempfile
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

import talkinghead.flows
from talkinghead.cli import TalkingHeadCLI
from talkinghead.lightning.adversarial import detach_outputs

CONFIGS = {"osfv": ("osfv", "tiny.yaml"), "fsth": ("fsth", "tiny_meta.yaml"), "lpd": ("lpd", "tiny_meta.yaml")}
FEW_SHOT = ("fsth", "lpd")
# The networks FSTH and LPD build for one image size: --size sets theirs with the data's.
SIZED_NETWORKS = {"fsth": ("embedder", "generator", "discriminator"), "lpd": ("generator", "discriminator")}
NUM_VIDEOS = 64  # FSTH, LPD: columns of the projection discriminator's W for the in-memory batches
# The Trainer the config names is replaced by a one-device one here; these keep a paper (GPU, DDP, wandb) config
# instantiable on any machine.
NEUTRAL_TRAINER = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
                   "--trainer.precision=32-true", "--trainer.sync_batchnorm=false", "--trainer.logger=false"]


class Reference:
    """The pre-issue-13 formulation of the OSFV step, applied to a copy of the module (see the docstring)."""

    @staticmethod
    def training_step(self: Any, batch: Mapping[str, Any], batch_idx: int) -> None:
        """``AdversarialModule.training_step`` as it was: the loss hooks called without a shared real judgement
        run D on the real frames themselves, and ``_step`` toggles each optimizer only around its backward."""
        generator_optimizer, discriminator_optimizer = self.optimizers()
        outputs = self.run_generator(batch)
        g_total = self.weighted_sum(self.generator_losses(batch, outputs))
        self._step(generator_optimizer, g_total)
        detached = detach_outputs(outputs)
        for _ in range(self.discriminator_steps):
            self._step(discriminator_optimizer, self.weighted_sum(self.discriminator_losses(batch, detached)))
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator_side())

    @staticmethod
    def keypoint_heatmaps(keypoints: Tensor, shape: tuple[int, int, int], variance: float = 0.01) -> Tensor:
        """The Gaussians with their subnormal tails."""
        grid = talkinghead.flows.coordinate_grid_3d(*shape, device=keypoints.device, dtype=keypoints.dtype)
        squared = (grid[None, None] - keypoints[:, :, None, None, None, :]).pow(2).sum(-1)
        return torch.exp(-0.5 * squared / variance)

    @classmethod
    def of(cls, module: L.LightningModule) -> L.LightningModule:
        reference = copy.deepcopy(module)
        reference.training_step = cls.training_step.__get__(reference)
        if hasattr(reference, "channels_last"):
            reference.channels_last = False
        return reference

    @classmethod
    @contextmanager
    def heatmaps(cls) -> Iterator[None]:
        current = talkinghead.flows.keypoint_heatmaps
        talkinghead.flows.keypoint_heatmaps = cls.keypoint_heatmaps
        try:
            yield
        finally:
            talkinghead.flows.keypoint_heatmaps = current


class FewShotReference:
    """FSTH's step before issue 16, LPD's before issue 17: the loss hooks judge the real frames themselves (D runs
    on them in the generator step's feature matching and again in the first D step), and the weights keep PyTorch's
    default layout."""

    heatmaps = staticmethod(nullcontext)  # nothing to swap

    @classmethod
    def of(cls, module: L.LightningModule) -> L.LightningModule:
        reference = copy.deepcopy(module)
        reference.judge_real = lambda batch: None
        reference.channels_last = False
        return reference


class InMemoryData(L.LightningDataModule):
    """The batches as a datamodule (FSTH sizes W from ``num_videos`` and checks ``image_size`` at setup)."""

    def __init__(self, loader: list[dict[str, Tensor]], image_size: int, num_videos: int) -> None:
        super().__init__()
        self.loader, self.image_size, self.num_videos = loader, image_size, num_videos

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.loader, batch_size=None)


def few_shot_batch(size: int, batch: int, generator: torch.Generator, k: int = 4) -> dict[str, Tensor]:
    """K = 4 reference frames and a target per item with their landmarks (random frames, landmarks of a face-like
    68-point layout jittered per frame), the target's foreground mask (a centred disc: LPD's dice term) and a video
    index."""
    from talkinghead.datamodules.synthetic_heads import synthetic_clip

    landmarks = synthetic_clip(0, 0, 0, 1, size).landmarks[0]
    jitter = lambda *shape: landmarks + torch.randn(*shape, 68, 2, generator=generator)  # noqa: E731
    axis = torch.linspace(-1, 1, size)
    disc = (axis[:, None] ** 2 + axis[None, :] ** 2 < 0.5).float()
    return {"references": torch.rand(batch, k, 3, size, size, generator=generator),
            "references_landmarks": jitter(batch, k), "driving": torch.rand(batch, 3, size, size, generator=generator),
            "driving_landmarks": jitter(batch), "driving_mask": disc.expand(batch, 1, size, size).clone(),
            "video_index": torch.randint(NUM_VIDEOS, (batch,), generator=generator)}


def random_batch(size: int, batch: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Uniform noise images and random pose labels (yaw, pitch, roll within +-30 degrees, small translations)."""
    pose = torch.cat([(torch.rand(batch, 3, generator=generator) - 0.5) * 60,
                      (torch.rand(batch, 3, generator=generator) - 0.5) * 0.2], dim=1)
    return {"source": torch.rand(batch, 3, size, size, generator=generator),
            "driving": torch.rand(batch, 3, size, size, generator=generator), "driving_pose": pose}


def head_batch(size: int, batch: int, generator: torch.Generator) -> dict[str, Tensor]:
    """First and last frames of rendered synthetic-head clips (one person each) and the last frame's pose."""
    from talkinghead.datamodules.synthetic_heads import synthetic_clip

    source, driving, pose = [], [], []
    for index in range(batch):
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        clip = synthetic_clip(seed, index, clip=0, frames=8, size=size)
        frames = clip.frames.permute(0, 3, 1, 2).float() / 255
        source.append(frames[0])
        driving.append(frames[-1])
        pose.append(clip.pose[-1])
    return {"source": torch.stack(source), "driving": torch.stack(driving), "driving_pose": torch.stack(pose)}


class StepTimer(L.Callback):
    """Wall time of each training step after ``warmup`` steps (the batch is on the device already), optionally
    under torch.profiler; resets the GPU's peak-memory counter when timing starts."""

    def __init__(self, warmup: int, profiler: torch.profiler.profile | None) -> None:
        self.warmup, self.profiler = warmup, profiler
        self.times: list[float] = []
        self.device = torch.device("cpu")
        self._start = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.device = pl_module.device
        if batch_idx == self.warmup:
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            if self.profiler is not None:
                self.profiler.start()
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._sync()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.profiler is not None and len(self.times) > 0:
            self.profiler.stop()


def time_steps(module: L.LightningModule, batches: list[dict[str, Tensor]], steps: int, warmup: int,
               args: argparse.Namespace, profiler: torch.profiler.profile | None) -> tuple[list[float], float | None]:
    """Per-step seconds of ``steps`` timed steps after ``warmup``, and the peak GPU memory in GiB (None on CPU)."""
    timer = StepTimer(warmup, profiler)
    callbacks: list[L.Callback] = [timer]
    if args.compile:
        from talkinghead.cli import CompileNetworks

        callbacks.append(CompileNetworks())  # at fit start, after the EMA copy; the warm-up steps compile
    loader = [batches[i % len(batches)] for i in range(warmup + steps)]
    optimizer_steps = module.optimizer_steps_per_batch * len(loader)  # global_step counts G and D steps
    trainer = L.Trainer(accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1,
                        precision=args.precision, max_steps=optimizer_steps, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks)
    if args.model in FEW_SHOT:
        trainer.fit(module, datamodule=InMemoryData(loader, args.size, NUM_VIDEOS))
    else:
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(loader, batch_size=None))
    peak = torch.cuda.max_memory_allocated(timer.device) / 2**30 if timer.device.type == "cuda" else None
    return timer.times, peak


def sized_networks(model: str, size: int) -> list[str]:
    """CLI overrides building the model's fixed-size networks (FSTH, LPD) for ``size`` px."""
    return [f"--model.init_args.{name}.init_args.image_size={size}" for name in SIZED_NETWORKS.get(model, ())]


def without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values (``--flag value`` or ``--flag=value``); what follows
    ``--`` is kept as it is."""
    kept: list[str] = []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--":
            return kept + argv[index:]
        elif arg.split("=", 1)[0] in flags:
            skip = "=" not in arg
        else:
            kept.append(arg)
    return kept


def against(args: argparse.Namespace) -> None:
    """``--against SITE``: alternate subprocesses of this script on the package in SITE and on this checkout."""
    site = Path(args.against).resolve()
    if not (site / "talkinghead" / "__init__.py").is_file():
        print(f"train_step.py: --against {site}: no installed talkinghead package there (make one with pip install "
              f"--no-deps --no-build-isolation --target {site} <checkout>)", file=sys.stderr)
        raise SystemExit(2)
    passed = without(sys.argv[1:], ("--against", "--rounds", "--steps", "--json"))
    split = passed.index("--") if "--" in passed else len(passed)  # the overrides stay last
    per_round = [args.steps // args.rounds + (i < args.steps % args.rounds) for i in range(args.rounds)]
    versions = {"before": str(site), "after": None}
    times: dict[str, list[float]] = {name: [] for name in versions}
    packages: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        for steps in per_round:
            for name, path in versions.items():
                env = dict(os.environ)
                if path is not None:
                    env["PYTHONPATH"] = os.pathsep.join([path, *filter(None, [env.get("PYTHONPATH")])])
                out = Path(folder) / f"{name}.json"
                command = [sys.executable, __file__, *passed[:split], "--steps", str(steps), "--json", str(out),
                           *passed[split:]]
                run = subprocess.run(command, env=env, capture_output=True, text=True)
                if run.returncode != 0:
                    raise SystemExit(f"train_step.py: the {name} run failed:\n{run.stderr[-3000:]}")
                result = json.loads(out.read_text())
                times[name] += result["times"]
                packages[name] = result["package"]
    print(f"\n{args.model}: {args.size} px, batch {args.batch}, {args.device} {args.precision}, {args.threads} "
          f"thread(s), {args.data} data, {args.steps} timed steps per version in {args.rounds} rounds")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {name:<7} {packages[name]}: median step {median * 1e3:8.1f} ms  (min {min(seconds) * 1e3:.1f}, "
              f"max {max(seconds) * 1e3:.1f})  {args.batch / median:7.2f} samples/s")
    ratio = statistics.median(times["before"]) / statistics.median(times["after"])
    print(f"  speed-up of after over before (median step): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="osfv")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--config", help="LightningCLI config (default: the model's tiny config)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (per formulation with --compare)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each timed run")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare or --against: alternations of the two")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--data", choices=["random", "heads"], default="random",
                        help="noise images or rendered synthetic heads")
    parser.add_argument("--batches", type=int, default=2, help="distinct batches cycled through")
    parser.add_argument("--compare", action="store_true", help="also time the pre-issue-13 step (see above)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks (as compile: true in a config); give --warmup >= 2")
    parser.add_argument("--against", metavar="SITE", help="also time the package installed in SITE (see above)")
    parser.add_argument("--json", metavar="FILE", help="write the step times as JSON (what --against reads)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="LightningCLI overrides after --")
    args = parser.parse_args()
    if args.against:
        if args.compare:
            parser.error("--against and --compare are two different comparisons: choose one")
        return against(args)
    torch.set_num_threads(args.threads)

    folder, name = CONFIGS[args.model]
    config = args.config or str(resources.files("talkinghead.lightning_configs") / folder / name)
    sys.argv = sys.argv[:1]  # LightningCLI reads only the args given here
    cli = TalkingHeadCLI(args=["--config", config, "--data.init_args.shards=unused",
                               f"--data.init_args.image_size={args.size}", f"--seed_everything={args.seed}",
                               *NEUTRAL_TRAINER, *sized_networks(args.model, args.size), *args.overrides], run=False)
    generator = torch.Generator().manual_seed(args.seed)
    make = few_shot_batch if args.model in FEW_SHOT else random_batch if args.data == "random" else head_batch
    batches = [make(args.size, args.batch, generator) for _ in range(args.batches)]

    formulations = {"current": (cli.model, nullcontext)}
    if args.compare:
        reference = FewShotReference if args.model in FEW_SHOT else Reference
        formulations["reference"] = (reference.of(cli.model), reference.heatmaps)
    rounds = args.rounds if args.compare else 1
    per_round = [args.steps // rounds + (i < args.steps % rounds) for i in range(rounds)]
    times: dict[str, list[float]] = {name: [] for name in formulations}
    peaks: dict[str, float | None] = {}
    profilers = {name: torch.profiler.profile() if args.profile else None for name in formulations}
    for index, steps in enumerate(per_round):
        for name, (module, context) in formulations.items():
            profiler = profilers[name] if index == rounds - 1 else None  # a profiler starts once
            with context():
                seconds, peak = time_steps(module, batches, steps, args.warmup, args, profiler)
            times[name] += seconds
            peaks[name] = max(peaks.get(name) or 0.0, peak) if peak is not None else None

    if args.json:
        import talkinghead

        Path(args.json).write_text(json.dumps({"package": str(Path(talkinghead.__file__).parent),
                                               "times": times["current"], "peak_gpu_gib": peaks["current"]}))
    print(f"\n{args.model} {config}: {args.size} px, batch {args.batch}, {args.device} {args.precision}"
          f"{', compiled' if args.compile else ''}, "
          f"{torch.get_num_threads()} thread(s), {args.data} data, {args.steps} timed steps"
          f"{f' per formulation in {rounds} rounds' if args.compare else ''}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        memory = "" if peaks[name] is None else f"  peak GPU memory {peaks[name]:.2f} GiB"
        print(f"  {name:<10} median step {median * 1e3:8.1f} ms  (min {min(seconds) * 1e3:.1f}, "
              f"max {max(seconds) * 1e3:.1f})  {args.batch / median:7.2f} samples/s{memory}")
    if args.compare:
        ratio = statistics.median(times["reference"]) / statistics.median(times["current"])
        print(f"  speed-up of current over reference (median step): {ratio:.2f}x")
    if not args.device.startswith("cuda"):
        print(f"  peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    for name, profiler in profilers.items():
        if profiler is not None:
            print(f"\n{name}: torch.profiler over the last round's timed steps")
            key = "self_device_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
            print(profiler.key_averages().table(sort_by=key, row_limit=20))


if __name__ == "__main__":
    main()
