"""Frames of a clip as tensors, resized and augmented consistently across images, landmarks, poses and masks."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import kornia.enhance as KE
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from talkinghead.batch import ROLES
from talkinghead.landmarks import FLIP_PERMUTATION

from .shard_format import Clip

__all__ = [
    "Frames", "clip_to_frames", "hflip", "ColorJitter", "Augment", "select", "remove_background", "to_uint8",
    "from_uint8", "UNKNOWN_MASK",
]


class Frames(TypedDict):
    """n frames of one clip, in the batch vocabulary's units (see talkinghead.batch)."""

    image: Tensor  # (n, 3, s, s) float32 in [0, 1] (uint8 in [0, 255] from clip_to_frames(uint8=True))
    landmarks: Tensor  # (n, 68, 2) float32 pixels
    pose: Tensor  # (n, 6) float32, NaN when unknown
    mask: Tensor  # (n, 1, s, s) float32 in {0, 1}, NaN when unknown


def clip_to_frames(clip: Clip, image_size: int, uint8: bool = False) -> Frames:
    """Tensors of a decoded clip, resized to image_size x image_size (landmarks scaled with the image).

    ``uint8``: images stay uint8 (as decoded; resized ones are rounded back to uint8), for :func:`to_uint8` items.
    """
    image = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2)
    resize = image.shape[-1] != image_size
    if resize or not uint8:
        image = image.float().div_(255.0)
    landmarks = torch.from_numpy(clip.landmarks.astype(np.float32))
    num, _, height, width = image.shape
    if height != width:
        raise ValueError(f"clip {clip.meta.video!r} has non-square frames {height}x{width}; shards hold square crops")
    if clip.mask is None:
        mask = torch.full((num, 1, height, width), math.nan)
    else:
        mask = torch.from_numpy(clip.mask.astype(np.float32)).unsqueeze(1)
    if resize:
        scale = image_size / height
        image = F.interpolate(image, size=image_size, mode="bilinear", antialias=True, align_corners=False)
        image = image.clamp_(0.0, 1.0)
        if uint8:
            image = image.mul_(255).round_().to(torch.uint8)
        mask = F.interpolate(mask, size=image_size, mode="nearest")
        # Pixel centres sit at integers: a point x maps to (x + 0.5) * scale - 0.5.
        landmarks = (landmarks + 0.5) * scale - 0.5
    pose = torch.full((num, 6), math.nan) if clip.pose is None else torch.from_numpy(clip.pose.astype(np.float32))
    return Frames(image=image, landmarks=landmarks, pose=pose, mask=mask)


def remove_background(frames: Frames) -> Frames:
    """Frames with the background blacked out (image x mask); frames whose mask is unknown (NaN) stay whole."""
    known = frames["mask"].flatten(1).isfinite().all(1)
    if not known.any():
        return frames
    image = frames["image"].clone()
    image[known] = (image[known] * frames["mask"][known]).to(image.dtype)  # (uint8 images: mask values are 0, 1)
    return Frames(**{**frames, "image": image})


def hflip(frames: Frames) -> Frames:
    """Mirrors frames left-right.

    Landmarks are mirrored and re-indexed (the subject's right eye becomes the left one), and the pose follows the
    mirror M = diag(-1, 1, 1): M R M flips the signs of yaw and roll, and tx changes sign.
    """
    size = frames["image"].shape[-1]
    landmarks = frames["landmarks"][:, list(FLIP_PERMUTATION)].clone()
    landmarks[..., 0] = size - 1 - landmarks[..., 0]
    pose = frames["pose"] * torch.tensor([-1.0, 1.0, -1.0, -1.0, 1.0, 1.0])
    return Frames(
        image=frames["image"].flip(-1),
        landmarks=landmarks,
        pose=pose,
        mask=frames["mask"].flip(-1),
    )


@dataclass
class ColorJitter:
    """Random brightness, contrast, saturation and hue, the same for every frame of one sample.

    The same change for all frames keeps source and driving (or references and target) photometrically consistent,
    so a model is not asked to reproduce a colour shift it cannot see.
    """

    brightness: float = 0.1  # additive shift drawn from [-b, b]
    contrast: float = 0.1  # factor drawn from [1 - c, 1 + c]
    saturation: float = 0.1  # factor drawn from [1 - s, 1 + s]
    hue: float = 0.02  # shift drawn from [-h, h] turns (1 = 2 pi radians)

    def draw(self, rng: random.Random) -> list[float]:
        """One sample's parameters: [brightness shift, contrast factor, saturation factor, hue shift in radians],
        the identity (0, 1, 1, 0) for the changes turned off (which draw nothing from ``rng``)."""
        return [
            rng.uniform(-self.brightness, self.brightness) if self.brightness else 0.0,
            rng.uniform(1 - self.contrast, 1 + self.contrast) if self.contrast else 1.0,
            rng.uniform(1 - self.saturation, 1 + self.saturation) if self.saturation else 1.0,
            rng.uniform(-self.hue, self.hue) * 2 * math.pi if self.hue else 0.0,
        ]

    def apply(self, image: Tensor, params: Sequence[float] | Tensor) -> Tensor:
        """(n, 3, s, s) in [0, 1] -> (n, 3, s, s) in [0, 1], with ``draw``'s four parameters for all n images, or
        an (n, 4) tensor of them, one row per image (a batch of samples at once, e.g. on the training device)."""
        brightness, contrast, saturation, hue = params.unbind(-1) if isinstance(params, Tensor) else params
        if self.brightness:
            image = KE.adjust_brightness(image, brightness)
        if self.contrast:
            image = KE.adjust_contrast(image, contrast)
        if self.saturation:
            image = KE.adjust_saturation(image, saturation)
        if self.hue:
            image = KE.adjust_hue(image, hue)
        return image.clamp(0.0, 1.0)

    def __call__(self, image: Tensor, rng: random.Random) -> Tensor:
        """(n, 3, s, s) in [0, 1] -> (n, 3, s, s) in [0, 1], one random change for all n images."""
        return self.apply(image, self.draw(rng))


@dataclass
class Augment:
    """Training augmentation of one sample's frames: horizontal flip and colour jitter, applied to all alike."""

    flip_probability: float = 0.5  # chance of mirroring the sample
    color: ColorJitter | None = None  # colour jitter, or None for none

    def __call__(self, frames: Frames, rng: random.Random) -> Frames:
        frames, color = self.flip_and_draw(frames, rng)
        if color is not None:
            frames = Frames(**{**frames, "image": self.color.apply(frames["image"], color)})
        return frames

    def flip_and_draw(self, frames: Frames, rng: random.Random) -> tuple[Frames, list[float] | None]:
        """The flip done, and the colour jitter's parameters drawn but not applied (None without jitter): the
        same random draws as ``__call__``, for a jitter applied later (``from_uint8``)."""
        if rng.random() < self.flip_probability:
            frames = hflip(frames)
        return frames, None if self.color is None else self.color.draw(rng)


def select(frames: Frames, indices: slice | list[int] | int) -> Frames:
    """A subset of the frames along the first axis."""
    return Frames(**{name: value[indices] for name, value in frames.items()})


UNKNOWN_MASK = 255  # a uint8 mask's value where the float mask is NaN (no mask stored)


def to_uint8(item: dict[str, Any]) -> dict[str, Any]:
    """A training item with its images and masks as uint8, a quarter of the bytes to carry from a DataLoader
    worker: images round(255 x), masks 0 / 1 with UNKNOWN_MASK where unknown. :func:`from_uint8` undoes it.

    Exact for frames used as decoded (their values are k / 255); resized frames move by at most 1/510.
    """
    item = dict(item)
    for role in ROLES:
        if role in item and item[role].dtype != torch.uint8:  # (clip_to_frames(uint8=True) made it uint8 already)
            item[role] = item[role].mul(255).round_().to(torch.uint8)
        if f"{role}_mask" in item:
            item[f"{role}_mask"] = item[f"{role}_mask"].nan_to_num(UNKNOWN_MASK).to(torch.uint8)
    return item


def from_uint8(batch: dict[str, Any], color: ColorJitter | None = None) -> dict[str, Any]:
    """A batch of :func:`to_uint8` items back in float32 (images in [0, 1], masks in {0, 1} or NaN), on whatever
    device it is; a ``color_jitter`` entry ((b, 4) parameters of ``color``, drawn per item in the workers) is
    applied to every frame of its item and removed. Float tensors pass through untouched."""
    batch = dict(batch)
    for role in ROLES:
        if role in batch and batch[role].dtype == torch.uint8:
            batch[role] = batch[role].float().div_(255.0)
        mask = batch.get(f"{role}_mask")
        if mask is not None and mask.dtype == torch.uint8:
            batch[f"{role}_mask"] = mask.float().masked_fill_(mask == UNKNOWN_MASK, math.nan)
    params = batch.pop("color_jitter", None)
    if params is not None and color is not None:
        for role in ROLES:
            if role in batch:
                image = batch[role]
                flat = image.reshape(-1, *image.shape[-3:])
                rows = params.to(image.dtype).repeat_interleave(flat.shape[0] // params.shape[0], dim=0)
                batch[role] = color.apply(flat, rows).reshape(image.shape)
    return batch
