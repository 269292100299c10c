"""The adversarial training loop shared by the talking-head models.

Subclasses implement three hooks and nothing else of the loop, and may share one discriminator pass:

- ``run_generator(batch) -> outputs``: the generator side's forward pass;
- ``generator_losses(batch, outputs, real) -> {term: scalar}``: unweighted generator-side terms;
- ``discriminator_losses(batch, outputs, real) -> {term: scalar}``: unweighted discriminator terms (outputs
  detached);
- ``judge_real(batch) -> real`` (optional): D's outputs on the batch's real images, computed once per batch with
  D's gradient and handed to both loss hooks (the generator step's feature matching reads them detached, the first
  discriminator step's hinge trains D through them; D's weights do not change in between). The default, None,
  leaves the hooks to run D on the real images themselves, as they must when called on their own;
- ``refresh_real(real, batch) -> real`` (optional): brings that shared judgement up to date with D weights the
  generator step moved (FSTH's and LPD's video columns W, which the embedding match trains) before the first
  discriminator step reads it.

The base weights the terms with ``loss_weights`` (terms whose weight is 0 are neither computed nor logged: a
subclass asks ``self.wants(term)``), steps the two optimizers (manual optimisation, ``discriminator_steps`` D
steps per G step), keeps an optional exponential moving average of the generator side, and logs
``train/g/<term>``, ``train/d/<term>`` and the totals.

Non-finite steps: a generator or discriminator step whose loss or gradients are not finite is skipped (the
optimizer steps without gradients, which changes nothing but keeps ``global_step``'s rhythm; D's steps are
skipped with G's; buffers such as BatchNorm statistics are restored; no EMA update), counted and logged as
``train/skipped_nonfinite``; after ``nonfinite_patience`` consecutive skipped batches the run stops with
:class:`NonFiniteTrainingError` naming the terms that were not finite, and a checkpoint whose weights are not
finite is never written.

With two optimizers Lightning's ``global_step`` advances once per optimizer step: a batch with one G and one D
step adds 2, so ``max_steps`` counts optimizer steps, not batches.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from talkinghead.errors import ConfigError
from talkinghead.metrics import psnr_per_image

__all__ = ["AdversarialModule", "ExponentialMovingAverage", "NonFiniteTrainingError", "built_by_cli", "class_from_path",
           "tensor_slots", "to_channels_last"]


def _default_optimizer(kind: type[torch.optim.Optimizer], lr: float, betas: tuple[float, float]) -> OptimizerCallable:
    fused = {"fused": True} if "fused" in inspect.signature(kind).parameters else {}  # Adam: one kernel a step

    def build(parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return kind(parameters, lr=lr, betas=betas, **fused)

    return build


def built_by_cli() -> bool:
    """Whether LightningCLI is instantiating the module being constructed.

    The CLI hands ``save_hyperparameters`` its parsed config, in which sub-networks are ``class_path`` dicts, so a
    checkpoint stores how to rebuild them and ``Module.load_from_checkpoint(path)`` needs no config. A module built
    directly in Python gets network objects instead, which must stay out of the hyperparameters.
    """
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters  # no public accessor

    return _given_hyperparameters.get() is not None


def class_from_path(class_path: str) -> type | None:
    """The class a ``_class_path`` hyper-parameter names ("package.module.Class"), or None when it has no such class."""
    module_name, _, class_name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name, None)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Stores the module's 4D and 5D parameters and buffers (conv weights) channels-last, in place.

    Convolutions with channels-last weights keep their activations in that layout too: the same maths in the
    order oneDNN's CPU kernels prefer (float results differ only by summation order).
    """
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.dim() in (4, 5):
            layout = torch.channels_last if tensor.dim() == 4 else torch.channels_last_3d
            tensor.data = tensor.data.contiguous(memory_format=layout)
    return module


def tensor_slots(module: nn.Module, kinds: tuple[str, ...] = ("_parameters", "_buffers"),
                 skip: str | None = None) -> list[tuple[str, dict[str, Tensor | None], str]]:
    """(qualified name, owning module's ``_parameters``/``_buffers`` dict, key) for each of the module's tensors of
    those kinds, in the order of ``named_parameters()`` then ``named_buffers()`` (shared tensors once; submodules
    named ``skip`` and below left out). Read through the dicts, a tensor that ``.to()`` or a new assignment replaced
    is still found; walking the module tree per training step to find them cost ~1 ms per ~250 tensors on the CPU.
    """
    slots, seen = [], set()
    for kind in kinds:
        for prefix, owner in module.named_modules():
            if skip is not None and (prefix == skip or prefix.startswith(skip + ".")):
                continue
            tensors = getattr(owner, kind)
            for key, tensor in tensors.items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    slots.append((f"{prefix}.{key}" if prefix else key, tensors, key))
    return slots


class ExponentialMovingAverage(AveragedModel):
    """``AveragedModel`` (all tensors averaged, ``use_buffers=True``) whose update reads the two networks' tensors
    through slots found once (:func:`tensor_slots`) instead of gathering, detaching and grouping them per step:
    the same arithmetic (``multi_avg_fn`` over all of them; the first update copies), 4.4-6.8 -> 1.0-1.2 ms of a
    ~170 ms tiny LPD step on the CPU. Both networks must sit on one device with one dtype per tensor pair (the EMA
    is a copy)."""

    def update_parameters(self, model: nn.Module) -> None:
        if self.multi_avg_fn is None or not self.use_buffers:
            return super().update_parameters(model)  # what the fast path does not do: avg_fn, parameters only
        cache = self.__dict__.get("_slots")
        if cache is None or cache[0] != id(model):
            cache = self.__dict__["_slots"] = (id(model), tensor_slots(self.module), tensor_slots(model))
        _, mine, theirs = cache
        averaged = [tensors[key] for _, tensors, key in mine]
        current = [tensors[key] for _, tensors, key in theirs]
        with torch.no_grad():
            if self.n_averaged == 0:
                torch._foreach_copy_(averaged, current)
            else:
                self.multi_avg_fn(averaged, current, self.n_averaged)
        self.n_averaged += 1


def ema_with_warmup(decay: float) -> Any:
    """An EMA update for ``AveragedModel(multi_avg_fn=...)`` whose decay warms up: min(decay, (1 + n) / (10 + n))
    after n updates (as TensorFlow's ExponentialMovingAverage with num_updates).

    With a fixed decay the average keeps (decay)^n of the first weights: 0.998^400 = 45% of an untrained network
    after 400 steps, which made the EMA of a short CPU run score like the untrained network (13.7 dB where the
    trained weights gave 23.7). The warm-up forgets the start within tens of steps; long runs see the set decay.
    """

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # integer buffers (BatchNorm's num_batches_tracked) follow the model
                a.copy_(c)

    return update


RNG_KEY = "talkinghead_rng_states"
# The data image size a model was trained at, in every checkpoint the package writes (evaluate and export read it).
IMAGE_SIZE_KEY = "talkinghead_image_size"


def rng_states() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and python RNG states, as tensors and plain values (so the checkpoint
    still loads with weights_only=True)."""
    import random

    import numpy as np

    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["position"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class NonFiniteTrainingError(RuntimeError):
    """Training stopped: too many consecutive steps had non-finite losses or gradients."""


def _finite(tensors: Iterable[Tensor]) -> Tensor:
    """One boolean tensor: every element of every tensor is finite (no host sync until it is read).

    Floating-point tensors are checked by one fused kernel per device and dtype (the non-finite check of
    torch.amp's GradScaler, with a scale of exactly 1, so nothing changes): an isfinite/all pair per tensor cost
    7 ms per step over OSFV's 228 gradients on the CPU, the fused check 0.3 ms.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for tensor in tensors:
        if tensor is not None and tensor.is_floating_point():
            groups.setdefault((tensor.device, tensor.dtype), []).append(tensor.detach())
    if not groups:
        return torch.tensor(True)
    flags = []
    for (device, _), group in groups.items():
        flag = torch.zeros(1, device=device)  # set to 1 by the kernel when a group holds an inf or NaN
        torch._amp_foreach_non_finite_check_and_unscale_(group, flag, torch.ones(1, device=device))
        flags.append(flag)
    if len({flag.device for flag in flags}) > 1:
        flags = [flag.cpu() for flag in flags]
    return torch.cat(flags).sum() == 0


def detach_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of generator outputs with every tensor detached (for the discriminator step)."""
    return {k: v.detach() if isinstance(v, Tensor) else v for k, v in outputs.items()}


class AdversarialModule(L.LightningModule):
    """A GAN LightningModule with manual optimisation of a generator side and a discriminator.

    Args:
        loss_weights: weight of each loss term by name; weight 0 disables a term. With ``default_loss_weights``
            these override the defaults; without, every term must be named here.
        default_loss_weights: every term the subclass knows with its default (paper) weight; unknown names in
            ``loss_weights`` are then errors (typos would otherwise silently do nothing).
        generator_optimizer: builds the generator side's optimizer from its parameters (None: Adam with
            ``default_optimizer``, ``default_lr``, ``default_betas``).
        discriminator_optimizer: the same for the discriminator.
        discriminator_steps: discriminator updates per generator update.
        ema_decay: decay of an exponential moving average of the generator side used for inference; None for none.
        default_lr: (generator, discriminator) learning rates of the default optimizers.
        default_betas: betas of the default optimizers.
        default_optimizer: the class of both default optimizers (Adam; LPD fine-tuning uses RAdam).
        nonfinite_patience: consecutive batches with a non-finite loss or gradient that are skipped before the run
            stops with :class:`NonFiniteTrainingError`.
        channels_last: keep the conv weights, and so the activations, channels-last (NHWC / NDHWC) in training;
            None does so on the CPU only, where oneDNN runs the tiny steps faster in that layout (measured: OSFV
            ~1.3x, FSTH 1.65x, LPD 1.29x at 64 px), and leaves GPU runs in PyTorch's default layout (not measured
            there yet).
    """

    def __init__(
        self,
        loss_weights: Mapping[str, float] | None,
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        discriminator_steps: int = 1,
        ema_decay: float | None = None,
        default_lr: tuple[float, float] = (2e-4, 2e-4),
        default_betas: tuple[float, float] = (0.5, 0.999),
        default_loss_weights: Mapping[str, float] | None = None,
        default_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        nonfinite_patience: int = 10,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.channels_last = channels_last
        if discriminator_steps < 1:
            raise ConfigError(f"discriminator_steps must be at least 1, got {discriminator_steps}")
        if nonfinite_patience < 1:
            raise ConfigError(f"nonfinite_patience must be at least 1, got {nonfinite_patience}")
        self.nonfinite_patience = nonfinite_patience
        self.skipped_nonfinite = 0  # batches skipped in this run
        self._consecutive_nonfinite = 0
        self.loss_weights = {**(default_loss_weights or {}), **(loss_weights or {})}
        if default_loss_weights is not None:
            self.check_loss_terms(default_loss_weights)
        self.discriminator_steps = discriminator_steps
        self.ema_decay = ema_decay
        self.generator_optimizer = generator_optimizer or _default_optimizer(default_optimizer, default_lr[0],
                                                                             default_betas)
        self.discriminator_optimizer = discriminator_optimizer or _default_optimizer(default_optimizer, default_lr[1],
                                                                                     default_betas)
        self.generator_ema: AveragedModel | None = None

    # -- what subclasses provide ---------------------------------------------------------------------------------

    def generator_side(self) -> nn.Module:
        """The networks the generator optimizer trains (and the EMA averages)."""
        raise NotImplementedError

    def discriminator(self) -> nn.Module:
        """The network the discriminator optimizer trains."""
        raise NotImplementedError

    def run_generator(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def generator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                         real: Any = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def discriminator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                             real: Any = None) -> dict[str, Tensor]:
        raise NotImplementedError

    #: The generator-side loss terms that read D (OSFV names its adversarial term "gan").
    discriminator_terms: tuple[str, ...] = ("adversarial", "feature_matching")

    def uses_discriminator(self) -> bool:
        """Whether any generator-side term reads D; when none does (an adversarial-free recipe, e.g. a CPU one),
        the discriminator is neither run nor stepped and Lightning's global_step advances once per batch."""
        return any(self.wants(term) for term in self.discriminator_terms)

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimizer steps Lightning's global_step counts per batch: the G step and ``discriminator_steps`` D
        steps, or the G step alone when no term reads D. ``max_steps = optimizer_steps_per_batch * G steps``."""
        return 1 + self.discriminator_steps if self.uses_discriminator() else 1

    def judge_real(self, batch: Mapping[str, Any]) -> Any:
        """D's outputs on the batch's real images for both loss hooks (see the module docstring); None: none shared."""
        return None

    def refresh_real(self, real: Any, batch: Mapping[str, Any]) -> Any:
        """``judge_real``'s outputs as the first D step must see them after the generator step (see the module
        docstring); by default unchanged, since the generator optimizer moves none of D's weights."""
        return real

    # -- shared machinery ----------------------------------------------------------------------------------------

    def check_loss_terms(self, terms: Iterable[str]) -> None:
        """Refuses loss_weights that name unknown terms or miss known ones (typos would silently do nothing)."""
        terms = set(terms)
        unknown, missing = set(self.loss_weights) - terms, terms - set(self.loss_weights)
        if unknown or missing:
            raise ConfigError(
                f"loss_weights: unknown terms {sorted(unknown)}, missing terms {sorted(missing)}; "
                f"the terms are {sorted(terms)} (weight 0 disables one)"
            )

    def wants(self, term: str) -> bool:
        """Whether a loss term has a non-zero weight (and so must be computed)."""
        return self.loss_weights[term] != 0

    def weighted_sum(self, terms: Mapping[str, Tensor]) -> Tensor:
        return sum(self.loss_weights[name] * value for name, value in terms.items())

    def generator_parameters(self) -> Iterable[nn.Parameter]:
        """What the generator optimizer trains: the generator side, plus whatever a subclass's generator-step
        terms are meant to move besides (FSTH's W under the embedding match)."""
        return self.generator_side().parameters()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            self.generator_optimizer(self.generator_parameters()),
            self.discriminator_optimizer(self.discriminator().parameters()),
        ]

    def setup(self, stage: str) -> None:
        self.check_data_image_size()
        if self.channels_last or (self.channels_last is None and self._runs_on_cpu()):
            to_channels_last(self)  # before the EMA copies the generator side and DDP wraps the module
        self._make_ema()
        self.__dict__.pop("_trained_buffer_slots", None)  # subclasses' setup may have re-registered buffers

    def _runs_on_cpu(self) -> bool:
        # Called by a Trainer before it moves the module to its device; scripts also call setup without one.
        device = self.device if self._trainer is None else self.trainer.strategy.root_device
        return device.type == "cpu"

    def check_data_image_size(self) -> None:
        """Refuses (ConfigError) a DataModule whose image_size the networks cannot take (see check_image_size);
        subclasses call it first thing in their own setup."""
        size = getattr(getattr(self._trainer, "datamodule", None), "image_size", None)
        if size and int(size) != getattr(self, "_checked_size", None):
            self.check_image_size(int(size))
            self._checked_size = int(size)

    def check_image_size(self, size: int) -> None:
        """Refuses (ConfigError) an image size other than the one the networks were built for (every submodule
        with an ``image_size``: FSTH's and LPD's networks are built for one size)."""
        built = {name or "model": module.image_size for name, module in self.named_modules()
                 if isinstance(getattr(module, "image_size", None), int) and module is not self}
        wrong = sorted({n for n in built.values() if n != size})
        if wrong:
            names = ", ".join(name for name, n in built.items() if n != size and name.count(".") < 2)
            raise ConfigError(f"data image_size {size} does not match the image_size {wrong[0]} these networks "
                              f"were built for ({names}): set --data.init_args.image_size {wrong[0]}, or build the "
                              f"networks for {size} (their init_args.image_size)")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # load_from_checkpoint runs no setup: the average must exist before its saved state is loaded into it.
        self._make_ema()
        from talkinghead.lightning.slim import complete_inference_checkpoint

        complete_inference_checkpoint(self, checkpoint)  # inference-only files hold the generator side alone
        self._rng_to_restore = checkpoint.get(RNG_KEY)
        self._trained_image_size = checkpoint.get(IMAGE_SIZE_KEY)

    def on_train_start(self) -> None:
        # Restored here, after the checkpoint, the sanity check and the loaders' set-up, right before the first
        # training step: a resumed run then draws the same random numbers (e.g. the equivariance warps) as an
        # uninterrupted one from the saved step on. Only when resuming (--ckpt_path), not for weights loaded with
        # load_from_checkpoint into a fresh run, which keeps its own seed.
        if getattr(self, "_rng_to_restore", None) and self.trainer.ckpt_path:
            set_rng_states(self._rng_to_restore)
        self._rng_to_restore = None

    def compile_networks(self, **options: Any) -> list[str]:
        """``torch.compile`` (``nn.Module.compile``, in place) of the generator side's networks and the frozen feature
        networks of the perceptual losses. What ``compile: true`` in a config (``talkinghead fit --compile true``)
        does at the start of fit. Returns the names of the networks compiled now (not those compiled before).

        The discriminator and the EMA copy (inference only) stay eager: D's spectral norms update their power
        iteration vectors in place at every forward, and a compiled D's graph keeps those vectors themselves, so
        the D(real) judged once per batch (judge_real) could no longer be back-propagated after the generator
        step's D pass (measured: "modified by an inplace operation" in the first D step).
        """
        from talkinghead.networks.vgg import _FrozenFeaturePyramid

        side, names = self.generator_side(), []
        parts = [(f"generator side.{name}", child) for name, child in side.named_children()]
        parts = parts or [("generator side", side)]
        parts += [(name, module) for name, module in self.named_modules() if isinstance(module, _FrozenFeaturePyramid)]
        for name, module in parts:
            if any(True for _ in module.parameters()) and getattr(module, "_compiled_call_impl", None) is None:
                module.compile(**options)
                names.append(name)
        return names

    def _make_ema(self) -> None:
        if self.ema_decay is not None and self.generator_ema is None:
            self.generator_ema = ExponentialMovingAverage(
                self.generator_side(), multi_avg_fn=ema_with_warmup(self.ema_decay), use_buffers=True
            )
            self.generator_ema.requires_grad_(False)

    def inference_networks(self) -> nn.Module:
        """The generator side used for inference: its EMA when one is kept, else the trained networks."""
        return self.generator_side() if self.generator_ema is None else self.generator_ema.module

    def trained_image_size(self) -> int | None:
        """The data image size this model trains (or was trained) at: the one checked at setup, else the one its
        checkpoint recorded; None when neither is known."""
        size = getattr(self, "_checked_size", None) or getattr(self, "_trained_image_size", None)
        return int(size) if size else None

    def inference_model(self) -> nn.Module:
        """Everything inference needs, as one plain nn.Module (what `talkinghead export` writes): by default the
        inference networks; a stage whose inference also reads frozen networks outside the generator side (LPD
        fine-tuning's pose encoder) returns them together."""
        return self.inference_networks()

    @contextmanager
    def evaluating(self) -> Iterator[nn.Module]:
        """The inference networks in eval mode (BatchNorm statistics, fixed spectral norms), restored after."""
        networks = self.inference_networks()
        was_training = networks.training
        networks.eval()
        try:
            yield networks
        finally:
            networks.train(was_training)

    def reconstruct_batch(self, batch: Mapping[str, Any]) -> Tensor:
        """The model's re-synthesis of ``batch["driving"]`` (b, 3, s, s) from the rest of the batch."""
        raise NotImplementedError

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        prediction, target = self.reconstruct_batch(batch), batch["driving"]
        size = target.shape[0]
        self.log("val/l1", F.l1_loss(prediction, target), batch_size=size, sync_dist=True, prog_bar=True)
        self.log("val/psnr", psnr_per_image(prediction, target).mean(), batch_size=size, sync_dist=True)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """The driving frames and ``reconstruct_batch`` of them, for a prediction writer (``PredictionVideo``)."""
        return {"driving": batch["driving"], "prediction": self.reconstruct_batch(batch),
                "video": batch.get("video"), "frame_index": batch.get("frame_index")}

    def _update(self, optimizer: Any, loss: Tensor) -> bool:
        """Backward and step; returns False (and leaves the weights alone) when the loss or a gradient is not finite.

        The decision is taken on every rank together (after DDP's all-reduce the gradients agree anyway), so ranks
        never diverge."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        # Under a gradient scaler (precision "16-mixed") inf gradients are the scaler's business: it skips that
        # step and lowers its scale; skipping here instead would keep the scale too high forever.
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        finite = bool(_finite([loss] if scaler is not None else [loss, *(p.grad for p in params)]))
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            optimizer.zero_grad(set_to_none=True)
        optimizer.step()  # without gradients a skipped step changes nothing but is counted, so global_step
        return finite  # keeps its one-G-one-D rhythm (ModelCheckpoint's every_n_train_steps relies on it)

    def _step(self, optimizer: Any, loss: Tensor) -> bool:
        self.toggle_optimizer(optimizer)
        finite = self._update(optimizer, loss)
        self.untoggle_optimizer(optimizer)
        return finite

    def _trained_buffers(self) -> dict[str, Tensor]:
        """The trained networks' buffers (BatchNorm statistics and counts), which a forward pass in training moves."""
        slots = self.__dict__.get("_trained_buffer_slots")
        if slots is None:  # found once per fit (setup forgets them)
            slots = self.__dict__["_trained_buffer_slots"] = tensor_slots(self, ("_buffers",), skip="generator_ema")
        return {name: tensors[key] for name, tensors, key in slots}

    def _skip_nonfinite(self, saved: dict[str, Tensor], terms: Mapping[str, Tensor]) -> None:
        """Undo what the skipped batch's forward passes did to the buffers, count it, stop after the patience."""
        with torch.no_grad():
            for name, buffer in self._trained_buffers().items():
                buffer.copy_(saved[name])
        self.skipped_nonfinite += 1
        self._consecutive_nonfinite += 1
        if self._consecutive_nonfinite >= self.nonfinite_patience:
            bad = [name for name, value in terms.items() if not torch.isfinite(value).all()]
            what = f"non-finite loss terms: {', '.join(bad)}" if bad else "finite losses but non-finite gradients"
            raise NonFiniteTrainingError(
                f"stopped after {self._consecutive_nonfinite} consecutive training steps that were not finite "
                f"({what}; {self.skipped_nonfinite} skipped in all, at step {self.global_step}); lower the learning "
                f"rates or check the data, or raise --model.init_args.nonfinite_patience"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()  # exact resume: Lightning keeps no RNG state of its own
        size = self.trained_image_size()
        if size:
            checkpoint[IMAGE_SIZE_KEY] = size
        bad = [name for name, value in checkpoint.get("state_dict", {}).items()
               if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
        if bad:
            raise NonFiniteTrainingError(f"refusing to write a checkpoint with non-finite weights: {len(bad)} "
                                         f"tensors, e.g. {', '.join(bad[:3])}")

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        generator_optimizer, discriminator_optimizer = self.optimizers()
        batch_size = next(v for v in batch.values() if isinstance(v, Tensor)).shape[0]

        adversarial = self.uses_discriminator()
        saved = {name: buffer.clone() for name, buffer in self._trained_buffers().items()}
        real = self.judge_real(batch) if adversarial else None  # before the G step freezes D: D step 1 uses it
        # Only the generator side's weights take part in the generator step's graph (D's would be discarded).
        self.toggle_optimizer(generator_optimizer)
        outputs = self.run_generator(batch)
        g_terms = self.generator_losses(batch, outputs, real)
        g_total = self.weighted_sum(g_terms)
        finite = self._update(generator_optimizer, g_total)
        self.untoggle_optimizer(generator_optimizer)

        detached = detach_outputs(outputs)
        if real is not None:
            real = self.refresh_real(real, batch)
        d_terms: dict[str, Tensor] = {}
        for step in range(self.discriminator_steps if adversarial else 0):
            if not finite:  # G's step was not finite: D's steps are skipped too (counted, without gradients)
                self.toggle_optimizer(discriminator_optimizer)
                discriminator_optimizer.zero_grad(set_to_none=True)
                discriminator_optimizer.step()
                self.untoggle_optimizer(discriminator_optimizer)
                continue
            d_terms = self.discriminator_losses(batch, detached, real if step == 0 else None)  # D moves after 1
            d_total = self.weighted_sum(d_terms)
            finite = self._step(discriminator_optimizer, d_total)

        if finite:  # a finite loss over overflowing activations can still leave inf BatchNorm statistics
            finite = bool(_finite(self._trained_buffers().values()))
            if self._trainer is not None:
                finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            self._skip_nonfinite(saved, {**g_terms, **{f"discriminator/{k}": v for k, v in d_terms.items()}})
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), batch_size=batch_size)
            return
        self._consecutive_nonfinite = 0
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator_side())
        logs = {f"train/g/{k}": v.detach() for k, v in g_terms.items()}
        if d_terms:
            logs |= {f"train/d/{k}": v.detach() for k, v in d_terms.items()}
            logs["train/d/total"] = d_total.detach()
        self.log_dict(logs, batch_size=batch_size)
        self.log("train/g/total", g_total.detach(), prog_bar=True, batch_size=batch_size)
        self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), batch_size=batch_size)
