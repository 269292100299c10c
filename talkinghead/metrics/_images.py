"""Conversions shared by the face metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_uint8_frames(images: Tensor | np.ndarray) -> np.ndarray:
    """(b, 3, h, w) float images in [0, 1] (or already (b, h, w, 3) uint8) as (b, h, w, 3) uint8 RGB."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        frames = images
    else:
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (b, 3, h, w) in [0, 1], got {tuple(images.shape)}")
        frames = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (b, h, w, 3), got {frames.shape}")
    return np.ascontiguousarray(frames)
