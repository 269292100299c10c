"""What the few-shot learning benchmarks (fsth_learning.py, lpd_learning.py) share: configs, data and scores.

Imported by those scripts as a sibling module (``python benchmarks/<script>.py`` puts this folder on sys.path).
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
from talkinghead.metrics import PSNR, SSIM

__all__ = ["config_path", "duration", "write_data", "scores", "export_meta", "generator_steps", "Judge"]


def config_path(model: str, name: str) -> Path:
    """A config of lightning_configs/<model>, from the repository (or the installed package's copy)."""
    local = Path(__file__).resolve().parents[1] / "lightning_configs" / model / name
    if local.is_file():
        return local
    return Path(str(resources.files("talkinghead.lightning_configs") / model / name))


def duration(seconds: int) -> str:
    """A Trainer max_time ("DD:HH:MM:SS") of ``seconds``."""
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def write_data(args: argparse.Namespace, out: Path) -> tuple[Path, list[Path]]:
    """Training shards (``args.identities`` people x 2 clips) and one folder per held-out person (``args.people``),
    64 px, ``args.frames`` frames per clip; written once and reused when present."""
    train = out / "data" / "train"
    people = [out / "data" / f"person{i}" for i in range(args.people)]
    if not train.exists():
        write_synthetic_shards(train, identities=args.identities, clips_per_identity=2, frames=args.frames, size=64,
                               seed=args.seed, clips_per_shard=4)
    for i, folder in enumerate(people):
        if not folder.exists():
            write_synthetic_shards(folder, identities=1, first_identity=100_000 + i, clips_per_identity=2,
                                   frames=args.frames, size=64, seed=args.seed, clips_per_shard=2)
    return train, people


def scores(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM and L1 of a batch of (b, 3, s, s) images in [0, 1] against their targets."""
    psnr, ssim = PSNR(), SSIM()
    psnr.update(prediction, target)
    ssim.update(prediction, target)
    return {"PSNR": psnr.compute().item(), "SSIM": ssim.compute().item(),
            "L1": F.l1_loss(prediction, target).item()}


def generator_steps(checkpoint: Path) -> int:
    """The G steps a reused meta-learning checkpoint trained for: Lightning's global_step counts every optimizer
    step, so it is divided by the module's optimizer steps per batch (G and D steps, or G alone without D terms)."""
    from talkinghead.evaluation import load_model

    global_step = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    return global_step // load_model(checkpoint).optimizer_steps_per_batch


def export_meta(cli, path: str) -> None:
    """Writes a meta-learning run's module as the small checkpoint the assets ship: its inference networks and the
    meta-learned discriminator that fine-tuning starts from (no VGG, no optimizer state)."""
    from talkinghead.lightning.slim import write_inference_checkpoint

    written = write_inference_checkpoint(cli.model, path, cli.trainer.global_step,
                                         {"image_size": cli.datamodule.image_size,
                                          "remove_background": cli.datamodule.remove_background},
                                         keep=("projection_discriminator",))
    print(f"meta-learned checkpoint for fine-tuning and evaluation: {written} "
          f"({written.stat().st_size / 2**20:.1f} MiB)", flush=True)


class Judge:
    """The shipped synthetic identity / landmark judge (talkinghead.metrics.synthetic_judge), never trained with
    the models it scores: identity as cosine similarity of unit embeddings, pose as landmark error."""

    def __init__(self) -> None:
        from talkinghead.metrics.synthetic_judge import load_judge

        self.judge, self.figures = load_judge()

    def read(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """(n, 3, s, s) in [0, 1] -> {"embedding" (n, d) unit identity embeddings, "landmarks" (n, 68, 2) px}."""
        return self.judge.read(frames)

    def embeddings(self, frames: torch.Tensor) -> torch.Tensor:
        return self.read(frames)["embedding"]

    def centroid(self, frames: torch.Tensor) -> torch.Tensor:
        """A person's identity: the normalised mean embedding of their real frames, (d,)."""
        return self.judge.identity(frames)

    def identity_and_pose(self, outputs: torch.Tensor, person: str, centroids: dict[str, torch.Tensor],
                          landmarks: torch.Tensor) -> dict[str, float]:
        """How much ``outputs`` look like ``person`` (mean cosine to their centroid, mean cosine to the other
        people's centroids, the share of outputs whose nearest centroid is theirs: chance = 1 / people) and how
        well they follow ``landmarks`` (``pose_px``: see :meth:`pose_error`), from one pass of the judge."""
        read = self.read(outputs)
        names = list(centroids)
        similarity = read["embedding"] @ torch.stack([centroids[n] for n in names]).t()  # (n, people)
        own = names.index(person)
        others = [i for i in range(len(names)) if i != own]
        return {"cos_own": similarity[:, own].mean().item(), "cos_others": similarity[:, others].mean().item(),
                "identified": (similarity.argmax(1) == own).float().mean().item(),
                "pose_px": (read["landmarks"] - landmarks).norm(dim=-1).mean().item()}

    def pose_error(self, outputs: torch.Tensor, landmarks: torch.Tensor) -> float:
        """Mean distance (pixels) between the landmarks the judge reads from ``outputs`` and ``landmarks``."""
        return (self.read(outputs)["landmarks"] - landmarks).norm(dim=-1).mean().item()
