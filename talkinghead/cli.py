"""The `talkinghead` console command.

`fit`, `validate`, `test` and `predict` go to LightningCLI, with the model and the data chosen by class_path in
YAML configs (see lightning_configs/). The other subcommands (`synth`, `demo`, ...) are plain argparse programs in
talkinghead.commands, hung off the same entry point.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import sys
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.cli import LightningCLI

from talkinghead.allocator import retain_freed_memory

__all__ = ["TalkingHeadCLI", "main", "SUBCOMMANDS"]

# name -> (module in talkinghead.commands with a main(argv) function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "render procedural talking heads into shards"),
    "demo": ("demo", "the embedded default: synthetic data, shown as a contact sheet"),
    "preprocess": ("preprocess", "real videos -> shards: tracked face crops, landmarks, pose"),
    "evaluate": ("evaluate", "score a checkpoint vs the copy-source baseline: paper-style metrics table"),
    "export": ("export", "a checkpoint -> a bundle (safetensors + manifest, optional ONNX) that loads without Lightning"),
    "inspect": ("inspect", "look at shards: a contact sheet (landmarks, masks) and a summary of what they hold"),
    "animate": ("animate", "animate a photo with a driving video (faces found and cropped), written as mp4"),
    "sweep": ("sweep", "run points of a wandb sweep file here, logged offline, without a W&B server"),
}
LIGHTNING_SUBCOMMANDS = {
    "fit": "train a model: talkinghead fit --config lightning_configs/...yaml",
    "validate": "run the validation loop",
    "test": "run the test loop",
    "predict": "run prediction (e.g. write animations)",
}


class TalkingHeadCLI(LightningCLI):
    """LightningCLI over any LightningModule and LightningDataModule named by class_path."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs) -> None:
        retain_freed_memory()  # CPU steps: ~1.2-1.4x faster (talkinghead.allocator)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--compile", type=bool, default=False,
                            help="torch.compile the generator side's networks (AdversarialModule.compile_networks) "
                                 "at the start of fit; for GPUs: on 2 CPU cores the tiny OSFV step was no faster and "
                                 "compiling took ~4 minutes")

    def before_fit(self) -> None:
        if self.config_init[self.subcommand].get("compile") and hasattr(self.model, "compile_networks"):
            self.trainer.callbacks.append(CompileNetworks())

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        # `fit/validate/test/predict --ckpt_path` read a user file: weights_only=True by default (torch's own default
        # can be switched off by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD); our checkpoints need nothing more. A user who
        # trusts an older, pickled file can still pass --weights_only false.
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            parser.set_defaults(weights_only=True)
        return parser


class CompileNetworks(L.Callback):
    """Compiles the module's networks when fit starts: after setup (the EMA copy stays eager) and after the strategy
    has wrapped and placed the module."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        names = pl_module.compile_networks()
        if trainer.is_global_zero:
            print(f"torch.compile: {', '.join(names)} (the first steps compile them)", file=sys.stderr)


def _usage() -> str:
    lines = ["usage: talkinghead COMMAND [options]   (talkinghead COMMAND --help for a command's options)", ""]
    for name, text in LIGHTNING_SUBCOMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    for name, (_, text) in SUBCOMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("TALKINGHEAD_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    retain_freed_memory()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in SUBCOMMANDS:
        module = importlib.import_module(f"talkinghead.commands.{SUBCOMMANDS[argv[0]][0]}")
        return int(module.main(argv[1:]) or 0)
    if argv[0] not in LIGHTNING_SUBCOMMANDS:
        print(f"talkinghead: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from talkinghead.errors import ConfigError, find_cause, one_line
    from talkinghead.lightning.adversarial import NonFiniteTrainingError

    try:
        TalkingHeadCLI(args=argv)
    except NonFiniteTrainingError as error:
        if debug:
            raise
        print(f"talkinghead {argv[0]}: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - only a bad value or bad data becomes one line; the rest re-raises
        from talkinghead.datamodules.shard_format import ShardError

        cause = find_cause(error, (ConfigError, ShardError, pickle.UnpicklingError))
        if cause is None or debug:
            raise
        message = one_line(cause)
        if isinstance(cause, pickle.UnpicklingError):  # Lightning's own weights_only load of --ckpt_path
            found = re.search(r"GLOBAL ([\w.]+)", str(cause))
            message = ("refusing to load the checkpoint: it holds objects other than tensors and plain values"
                       + (f" (it names {found.group(1)})" if found else "")
                       + "; pass --weights_only false only for a file you trust")
        print(f"talkinghead {argv[0]}: {message} (--debug for the traceback)", file=sys.stderr)
        return 2
    return 0
