"""Inference-only checkpoints: a trained module's generator side in a few MB, still a Lightning checkpoint.

A `talkinghead fit` checkpoint carries everything needed to resume: the discriminator, the frozen loss networks
(VGG19 for the perceptual loss), optimizer state and, with ``ema_decay``, two copies of the generator side. For
shipping a trained model as package data (the embedded default of `make demo`) only the weights used at inference
matter. :func:`write_inference_checkpoint` keeps the hyper-parameters (so ``Module.load_from_checkpoint`` and
`talkinghead evaluate --checkpoint` rebuild the module with no config) and the inference weights (the EMA when
one is kept), and marks the file; on loading, :func:`complete_inference_checkpoint` fills every other entry of
the state dict from the freshly built module (random-init discriminator, loss networks as their settings build
them), so strict loading works and inference is exactly that of the trained module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["INFERENCE_ONLY", "write_inference_checkpoint", "complete_inference_checkpoint"]

# The marker key of an inference-only checkpoint (its value: which state-dict prefix holds the weights).
INFERENCE_ONLY = "talkinghead_inference_only"


def _prefix(module: nn.Module, child: nn.Module) -> str:
    """The state-dict prefix ("networks.") under which ``child`` sits in ``module``."""
    for name, candidate in module.named_modules():
        if candidate is child and name:
            return name + "."
    raise ValueError("the generator side is not a submodule of the module")


def _plain(value: Any) -> Any:
    """Hyper-parameters as plain dicts, lists and scalars (jsonargparse Namespaces become dicts)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"hyper-parameter of type {type(value).__name__} cannot go into an inference checkpoint")


def write_inference_checkpoint(module: Any, path: str | os.PathLike, global_step: int = 0,
                               datamodule_hparams: Mapping[str, Any] | None = None,
                               keep: tuple[str, ...] = ()) -> Path:
    """Writes ``module``'s inference weights and hyper-parameters as a small, loadable Lightning checkpoint.

    Args:
        module: an AdversarialModule built by the talkinghead CLI (its hyper-parameters name its classes).
        path: the file to write (its folder is created).
        global_step: recorded as the checkpoint's global_step (the training run's, for reference).
        datamodule_hparams: the data's hyper-parameters (at least image_size, which evaluation reads), as a
            Lightning checkpoint of the whole run stores them.
        keep: names of further submodules whose weights go in too, e.g. ("projection_discriminator",) for a
            meta-learned FSTH / LPD checkpoint that fine-tuning starts from (it fine-tunes the meta-learned D).

    Returns:
        the path written. The file loads with ``torch.load(..., weights_only=True)``.
    """
    import lightning

    side = module.generator_side()
    prefix = _prefix(module, side)
    networks = module.inference_networks()
    state = {prefix + key: value.detach().cpu().clone() for key, value in networks.state_dict().items()}
    # Networks that inference reads besides the generator side (LPD fine-tuning's frozen pose encoder) go in too.
    inside = {id(m) for m in networks.modules()}
    for child in module.inference_model().children():
        if id(child) not in inside:
            extra = _prefix(module, child)
            state.update({extra + key: value.detach().cpu().clone() for key, value in child.state_dict().items()})
    for name in keep:
        child = getattr(module, name)
        state.update({f"{name}.{key}": value.detach().cpu().clone() for key, value in child.state_dict().items()})
    checkpoint = {
        "state_dict": state,
        "hyper_parameters": _plain(dict(module.hparams)),
        "global_step": int(global_step),
        "epoch": 0,
        "pytorch-lightning_version": lightning.__version__,
        INFERENCE_ONLY: prefix,
    }
    if datamodule_hparams is not None:
        checkpoint["datamodule_hyper_parameters"] = _plain(dict(datamodule_hparams))
    from talkinghead.lightning.adversarial import IMAGE_SIZE_KEY

    size = (datamodule_hparams or {}).get("image_size") or module.trained_image_size()
    if size:
        checkpoint[IMAGE_SIZE_KEY] = int(size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)
    return path


def complete_inference_checkpoint(module: Any, checkpoint: dict[str, Any]) -> None:
    """Fills an inference-only checkpoint's state dict in place so that it loads strictly into ``module``.

    Entries of the generator side's EMA copy are the stored (already averaged) weights; everything else that the
    file does not hold (discriminator, loss networks) is taken from ``module`` as built.
    """
    prefix = checkpoint.get(INFERENCE_ONLY)
    if not prefix:
        return
    stored = checkpoint["state_dict"]
    for key, value in module.state_dict().items():
        if key in stored:
            continue
        if key.startswith("generator_ema.module."):
            twin = prefix + key.removeprefix("generator_ema.module.")
            stored[key] = stored[twin].clone() if twin in stored else value
        else:
            stored[key] = value
