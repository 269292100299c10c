"""Loading user files without running code from them.

Every checkpoint or weights file a user names (``evaluate --checkpoint``, ``init_from``, ``--ckpt_path``, the
pretrained-weight options) is read with ``torch.load(..., weights_only=True)``: the unpickler then only rebuilds
tensors, containers and plain values, so a file whose pickle names a function to call (``__reduce__``) is refused
instead of executed. Checkpoints written by ``talkinghead fit`` hold nothing else (hyper-parameters are plain
dicts, optimizer states are tensors), so nothing needs allow-listing; a file that needs more than that is not one
of ours, and :class:`UnsafeCheckpointError` says so in one line.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeCheckpointError", "safe_torch_load"]


class UnsafeCheckpointError(ValueError):
    """A file that ``torch.load(weights_only=True)`` refuses: it would need arbitrary objects (code) to load."""


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file's pickle needs objects beyond tensors and plain values (nothing of it ran).
        ValueError: the file is not a torch file at all (truncated, another format).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch words a refused object "Weights only load failed ... Unsupported global: GLOBAL os.system ...";
        # any other unpickling failure is a damaged or foreign file.
        text = str(error)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found is None:
            first = next((line.strip() for line in text.splitlines() if "Unsupported" in line), text[:100])
            raise ValueError(f"cannot read {what} {path}: {first[:200]} (a truncated or non-torch file?)") from None
        raise UnsafeCheckpointError(
            f"refusing to load {what} {path}: it holds objects other than tensors and plain values (it names {found.group(1)}); "
            f"it was not written by talkinghead and loading it could run code, so nothing of it was run"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read {what} {path}: {first[:200]} (a truncated or non-torch file?)") from None
