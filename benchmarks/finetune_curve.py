"""Fine-tuning learning curve of a meta-learned FSTH or LPD checkpoint on held-out people: PSNR and SSIM of the
fine-tuned model on each person's held-out frames (never among the T) every --every generator steps, averaged over
people, beside the mean of the T frames and copying the first of them (the PNG plots PSNR, the JSON both).
Fine-tunes with the package's fine-tuning config (the same ``talkinghead fit`` stage ``talkinghead evaluate --mode
few-shot`` runs) and writes a PNG and a JSON::

    python benchmarks/finetune_curve.py --checkpoint talkinghead/assets/fsth_tiny_meta.ckpt --data PEOPLE \\
        --shots 8 --steps 300 --every 25 --out docs/fsth_tiny_finetune_curve.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch

from few_shot_common import scores
from osfv_learning import plot_curve

from talkinghead.evaluation import checkpoint_data_setting, checkpoint_image_size, load_model
from talkinghead.few_shot_evaluation import (FewShotSettings, default_finetune_config, few_shot_kind, finetuning_cli,
                                             people_in, person_data)


def held_out_scores(prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(PSNR, SSIM) of predictions, clamped to [0, 1], against the held-out frames."""
    measured = scores(prediction.clamp(0, 1), target)
    return measured["PSNR"], measured["SSIM"]


class HeldOutPSNR(L.Callback):
    """Held-out PSNR and SSIM of the fine-tuned model every ``every`` generator steps (and at step 0)."""

    def __init__(self, held: dict[str, torch.Tensor], every: int, per_batch: int) -> None:
        self.held, self.every, self.per_batch = held, every, per_batch
        self.points: dict[int, float] = {}
        self.ssim: dict[int, float] = {}

    def measure(self, module: L.LightningModule, step: int) -> None:
        self.points[step], self.ssim[step] = held_out_scores(module.reconstruct_batch(self.held), self.held["driving"])
        module.train()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.measure(module, 0)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        step = trainer.global_step // self.per_batch
        if step % self.every == 0 and step not in self.points:
            self.measure(module, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="meta-learned FSTH or LPD checkpoint")
    parser.add_argument("--data", required=True, help="shards of held-out people")
    parser.add_argument("--people", type=int, default=4)
    parser.add_argument("--shots", type=int, default=8, help="T")
    parser.add_argument("--held-out", type=int, default=8, help="held-out frames per person")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning generator steps")
    parser.add_argument("--every", type=int, default=25, help="measure every this many generator steps")
    parser.add_argument("--finetune-config", help="default: the package's, as `evaluate --mode few-shot`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/finetune_curve.png", help="PNG (a .json beside it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kind = few_shot_kind(load_model(args.checkpoint))
    if kind is None:
        parser.exit(2, f"{args.checkpoint} is not a meta-learned FSTH or LPD checkpoint\n")
    size = checkpoint_image_size(args.checkpoint)
    background = bool(checkpoint_data_setting(args.checkpoint, "remove_background", False))
    config = args.finetune_config or default_finetune_config(kind, size)
    curves, ssim_curves, baselines = [], [], {"mean of T frames": [], "copy first frame": []}
    started = time.perf_counter()
    settings = FewShotSettings(shots=(args.shots,), finetune_steps=args.steps, held_out=args.held_out,
                               remove_background=background)
    for identity in people_in(args.data, args.people):
        person, held = person_data(args.data, identity, args.shots, settings, size)
        references, target = person["references"], held["driving"]
        baselines["mean of T frames"].append(held_out_scores(references.mean(0, keepdim=True).expand_as(target),
                                                             target))
        baselines["copy first frame"].append(held_out_scores(references[:1].expand_as(target), target))
        cli = finetuning_cli(args.checkpoint, config, args.data, identity, args.shots, settings, size,
                             "/tmp/finetune_curve_runs")
        probe = HeldOutPSNR(held, args.every, cli.model.optimizer_steps_per_batch)
        cli.trainer.callbacks.append(probe)
        cli.trainer.fit(cli.model, cli.datamodule)
        curves.append(probe.points)
        ssim_curves.append(probe.ssim)
        (mean_psnr, mean_ssim), (copy_psnr, copy_ssim) = (baselines[name][-1] for name in baselines)
        print(f"{identity}: " + ", ".join(f"G{s} {v:.2f}/{probe.ssim[s]:.3f}" for s, v in sorted(probe.points.items()))
              + f" | mean of T {mean_psnr:.2f}/{mean_ssim:.3f}, copy {copy_psnr:.2f}/{copy_ssim:.3f}", flush=True)
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    mean_curve = {s: sum(c[s] for c in curves) / len(curves) for s in steps}
    ssim_curve = {s: sum(c[s] for c in ssim_curves) / len(ssim_curves) for s in steps}
    base = {name: sum(v[0] for v in values) / len(values) for name, values in baselines.items()}
    base_ssim = {name: sum(v[1] for v in values) / len(values) for name, values in baselines.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curve([(s, mean_curve[s], base["mean of T frames"]) for s in steps], out,
               title=f"{kind.upper()} tiny fine-tuned to T={args.shots} (red) vs mean of T frames (grey): "
                     f"held-out PSNR, {len(curves)} people")
    summary = {"checkpoint": args.checkpoint, "data": args.data, "shots": args.shots, "config": str(config),
               "curve": mean_curve, "baselines": base, "ssim_curve": ssim_curve, "ssim_baselines": base_ssim,
               "minutes": (time.perf_counter() - started) / 60}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print("mean held-out PSNR / SSIM by G step: "
          + ", ".join(f"{s}: {v:.2f} / {ssim_curve[s]:.3f}" for s, v in mean_curve.items()))
    print("baselines: " + ", ".join(f"{k} {v:.2f} / {base_ssim[k]:.3f}" for k, v in base.items()))


if __name__ == "__main__":
    main()
