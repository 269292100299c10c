"""Inference models of the few-shot papers (no Lightning): meta-learned and fine-tuned FSTH and LPD.

- :class:`FSTHModel` (Zakharov et al. 2019): embedder E and AdaIN generator G after meta-learning;
  ``reenact(references, references_landmarks, driving_landmarks)`` is the feed-forward result.
- :class:`FSTHPersonModel`: G with one person's AdaIN parameters psi' after fine-tuning;
  ``reenact(driving_landmarks, size)``.
- :class:`LPDModel` (Burkov et al. 2020): identity encoder, pose encoder and generator after meta-learning;
  ``reenact(references, driving_frames)``.
- :class:`LPDPersonModel`: the pose encoder and the generator with one person's identity embedding after
  fine-tuning; ``reenact(driving_frames)``.

Images are RGB in [0, 1], NCHW; landmarks are 68 (x, y) points in pixels of the image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from talkinghead.sketch import draw_sketch

__all__ = ["FSTHModel", "FSTHPersonModel", "LPDModel", "LPDPersonGenerator", "LPDPersonModel"]


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class _Named(nn.Module):
    """Submodules readable as ``model["name"]`` too (the key access training code has always used)."""

    names: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> nn.Module:
        if name not in self.names:
            raise KeyError(name)
        return getattr(self, name)


class FSTHModel(_Named):
    """FSTH after meta-learning: E (frames + sketches -> e) and G (sketch, psi = P e -> image).

    Args:
        embedder: E, (references (b, k, 3, s, s), sketches (b, k, 3, s, s)) -> e (b, d).
        generator: G with ``adain_parameters(e)`` (the projection P) and ``forward(sketch, psi)``.
    """

    names = ("embedder", "generator")

    def __init__(self, embedder: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.embedder = embedder
        self.generator = generator

    def embed(self, references: Tensor, landmarks: Tensor) -> Tensor:
        """e = mean over the K frames of E(frame, sketch): (b, d) from (b, k, 3, s, s) and (b, k, 68, 2)."""
        return self.embedder(references, draw_sketch(landmarks, references.shape[-1]))

    @torch.no_grad()
    def reenact(self, references: Tensor, references_landmarks: Tensor, driving_landmarks: Tensor,
                chunk: int = 16) -> Tensor:
        """Few-shot synthesis without fine-tuning: the person of the K references posed by each landmark set.

        Args:
            references: (k, 3, s, s) frames of one person, or (b, k, 3, s, s) one set per driving item.
            references_landmarks: (k, 68, 2) or (b, k, 68, 2) their landmarks in pixels.
            driving_landmarks: (t, 68, 2) landmarks to draw the person with.
            chunk: frames synthesised per forward pass.

        Returns:
            (t, 3, s, s) in [0, 1].
        """
        device = _device(self)
        if references.dim() == 4:
            references, references_landmarks = references[None], references_landmarks[None]
        psi = self.generator.adain_parameters(self.embed(references.to(device), references_landmarks.to(device)))
        size = references.shape[-1]
        outputs = []
        for start in range(0, driving_landmarks.shape[0], chunk):
            landmarks = driving_landmarks[start:start + chunk].to(device)
            params = psi if psi.shape[0] == 1 else psi[start:start + chunk]
            outputs.append(self.generator(draw_sketch(landmarks, size), params))
        return torch.cat(outputs)


class FSTHPersonModel(nn.Module):
    """G of FSTH 3.3 with the fine-tuned person's AdaIN parameters psi' as a parameter.

    Args:
        generator: the meta-learned G, (sketch, psi) -> image.
        num_adain_parameters: size of psi'.
    """

    def __init__(self, generator: nn.Module, num_adain_parameters: int) -> None:
        super().__init__()
        self.generator = generator
        self.adain = nn.Parameter(torch.zeros(1, num_adain_parameters))  # psi', set from P e_new before training

    def forward(self, sketch: Tensor) -> Tensor:
        """(b, 3, s, s) sketch -> (b, 3, s, s) image of the person in [0, 1]."""
        return self.generator(sketch, self.adain)

    @torch.no_grad()
    def reenact(self, driving_landmarks: Tensor, size: int, chunk: int = 16) -> Tensor:
        """The person posed by each set of driving landmarks (t, 68, 2) in pixels of a size x size image (anyone's):
        (t, 3, size, size) in [0, 1]."""
        device = _device(self)
        return torch.cat([self(draw_sketch(landmarks.to(device), size)) for landmarks in driving_landmarks.split(chunk)])


class LPDModel(_Named):
    """LPD after meta-learning: identity encoder, pose encoder and the generator (identity, pose) -> image.

    Args:
        identity_encoder: (b, k, 3, s, s) -> identity embedding (b, d_id).
        pose_encoder: (b, 3, s, s) -> pose descriptor (b, d_pose).
        generator: (identity, pose) -> {"image", "mask", "rgb"}.
    """

    names = ("identity_encoder", "pose_encoder", "generator")

    def __init__(self, identity_encoder: nn.Module, pose_encoder: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.identity_encoder = identity_encoder
        self.pose_encoder = pose_encoder
        self.generator = generator

    @torch.no_grad()
    def reenact(self, references: Tensor, driving: Tensor, chunk: int = 16) -> Tensor:
        """Feed-forward reenactment: the person of the references in the pose of each driving frame (anyone's).

        Args:
            references: (k, 3, s, s) frames of one person, or (b, k, 3, s, s) one set per driving frame.
            driving: (t, 3, s, s) frames whose pose (and expression) to take.
            chunk: frames synthesised per forward pass.

        Returns:
            (t, 3, s, s) in [0, 1]: RGB x mask.
        """
        device = _device(self)
        if references.dim() == 4:
            references = references[None]
        identity = self.identity_encoder(references.to(device))
        outputs = []
        for start in range(0, driving.shape[0], chunk):
            frames = driving[start:start + chunk].to(device)
            rows = identity if identity.shape[0] == 1 else identity[start:start + chunk]
            outputs.append(self.generator(rows, self.pose_encoder(frames))["image"])
        return torch.cat(outputs)


class LPDPersonGenerator(nn.Module):
    """The LPD generator with the fine-tuned person's identity embedding as a parameter.

    Args:
        generator: the meta-learned generator, (identity, pose) -> {"image", "mask", "rgb"}.
        identity_dim: size of the identity embedding.
    """

    def __init__(self, generator: nn.Module, identity_dim: int) -> None:
        super().__init__()
        self.generator = generator
        self.identity = nn.Parameter(torch.zeros(1, identity_dim))  # set from the person's frames before training

    def forward(self, pose: Tensor) -> dict[str, Tensor]:
        """(b, d_pose) pose descriptors -> the person in those poses: {"image", "mask", "rgb"} (b, ., s, s)."""
        return self.generator(self.identity, pose)


class LPDPersonModel(nn.Module):
    """LPD after fine-tuning: the (frozen) pose encoder and the person's generator.

    Args:
        pose_encoder: (b, 3, s, s) -> pose descriptor (b, d_pose).
        person: :class:`LPDPersonGenerator`.
    """

    def __init__(self, pose_encoder: nn.Module, person: LPDPersonGenerator) -> None:
        super().__init__()
        self.pose_encoder = pose_encoder
        self.person = person

    @torch.no_grad()
    def reenact(self, driving: Tensor, chunk: int = 16) -> Tensor:
        """The fine-tuned person in the pose of each driving frame (t, 3, s, s) (anyone's): (t, 3, s, s) in [0, 1]."""
        device = _device(self)
        return torch.cat([self.person(self.pose_encoder(frames.to(device)))["image"] for frames in driving.split(chunk)])
