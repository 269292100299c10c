"""Meta-learning and fine-tuning stages (FSTH, LPD): what both models' two stages share.

- :class:`VideoColumnsMetaLearning`: a meta-learning stage whose projection discriminator has one column W_i per
  training video, sized from the data (:func:`size_video_columns`) and trained by an embedding match in the
  generator step too.
- :func:`load_meta_module`: a fine-tuning stage starts from a meta-learning checkpoint.
- :class:`PersonFineTuning`: a fine-tuning stage that initialises its person from the T frames of the datamodule
  (:func:`person_frames_for`) and trains a personalised generator and discriminator.
- :class:`PersonalisedDiscriminator`: the fine-tuning discriminator with the new person's projection column.

Starting a fine-tuning stage:

A fine-tuning module takes ``init_from`` (the meta-learned checkpoint written by ``talkinghead fit``) and rebuilds
the meta-learning module from the checkpoint's stored config, weights included. It keeps that config in its own
hyper-parameters as ``meta_config`` (a JSON string: LightningCLI would otherwise parse the nested ``class_path``
entries as its own), so its own checkpoints rebuild the architecture without the meta checkpoint: when
``meta_config`` is given, the networks are built from it and their weights come from the checkpoint being loaded
(``load_from_checkpoint``, or ``--ckpt_path``, whose hyper-parameters LightningCLI reads back).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import lightning as L
import torch
from torch import Tensor, nn

from talkinghead.lightning.adversarial import class_from_path
from talkinghead.lightning.slim import INFERENCE_ONLY, complete_inference_checkpoint
from talkinghead.safe_load import safe_torch_load

__all__ = ["load_meta_module", "person_frames_for", "size_video_columns", "VideoColumnsMetaLearning",
           "PersonFineTuning", "PersonalisedDiscriminator"]

log = logging.getLogger(__name__)

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
    state = safe_torch_load(path, "init_from checkpoint")
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"init_from {path} is not a Lightning checkpoint (no state_dict)")
    config = dict(state.get("hyper_parameters") or {})
    config.pop("_instantiator", None)
    module = _build(expected, config, f"init_from {path}")
    if state.get(INFERENCE_ONLY):  # a small checkpoint: what it leaves out (loss networks, maybe D) stays as built
        if not any(name.startswith("projection_discriminator.") for name in state["state_dict"]):
            log.warning("init_from %s is an inference-only checkpoint without the discriminator: fine-tuning starts "
                        "D from random weights (write it with keep=('projection_discriminator',))", path)
        complete_inference_checkpoint(module, state)
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


def size_video_columns(module: L.LightningModule, discriminator: nn.Module, stage: str) -> None:
    """Sizes a projection discriminator's W (one column per training video) from the trainer's datamodule.

    The count is recorded in ``module.hparams["num_videos"]``, so checkpoints rebuild W without the data; a run
    resumed on data with another count is refused.

    Args:
        module: the meta-learning module, attached to a trainer whose datamodule has ``num_videos``.
        discriminator: its :class:`~talkinghead.networks.discriminators.ProjectionDiscriminator`.
        stage: the stage's name for error messages, e.g. "FSTH meta-learning".

    Raises:
        ValueError: the datamodule has no ``num_videos`` (not a FewShotDataModule), or the count differs from the
            recorded one.
    """
    datamodule = getattr(module.trainer, "datamodule", None)
    found = getattr(datamodule, "num_videos", None)
    if found is None:
        raise ValueError(
            f"{stage} needs a FewShotDataModule (K reference frames + a target per video, with the video's index); "
            f"got {type(datamodule).__name__}"
        )
    recorded = module.hparams.get("num_videos")
    if recorded is not None and recorded != found:
        raise ValueError(
            f"this model's discriminator has {recorded} video columns but the training data has {found} videos: "
            "meta-learning continues only on the data it started with"
        )
    if discriminator.num_videos != found:
        discriminator.set_num_videos(found)
    module.hparams["num_videos"] = found


class VideoColumnsMetaLearning:
    """Mixin for the meta-learning stages of FSTH and LPD (put it before the AdversarialModule subclass).

    The generator side is ``self.networks`` and the discriminator ``self.projection_discriminator``, whose W has
    one column per training video: sized from the data at the start of fit, and trained both by D and, in the
    generator step, by the embedding match that pulls W_i and the embedder's output together (FSTH's
    L_MCH(phi, W)). The adversarial terms of the generator step must see W as a constant: ``fixed_video_column``.
    Before the match, :meth:`initialise_video_columns` sets each W_i to its video's first embedding (the
    ``video_columns_init`` hyper-parameter: "embedding", or "random" for the paper's N(0, 0.02^2) rows, which
    collapses FSTH's embedder on tiny runs: ``benchmarks/fsth_embedder.py``). Subclasses set ``stage_name`` (for
    error messages).
    """

    stage_name = "meta-learning"
    networks: nn.ModuleDict
    projection_discriminator: nn.Module
    VIDEO_COLUMNS_INITS = ("embedding", "random")

    @classmethod
    def check_video_columns_init(cls, value: str) -> None:
        if value not in cls.VIDEO_COLUMNS_INITS:
            raise ValueError(f"video_columns_init must be one of {', '.join(cls.VIDEO_COLUMNS_INITS)}; got {value!r}")

    def setup(self, stage: str) -> None:
        self.check_data_image_size()
        if stage == "fit":
            size_video_columns(self, self.projection_discriminator, self.stage_name)
        super().setup(stage)

    def initialise_video_columns(self, video_index: Tensor, embedding: Tensor) -> None:
        """W_i = e_i (detached) for the batch's videos whose column has not been set yet.

        Why: L_MCH = |e_i - W_i| with weight 80 outweighs the reconstruction terms' pull on e ~80x on tiny runs; with
        W's rows at their N(0, 0.02^2) initialisation it drags FSTH's ReLU'd, sum-pooled e towards 0 until every
        pre-ReLU activation is negative (measured: |e| 0.78 -> 0.0005 within 25 steps, 0.5% of ReLUs alive) and
        no gradient revives it. Started from e_i itself, the match keeps e_i and W_i together at e's own scale,
        which is what the paper's term asks for. Under DDP the indices and embeddings of every rank are gathered
        first, so all ranks write the same rows.
        """
        if self.hparams.get("video_columns_init", "embedding") != "embedding":
            return
        if getattr(self, "_all_video_columns_set", False):
            return
        discriminator = self.projection_discriminator
        embedding = embedding.detach()
        if self._trainer is not None and self.trainer.world_size > 1:
            video_index = self.all_gather(video_index).reshape(-1)
            embedding = self.all_gather(embedding).reshape(-1, embedding.shape[-1])
        discriminator.set_video_columns(video_index, embedding)
        self._all_video_columns_set = bool(discriminator.video_columns_set.all())

    def generator_side(self) -> nn.Module:
        return self.networks

    def discriminator(self) -> nn.Module:
        return self.projection_discriminator

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        # L_MCH(phi, W) is minimised over both the embedder and W (FSTH 3.2): W_i is pulled towards e_i in the
        # generator step as e_i is towards W_i. With W fixed there, a target near W's small initial values drove
        # FSTH's ReLU'd, sum-pooled e to exactly 0 for every video within a few hundred tiny steps (dead embedder).
        yield from self.networks.parameters()
        yield self.projection_discriminator.video_embeddings.weight

    def refresh_real(self, real: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
        """The shared D(real) with its logits projected again on the current W: the generator step between
        judge_real and the first D step moves W (the match, and initialise_video_columns the first time a video
        is seen); the trunk's features and embedding do not change."""
        return {**real, "logits": self.projection_discriminator.project(real["embedding"], batch["video_index"])}

    def fixed_video_column(self, batch: Mapping[str, Any]) -> Tensor:
        """W_i + w_0 of each item's video, detached: (b, d). The generator step's adversarial terms use it, so
        they never move D's columns towards the fakes."""
        return self.projection_discriminator.video_column(batch["video_index"]).detach()


class PersonalisedDiscriminator(nn.Module):
    """A meta-learned projection discriminator with the new person's column w' (replacing W_i + w_0) as a
    trainable parameter (FSTH 3.3; LPD fine-tuning likewise).

    Args:
        discriminator: the meta-learned projection discriminator (V, w_0, b).
        embedding_dim: size of w'.
    """

    def __init__(self, discriminator: nn.Module, embedding_dim: int) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.column = nn.Parameter(torch.zeros(1, embedding_dim))  # w', set from w_0 + e_new before training

    def forward(self, image: Tensor) -> dict[str, Any]:
        """(b, c, s, s) image (FSTH: image || sketch) -> {"features", "embedding", "logits" (b, 1)}."""
        return self.discriminator(image, column=self.column)


def person_frames_for(module: L.LightningModule, stage: str) -> dict[str, Any]:
    """The new person's T frames (``PersonDataModule.person_frames()``: a batch of one with ``references``).

    Raises:
        ValueError: the trainer's datamodule is not a PersonDataModule.
    """
    datamodule = getattr(module.trainer, "datamodule", None)
    if not callable(getattr(datamodule, "person_frames", None)):
        raise ValueError(f"{stage} needs a PersonDataModule (the T frames of the new person); got "
                         f"{type(datamodule).__name__}")
    return datamodule.person_frames()


class PersonFineTuning:
    """Mixin for the fine-tuning stages of FSTH and LPD (put it before the AdversarialModule subclass).

    The generator side is ``self.person_generator`` and the discriminator ``self.person_discriminator`` (a
    :class:`PersonalisedDiscriminator` over the meta-learned one, from :meth:`personalise`). At the start of the
    first fit the person is initialised from the datamodule's T frames (``initialise_from(person)``, which the
    subclass implements and which ends with :meth:`set_person_column`); the ``initialised`` buffer keeps a
    reloaded checkpoint from being initialised again. The networks named in ``frozen_networks`` only initialise or
    read the person: frozen, and kept in eval mode whatever ``train()`` is called with (batch-norm statistics and
    spectral norm's power iteration stand still). Subclasses set ``stage_name`` (for messages).
    """

    stage_name = "fine-tuning"
    frozen_networks: tuple[str, ...] = ()
    person_generator: nn.Module
    person_discriminator: PersonalisedDiscriminator

    def personalise(self, person_generator: nn.Module, discriminator: nn.Module, embedding_dim: int) -> None:
        """Sets the generator side and wraps the meta-learned projection discriminator with the person's column.

        The training videos' columns W and w_0 play no part in fine-tuning: w' replaces W_i + w_0, so W is dropped
        and w_0 frozen. Call from ``__init__``, after the frozen networks are set.
        """
        for name in self.frozen_networks:
            getattr(self, name).requires_grad_(False).eval()
        discriminator.set_num_videos(0)
        discriminator.shared_column.requires_grad_(False)
        self.person_generator = person_generator
        self.person_discriminator = PersonalisedDiscriminator(discriminator, embedding_dim)
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def set_person_column(self, embedding: Tensor) -> None:
        """w' = w_0 + the person's embedding (1, d); marks the person initialised."""
        self.person_discriminator.column.copy_(self.person_discriminator.discriminator.shared_column + embedding)
        self.initialised.fill_(True)

    def initialise_from(self, person: Mapping[str, Any]) -> None:
        """Initialises the person from ``PersonDataModule.person_frames()`` (``references`` (1, T, ...))."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> PersonFineTuning:
        super().train(mode)
        for name in self.frozen_networks:
            getattr(self, name).eval()
        return self

    def setup(self, stage: str) -> None:
        self.check_data_image_size()
        if stage == "fit" and not bool(self.initialised):
            person = person_frames_for(self, self.stage_name)
            self.initialise_from(person)
            log.info("%s: the person initialised from %d frames of %r", self.stage_name,
                     person["references"].shape[1], person.get("identity"))
        super().setup(stage)

    def generator_side(self) -> nn.Module:
        return self.person_generator

    def discriminator(self) -> nn.Module:
        return self.person_discriminator
