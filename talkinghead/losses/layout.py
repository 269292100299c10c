"""Memory layout for losses that reduce over every element of channels-last activations."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["in_memory_order"]


def in_memory_order(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Views of same-shaped tensors whose logical order is the first one's order in memory: NHWC (NDHWC) when the
    first is channels-last, else the tensors unchanged.

    For losses that reduce over every element (means of |x - y|) the value is the same up to summation order, but
    their backward then hands the network a gradient in the network's own layout. A plain mean's gradient comes in
    the default layout; reaching channels-last activations, it makes each elementwise op of the backward (the L1's
    sign, ReLU's threshold) stride across memory: ~8 ms instead of ~0.3 ms on an (8, 64, 64, 64) VGG map on the CPU.
    """
    first = tensors[0]
    if first.is_contiguous():  # also every tensor with one channel, which both layouts describe
        return tensors
    if first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last):
        order = (0, 2, 3, 1)
    elif first.dim() == 5 and first.is_contiguous(memory_format=torch.channels_last_3d):
        order = (0, 2, 3, 4, 1)
    else:
        return tensors
    return tuple(tensor.permute(order) for tensor in tensors)
