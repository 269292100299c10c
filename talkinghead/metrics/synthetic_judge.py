"""An independent judge of identity and pose for SYNTHETIC heads (datamodules.synthetic_heads), where no face
detector or face-recognition network works (the 64-px renders and the blurry outputs of short runs have no faces
that dlib or MTCNN find).

:class:`SyntheticJudge` is a small CNN with two heads, trained once on renders of many synthetic people whose exact
identity labels and landmarks the renderer gives (varied pose, expression, light and background):

- ``embedding``: a unit 128-d identity embedding (trained as a cosine classifier over the training people, so
  people it never saw are compared by cosine similarity, as a face-recognition embedding is);
- ``landmarks``: the 68 landmarks in pixels (a probe for pose following: the driver's exact landmarks against
  the landmarks the judge reads from an output).

It is never part of any model's training: the few-shot benchmarks only score outputs with it. Its people are
drawn from their own range of synthetic identities (``JUDGE_FIRST_IDENTITY`` on), disjoint from the benchmarks'
training and held-out people. ``benchmarks/identity_judge.py`` trains it reproducibly (seeded) and writes
``talkinghead/assets/synthetic_judge.safetensors`` (weights, with the architecture and the held-out figures in the
file's metadata); :func:`load_judge` reads it with safetensors (no code runs from the file).

It measures synthetic people only; for real faces keep dlib / facenet (:mod:`talkinghead.metrics.identity`).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SyntheticJudge", "load_judge", "save_judge", "JUDGE_FILE", "JUDGE_FIRST_IDENTITY", "judge_path"]

JUDGE_FILE = "synthetic_judge.safetensors"
JUDGE_FIRST_IDENTITY = 500_000  # the judge's training people; the benchmarks use 0.. (train) and 100000.. (held out)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class SyntheticJudge(nn.Module):
    """Identity embedding and landmarks of (b, 3, s, s) frames in [0, 1] (s = ``image_size``).

    Args:
        num_identities: training people (rows of the cosine classifier; only training reads them).
        image_size: the frame side it reads; other sizes are resized to it (landmarks are returned in the input's
            pixels).
        width: channels of the first block (doubled per block, four blocks).
        embedding_dim: size of the identity embedding.
    """

    def __init__(self, num_identities: int, image_size: int = 64, width: int = 32, embedding_dim: int = 128) -> None:
        super().__init__()
        self.config = {"num_identities": num_identities, "image_size": image_size, "width": width,
                       "embedding_dim": embedding_dim}
        channels = [3, width, 2 * width, 4 * width, 8 * width]
        self.trunk = nn.Sequential(*[_block(a, b) for a, b in zip(channels, channels[1:])])
        features = channels[-1] * 2 * 2  # a 2 x 2 grid keeps where things are (the landmarks need it)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.identity_head = nn.Sequential(nn.Linear(features, 256), nn.ReLU(inplace=True),
                                           nn.Linear(256, embedding_dim))
        self.landmark_head = nn.Sequential(nn.Linear(features, 256), nn.ReLU(inplace=True), nn.Linear(256, 68 * 2))
        self.classifier = nn.Parameter(torch.randn(num_identities, embedding_dim) * 0.01)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        """(b, 3, s, s) in [0, 1] -> {"embedding" (b, d) of unit norm, "landmarks" (b, 68, 2) in input pixels}."""
        size = frames.shape[-1]
        x = frames if size == self.image_size else F.interpolate(frames, size=self.image_size, mode="bilinear",
                                                                  align_corners=False, antialias=True)
        x = self.pool(self.trunk(x - self.mean)).flatten(1)
        embedding = F.normalize(self.identity_head(x), dim=-1)
        landmarks = self.landmark_head(x).view(-1, 68, 2)  # normalised: -1 .. 1 across the image
        return {"embedding": embedding, "landmarks": (landmarks + 1) * (size / 2)}

    @torch.no_grad()
    def read(self, frames: Tensor, chunk: int = 64) -> dict[str, Tensor]:
        """:meth:`forward` over any number of frames (clamped to [0, 1]), ``chunk`` at a time, without gradients."""
        outs = [self(frames[i:i + chunk].clamp(0, 1)) for i in range(0, len(frames), chunk)]
        return {key: torch.cat([out[key] for out in outs]) for key in outs[0]}

    def identity(self, frames: Tensor) -> Tensor:
        """A person's identity from their frames (n, 3, s, s): the normalised mean embedding, (d,)."""
        return F.normalize(self.read(frames)["embedding"].mean(0), dim=0)

    def logits(self, embedding: Tensor, scale: float = 16.0) -> Tensor:
        """Cosine-classifier logits over the training people (training only)."""
        return scale * embedding @ F.normalize(self.classifier, dim=-1).t()


def judge_path() -> Path:
    """The shipped judge (package data)."""
    return Path(str(resources.files("talkinghead.assets") / JUDGE_FILE))


def save_judge(judge: SyntheticJudge, path: str | os.PathLike, figures: dict[str, Any] | None = None) -> Path:
    """Writes the judge's weights (without the training-only classifier) as safetensors, with its architecture and
    ``figures`` (its held-out accuracy) as JSON in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in judge.state_dict().items() if k != "classifier"}
    metadata = {"config": json.dumps(judge.config), "figures": json.dumps(figures or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def load_judge(path: str | os.PathLike | None = None) -> tuple[SyntheticJudge, dict[str, Any]]:
    """(judge in eval mode, its recorded figures) from a file :func:`save_judge` wrote; the shipped one by default.

    Raises:
        FileNotFoundError: no such file (for the shipped one: ``python benchmarks/identity_judge.py`` makes it).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else judge_path()
    if not path.is_file():
        raise FileNotFoundError(f"synthetic identity judge not found: {path} (python benchmarks/identity_judge.py "
                                "trains and writes it)")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    judge = SyntheticJudge(**json.loads(metadata["config"]))
    missing, unexpected = judge.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or set(missing) != {"classifier"}:
        raise ValueError(f"{path} does not hold a SyntheticJudge: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return judge.eval(), json.loads(metadata.get("figures", "{}"))
