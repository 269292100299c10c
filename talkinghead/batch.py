"""The batch vocabulary shared by DataModules, LightningModules and callbacks.

Every batch names frames by their role, and each role carries the same four fields:

- ``<role>``: images, float32 RGB in [0, 1];
- ``<role>_landmarks``: iBUG-68 landmarks in pixels of the (resized) image, float32;
- ``<role>_pose``: yaw, pitch, roll (degrees), tx, ty, tz (normalised), float32, NaN where the shard stores no pose;
- ``<role>_mask``: foreground mask in {0, 1}, float32, NaN where the shard stores no mask.

Roles:

- ``source``: the appearance to animate (OSFV), or one more frame of the person (fine-tuning stages);
- ``driving``: the frame to reproduce: its landmarks / pose drive the generator and its image is the ground truth;
- ``references``: K frames of the same video for the identity embedding (FSTH embedder, LPD identity encoder);
  never contains the driving frame.

Which roles a batch holds depends on the DataModule mode: pairs (source, driving), few-shot (references, driving,
video_index) and person (source, driving).
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor

__all__ = ["Batch", "ROLES", "FIELDS"]

ROLES = ("source", "driving", "references")
FIELDS = ("", "_landmarks", "_pose", "_mask")


class Batch(TypedDict, total=False):
    """A collated batch; shapes use b = batch, k = reference frames, s = image side."""

    source: Tensor  # (b, 3, s, s)
    source_landmarks: Tensor  # (b, 68, 2)
    source_pose: Tensor  # (b, 6)
    source_mask: Tensor  # (b, 1, s, s)
    driving: Tensor  # (b, 3, s, s)
    driving_landmarks: Tensor  # (b, 68, 2)
    driving_pose: Tensor  # (b, 6)
    driving_mask: Tensor  # (b, 1, s, s)
    references: Tensor  # (b, k, 3, s, s)
    references_landmarks: Tensor  # (b, k, 68, 2)
    references_pose: Tensor  # (b, k, 6)
    references_mask: Tensor  # (b, k, 1, s, s)
    video_index: Tensor  # (b,) int64, the video's column in a projection discriminator
    identity: list[str]  # (b,) person ids
    video: list[str]  # (b,) video ids
    frame_index: Tensor  # (b, n) int64, source/references first, driving last: frame numbers in the clip
    # (PersonDataModule: positions among the person's chosen frames / held-out frames)
    sample: list[str]  # (b,) provenance "<shard url>#<sample key>"
