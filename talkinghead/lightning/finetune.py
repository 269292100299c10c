"""Starting a fine-tuning stage (FSTH, LPD) from a meta-learning checkpoint.

A fine-tuning module takes ``init_from`` (the meta-learned checkpoint written by ``talkinghead fit``) and rebuilds
the meta-learning module from the checkpoint's stored config, weights included. It keeps that config in its own
hyper-parameters as ``meta_config`` (a JSON string: LightningCLI would otherwise parse the nested ``class_path``
entries as its own), so its own checkpoints rebuild the architecture without the meta checkpoint: when
``meta_config`` is given, the networks are built from it and their weights come from the checkpoint being loaded
(``load_from_checkpoint``, or ``--ckpt_path``, whose hyper-parameters LightningCLI reads back).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch

from talkinghead.lightning.adversarial import class_from_path

__all__ = ["load_meta_module"]

ModuleT = TypeVar("ModuleT", bound=L.LightningModule)


def _build(expected: type[ModuleT], config: dict[str, Any], where: str) -> ModuleT:
    from lightning.pytorch.cli import instantiate_module

    config = {name: value for name, value in config.items() if name != "_instantiator"}
    class_path = config.get("_class_path")
    if not class_path:
        raise ValueError(
            f"{where} holds no '_class_path' in its hyper-parameters: it was not written by `talkinghead fit`, so "
            f"its networks cannot be rebuilt; meta-learn with `talkinghead fit --config ...` first"
        )
    cls = class_from_path(class_path)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, expected)):
        raise ValueError(f"{where} is a {class_path} checkpoint; fine-tuning needs a {expected.__name__} one")
    return instantiate_module(expected, config)


def load_meta_module(
    expected: type[ModuleT], init_from: str | None, meta_config: str | None
) -> tuple[ModuleT, str]:
    """The meta-learned module a fine-tuning stage starts from, and the config that rebuilds it.

    Args:
        expected: the meta-learning module's class, e.g. FSTHModule.
        init_from: path of the meta-learning checkpoint; read only when ``meta_config`` is None.
        meta_config: the meta module's stored hyper-parameters as JSON (from an earlier fine-tuning checkpoint):
            build the architecture from them and load no weights.

    Returns:
        (module in train mode on CPU, its config as JSON). From ``init_from`` the module holds the checkpoint's weights,
        with the EMA's generator side in place of the trained one when the checkpoint kept an EMA (the inference
        weights are what the paper's fine-tuning starts from).

    Raises:
        FileNotFoundError: ``init_from`` does not exist.
        ValueError: neither argument given, or the checkpoint is not a ``talkinghead fit`` checkpoint of
            ``expected``.
    """
    if meta_config is not None:
        return _build(expected, json.loads(meta_config), "meta_config"), meta_config
    if init_from is None:
        raise ValueError(
            "a fine-tuning stage needs the meta-learning checkpoint: set --model.init_args.init_from META.ckpt"
        )
    path = Path(init_from)
    if not path.is_file():
        raise FileNotFoundError(f"init_from checkpoint not found: {path} (the meta-learning stage's .ckpt file)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"init_from {path} is not a Lightning checkpoint (no state_dict)")
    config = dict(state.get("hyper_parameters") or {})
    config.pop("_instantiator", None)
    module = _build(expected, config, f"init_from {path}")
    weights = state["state_dict"]
    ema_prefix = "generator_ema.module."
    trained = {name: value for name, value in weights.items() if not name.startswith("generator_ema.")}
    missing, unexpected = module.load_state_dict(trained, strict=False)
    if missing or unexpected:
        raise ValueError(f"init_from {path} does not match its own config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    averaged = {name[len(ema_prefix):]: value for name, value in weights.items() if name.startswith(ema_prefix)}
    if averaged:
        module.generator_side().load_state_dict(averaged)
    return module, json.dumps(config)
