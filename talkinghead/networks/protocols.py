"""The interfaces that callbacks, `talkinghead evaluate` and `talkinghead animate` program against (no Lightning).

Every talkinghead LightningModule is a :class:`Reconstructs`; OSFV's module and inference model are also
:class:`Animates` (one source, a driving video, free view). Checked with ``isinstance`` (runtime-checkable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Animates", "Reconstructs"]


@runtime_checkable
class Reconstructs(Protocol):
    def reconstruct_batch(self, batch: Mapping[str, Any]) -> Tensor:
        """The model's re-synthesis of ``batch["driving"]`` (b, 3, s, s) from the rest of the batch, in [0, 1]."""


@runtime_checkable
class Animates(Protocol):
    """A one-shot model: reconstruction from one source and animation of it (OSFV's module and OSFVModel)."""

    def reconstruct(self, source: Tensor, driving: Tensor) -> Tensor:
        """Each driving frame (b, 3, h, w) re-synthesised from its source (b, 3, h, w), in [0, 1]."""

    def animate(self, source: Tensor, driving_frames: Tensor, relative: bool = True, yaw: float = 0.0,
                pitch: float = 0.0, roll: float = 0.0, translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
                chunk: int = 16) -> Tensor:
        """One source image (3, h, w) driven by frames (t, 3, h, w), optionally turned: (t, 3, h, w) in [0, 1]."""
