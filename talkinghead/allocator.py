"""Keep freed CPU memory in the process (glibc), so training steps stop page-faulting their large tensors in again.

glibc's malloc serves blocks above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) with fresh
``mmap`` calls and returns the top of its heap to the system above its trim threshold, so a training step on the
CPU that allocates and frees the same few-MiB activations every step has the kernel zero and map their pages again
every step: an out-of-place ReLU over a (8, 64, 64, 64) VGG activation took 14 ms in the tiny OSFV step against
0.13 ms into memory already mapped. Raising both thresholds keeps those pages in the heap for reuse (what
jemalloc/tcmalloc, which PyTorch's CPU performance guide recommends preloading, do by themselves). The maths is
unchanged; the price is that the process's RSS stays at its peak instead of shrinking between steps.

:func:`retain_freed_memory` is applied by the ``talkinghead`` command and by :class:`~talkinghead.cli.TalkingHeadCLI`;
``TALKINGHEAD_MALLOC=system`` leaves glibc's defaults alone. On other C libraries (macOS, musl, Windows) it does
nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["retain_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap (a 128-px OSFV batch holds 34 MiB activations)
TRIM_THRESHOLD = (1 << 31) - 1  # the largest value mallopt takes (an int): never trim the heap's top
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process (see the module docstring).

    Returns:
        whether the thresholds are in force (False on other C libraries, when ``TALKINGHEAD_MALLOC=system`` or
        when glibc refused a value).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("TALKINGHEAD_MALLOC", "") == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # The mmap threshold first: setting either turns glibc's dynamic mmap threshold off, so a trim threshold set
    # alone would leave every block above 128 KiB mmapped (slower than the default: measured 1.5x slower).
    _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD))
                    and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD)))
    return _applied
