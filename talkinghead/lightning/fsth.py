"""FSTH: few-shot adversarial learning of talking heads (Zakharov, Shysheya, Burkov, Lempitsky, ICCV 2019).

Two stages, each its own ``talkinghead fit``:

- :class:`FSTHModule`, meta-learning (section 3.2): for a video i, the embedder E turns K frames and their
  landmark sketches into the video embedding e_i (mean over the K frames); the generator G draws the target frame
  from its sketch with AdaIN parameters psi = P e_i; the projection discriminator scores (image, sketch) against
  the video's column W_i. The target frame is never among the K.
- :class:`FSTHFineTuneModule`, few-shot fine-tuning to a new person (section 3.3): psi' = P e_new and the
  discriminator column w' = w_0 + e_new are computed once from the person's T frames, then G (with psi') and D
  (with w') are trained on those frames. Afterwards the person is animated from any driving landmarks.

Landmarks become images with :func:`talkinghead.sketch.draw_sketch` inside the module (on the GPU, at the batch's
image size), so real and synthetic shards are treated alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from talkinghead.lightning.adversarial import AdversarialModule, built_by_cli
from talkinghead.lightning.finetune import (
    PersonFineTuning,
    VideoColumnsMetaLearning,
    load_meta_module,
)
from talkinghead.losses import (
    DiscriminatorHingeLoss,
    EmbeddingMatchLoss,
    FaceVGGLoss,
    FeatureMatchingLoss,
    GeneratorHingeLoss,
    PerceptualPyramidLoss,
    in_memory_order,
)
from talkinghead.networks.few_shot_models import FSTHModel, FSTHPersonModel
from talkinghead.sketch import draw_sketch

__all__ = [
    "FSTHModule",
    "FSTHFineTuneModule",
    "PersonalisedGenerator",
    "PAPER_LOSS_WEIGHTS",
    "PAPER_FINETUNE_LOSS_WEIGHTS",
]

log = logging.getLogger(__name__)

# Section 3.2: L_CNT = 1e-2 VGG19 + 2e-3 VGGFace, L_ADV = -D + 10 L_FM, L_MCH weight 80; hinge for D.
PAPER_LOSS_WEIGHTS: dict[str, float] = {
    "content_vgg19": 1e-2,
    "content_vggface": 2e-3,  # computed only with face-VGG weights (face_vgg_weights)
    "adversarial": 1.0,
    "feature_matching": 10.0,
    "embedding_match": 80.0,
    "discriminator": 1.0,
    # Not in the paper: pixel L1 to the target, off by default. Without downloadable VGG19 weights the content
    # loss runs on random-init features; tiny configs turn it on so small models learn on a CPU budget.
    "l1": 0.0,
}

# Section 3.3: fine-tuning keeps the content and adversarial losses and drops the embedding match.
PAPER_FINETUNE_LOSS_WEIGHTS: dict[str, float] = {
    name: weight for name, weight in PAPER_LOSS_WEIGHTS.items() if name != "embedding_match"
}


class _FSTHStage(AdversarialModule):
    """What both FSTH stages share: the content, adversarial and feature-matching terms and the hinge D loss.

    Subclasses provide ``judge(image, sketch, batch)`` (the discriminator's output for image || sketch, conditioned
    on the video or the person) and put ``prediction`` and ``sketch`` into the generator's outputs.
    """

    def _make_losses(self, content_vgg19: nn.Module, content_vggface: nn.Module | None) -> None:
        self.content_vgg19 = content_vgg19
        self.content_vggface = content_vggface
        self.generator_hinge = GeneratorHingeLoss()
        self.discriminator_hinge = DiscriminatorHingeLoss()
        self.feature_matching = FeatureMatchingLoss()

    def judge(self, image: Tensor, sketch: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def judge_for_generator(self, image: Tensor, sketch: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        """D's output as the generator's terms see it (by default the same as ``judge``)."""
        return self.judge(image, sketch, batch)

    def driving_sketch(self, batch: Mapping[str, Any]) -> Tensor:
        """The sketch of ``batch["driving_landmarks"]`` at the frames' size, drawn once per batch (judge_real and
        run_generator both need it)."""
        landmarks = batch["driving_landmarks"]
        cached = getattr(self, "_sketch_cache", None)
        if cached is not None and cached[0] is landmarks:  # the cache holds the tensor, so its id is not reused
            return cached[1]
        sketch = draw_sketch(landmarks, batch["driving"].shape[-1])
        self._sketch_cache = (landmarks, sketch)
        return sketch

    def judge_real(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """D(driving || sketch) once per batch: feature matching reads its features (detached; they do not depend
        on the projection column) and the first D step its logits, instead of a pass in each (5 D passes per
        batch, not 6)."""
        return self.judge(batch["driving"], self.driving_sketch(batch), batch)

    def generator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                         real: Any = None) -> dict[str, Tensor]:
        target, prediction, sketch = batch["driving"], outputs["prediction"], outputs["sketch"]
        terms: dict[str, Tensor] = {}
        if self.wants("l1"):
            terms["l1"] = F.l1_loss(*in_memory_order(prediction, target))
        if self.wants("content_vgg19"):
            terms["content_vgg19"] = self.content_vgg19(prediction, target)
        if self.wants("content_vggface") and self.content_vggface is not None:
            terms["content_vggface"] = self.content_vggface(prediction, target)
        if self.wants("adversarial") or self.wants("feature_matching"):
            fake = self.judge_for_generator(prediction, sketch, batch)
            terms["adversarial"] = self.generator_hinge(fake)
            if real is None:
                real = self.judge_for_generator(target, sketch, batch)
            terms["feature_matching"] = self.feature_matching(real, fake)  # the real features enter detached
        return {name: value for name, value in terms.items() if self.wants(name)}

    def discriminator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                             real: Any = None) -> dict[str, Tensor]:
        if real is None:
            real = self.judge(batch["driving"], outputs["sketch"], batch)
        fake = self.judge(outputs["prediction"], outputs["sketch"], batch)
        return {"discriminator": self.discriminator_hinge(real, fake)}



def _content_losses(
    vgg_weights: str | None, face_vgg_weights: str | None, layer_weights: tuple[float, ...]
) -> tuple[nn.Module, nn.Module | None]:
    from talkinghead.networks.vgg import load_face_vgg, load_vgg19

    # FSTH compares single-scale activations (VGG19 conv1, 6, 11, 20, 29: relu1_1 ... relu5_1) with L1.
    vgg19 = PerceptualPyramidLoss(load_vgg19(vgg_weights), layer_weights=layer_weights, scales=(1.0,))
    face = None if face_vgg_weights is None else FaceVGGLoss(load_face_vgg(face_vgg_weights), layer_weights)
    return vgg19, face


class FSTHModule(VideoColumnsMetaLearning, _FSTHStage):
    """FSTH meta-learning (Zakharov et al. 2019, section 3.2): embedder E, generator G with P, projection D.

    Args:
        embedder: E, (frames, sketches) (b, k, 3, s, s) each -> video embedding (b, d), e.g.
            :class:`~talkinghead.networks.fsth.Embedder`.
        generator: G, (sketch (b, 3, s, s), psi) -> image in [0, 1], with ``adain_parameters(e)`` = P e, e.g.
            :class:`~talkinghead.networks.fsth.FSTHGenerator`.
        discriminator: D over image || sketch with one column per training video, e.g.
            :class:`~talkinghead.networks.discriminators.ProjectionDiscriminator` with 6 input channels.
        num_videos: columns of D's W; None sizes W from the training data (``FewShotDataModule.num_videos``) at
            the start of fit and records the count here, so checkpoints rebuild without the data.
        loss_weights: weight per term (the paper's by default); 0 disables a term.
        vgg_weights: VGG19 weights for the content loss: a torchvision enum name ("IMAGENET1K_V1", from the torch
            hub cache) or a local .pth file; None uses random-init features and says so once.
        face_vgg_weights: local VGG-Face weights for the content loss's VGGFace term; None leaves it out.
        content_layer_weights: weights of the VGG relu1_1 ... relu5_1 activations in the content loss.
        generator_optimizer: optimizer for E, G and P (default Adam 5e-5, the paper's).
        discriminator_optimizer: optimizer for D (default Adam 2e-4).
        discriminator_steps: D updates per G update (2 in the paper).
        ema_decay: decay of an EMA of E and G used for inference; None for none.
        nonfinite_patience: consecutive non-finite steps skipped before the run stops (AdversarialModule).
        channels_last: conv weights and activations channels-last in training; None: on the CPU only
            (AdversarialModule).
        video_columns_init: "embedding" sets each W_i to its video's first e_i before the embedding match starts
            pulling (keeps the embedder alive; see :meth:`VideoColumnsMetaLearning.initialise_video_columns`);
            "random" keeps the N(0, 0.02^2) rows, which collapsed e to 0 on tiny runs.
    """

    bundle_kind = "fsth"  # what `talkinghead export` calls its inference model (talkinghead.inference.KINDS)

    stage_name = "FSTH meta-learning"

    def __init__(
        self,
        embedder: nn.Module,
        generator: nn.Module,
        discriminator: nn.Module,
        num_videos: int | None = None,
        loss_weights: dict[str, float] | None = None,
        vgg_weights: str | None = None,
        face_vgg_weights: str | None = None,
        content_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0),
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        discriminator_steps: int = 2,
        ema_decay: float | None = None,
        nonfinite_patience: int = 10,
        channels_last: bool | None = None,
        video_columns_init: str = "embedding",
    ) -> None:
        self.check_video_columns_init(video_columns_init)
        super().__init__(
            loss_weights=loss_weights,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
            discriminator_steps=discriminator_steps,
            ema_decay=ema_decay,
            nonfinite_patience=nonfinite_patience,
            channels_last=channels_last,
            default_lr=(5e-5, 2e-4),
            default_loss_weights=PAPER_LOSS_WEIGHTS,
        )
        networks = ["embedder", "generator", "discriminator"]
        self.save_hyperparameters(ignore=None if built_by_cli() else networks)
        self.networks = FSTHModel(embedder, generator)  # the inference model (state-dict keys networks.*)
        self.projection_discriminator = discriminator
        if num_videos is not None:
            discriminator.set_num_videos(num_videos)
        self._make_losses(*_content_losses(vgg_weights, face_vgg_weights, content_layer_weights))
        if face_vgg_weights is None and self.wants("content_vggface"):
            log.warning("FSTH: no face-VGG weights (face_vgg_weights), so the content loss has no VGGFace term")
        self.embedding_match = EmbeddingMatchLoss()

    # -- the adversarial hooks -----------------------------------------------------------------------------------

    @staticmethod
    def video_embedding(networks: nn.Module, references: Tensor, landmarks: Tensor) -> Tensor:
        """e_i = mean over the K frames of E(frame, sketch): (b, d) from references (b, k, 3, s, s), (b, k, 68, 2)."""
        return networks["embedder"](references, draw_sketch(landmarks, references.shape[-1]))

    def run_generator(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        target = batch["driving"]
        if (batch["video_index"] < 0).any():
            raise ValueError("a training batch holds a video outside the discriminator's columns (video_index -1)")
        embedding = self.video_embedding(self.networks, batch["references"], batch["references_landmarks"])
        sketch = self.driving_sketch(batch)
        generator = self.networks["generator"]
        prediction = generator(sketch, generator.adain_parameters(embedding))
        # Watched because e can collapse: ReLU'd and sum-pooled, it reached exactly 0 for every video when the
        # embedding match pulled it towards W's random rows (video_columns_init="random"), and then G ignores the
        # references.
        self.log("train/e_abs_mean", embedding.detach().abs().mean(), batch_size=target.shape[0])
        return {"prediction": prediction, "sketch": sketch, "embedding": embedding}

    def judge(self, image: Tensor, sketch: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.projection_discriminator(torch.cat([image, sketch], dim=1), video_index=batch["video_index"])

    def judge_for_generator(self, image: Tensor, sketch: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.projection_discriminator(torch.cat([image, sketch], dim=1), column=self.fixed_video_column(batch))

    def generator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                         real: Any = None) -> dict[str, Tensor]:
        terms = super().generator_losses(batch, outputs, real)
        if self.wants("embedding_match"):
            self.initialise_video_columns(batch["video_index"], outputs["embedding"])
            column = self.projection_discriminator.video_embeddings(batch["video_index"])
            terms["embedding_match"] = self.embedding_match(outputs["embedding"], column)
        return terms

    # -- inference -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct_batch(self, batch: Mapping[str, Any]) -> Tensor:
        """The feed-forward result: ``batch["driving"]`` drawn from its landmarks with the references' embedding.

        Args:
            batch: ``references`` (b, k, 3, s, s), ``references_landmarks`` (b, k, 68, 2) and
                ``driving_landmarks`` (b, 68, 2) (``driving`` itself is only read for its size when present).

        Returns:
            (b, 3, s, s) in [0, 1].
        """
        return self.reenact(batch["references"], batch["references_landmarks"], batch["driving_landmarks"])

    @torch.no_grad()
    def reenact(self, references: Tensor, references_landmarks: Tensor, driving_landmarks: Tensor,
                chunk: int = 16) -> Tensor:
        """Few-shot synthesis without fine-tuning: :meth:`FSTHModel.reenact` with the inference networks (the EMA
        when kept), in eval mode."""
        with self.evaluating() as model:
            return model.reenact(references, references_landmarks, driving_landmarks, chunk)


PersonalisedGenerator = FSTHPersonModel  # its name before the inference models moved to talkinghead.networks


class FSTHFineTuneModule(PersonFineTuning, _FSTHStage):
    """FSTH few-shot fine-tuning to one new person (Zakharov et al. 2019, section 3.3).

    At the start of fit, the T frames of the person (``PersonDataModule.person_frames()``) give
    e_new = mean E(frame, sketch); then psi' = P e_new and w' = w_0 + e_new, and G (with psi') and D (V, w', b)
    are trained on the person's frames with the content and adversarial losses. E and P are not trained.

    Args:
        init_from: the meta-learning checkpoint (:class:`FSTHModule`, from ``talkinghead fit``).
        meta_config: the meta module's config (JSON); stored by this module itself so that its checkpoints
            rebuild without ``init_from``. Leave it unset.
        loss_weights: weight per term (the paper's meta-learning weights without the embedding match).
        generator_optimizer: optimizer for G and psi' (default Adam 5e-5).
        discriminator_optimizer: optimizer for D and w' (default Adam 2e-4).
        discriminator_steps: D updates per G update.
        ema_decay: decay of an EMA of G and psi' used for inference; None for none.
        nonfinite_patience: consecutive non-finite steps skipped before the run stops (AdversarialModule).
        channels_last: conv weights and activations channels-last in training; None: on the CPU only
            (AdversarialModule).

    The content loss reuses the meta checkpoint's feature networks (the same VGG19 / VGGFace).
    """

    bundle_kind = "fsth-person"  # what `talkinghead export` calls its inference model (talkinghead.inference.KINDS)

    stage_name = "FSTH fine-tuning"
    frozen_networks = ("embedder",)

    def __init__(
        self,
        init_from: str | None = None,
        meta_config: str | None = None,
        loss_weights: dict[str, float] | None = None,
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        discriminator_steps: int = 2,
        ema_decay: float | None = None,
        nonfinite_patience: int = 10,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(
            loss_weights=loss_weights,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
            discriminator_steps=discriminator_steps,
            ema_decay=ema_decay,
            nonfinite_patience=nonfinite_patience,
            channels_last=channels_last,
            default_lr=(5e-5, 2e-4),
            default_loss_weights=PAPER_FINETUNE_LOSS_WEIGHTS,
        )
        self.save_hyperparameters()
        meta, config = load_meta_module(FSTHModule, init_from, meta_config)
        self.hparams["meta_config"] = config
        # E only initialises the person.
        self.embedder = meta.networks["embedder"]
        generator, discriminator = meta.networks["generator"], meta.projection_discriminator
        self.personalise(PersonalisedGenerator(generator, generator.num_adain_parameters), discriminator,
                         discriminator.shared_column.shape[-1])
        self._make_losses(meta.content_vgg19, meta.content_vggface)

    # -- the person ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def initialise_person(self, frames: Tensor, landmarks: Tensor) -> Tensor:
        """Sets psi' = P e_new and w' = w_0 + e_new from the person's frames and returns e_new.

        Args:
            frames: (t, 3, s, s) or (1, t, 3, s, s) frames of the person in [0, 1].
            landmarks: (t, 68, 2) or (1, t, 68, 2) their landmarks in pixels.

        Returns:
            e_new (1, d).
        """
        frames = frames.reshape(1, -1, *frames.shape[-3:]).to(self.device)
        landmarks = landmarks.reshape(1, -1, 68, 2).to(self.device)
        embedding = self.embedder(frames, draw_sketch(landmarks, frames.shape[-1]))  # E is always in eval mode
        self.person_generator.adain.copy_(self.person_generator.generator.adain_parameters(embedding))
        self.set_person_column(embedding)
        return embedding

    def initialise_from(self, person: Mapping[str, Any]) -> None:
        from talkinghead.datamodules.shard_format import ShardError

        known = person["references_landmarks"].flatten(2).isfinite().all(-1)  # (1, t)
        if not known.all():
            raise ShardError(
                f"FSTH draws the person from landmarks, and {int((~known).sum())} of the {known.numel()} frames of "
                f"{person.get('identity', ['the person'])[0]!r} have none: preprocess the videos with landmarks "
                "(talkinghead preprocess) or choose frames where a face was found"
            )
        self.initialise_person(person["references"], person["references_landmarks"])

    # -- the adversarial hooks -----------------------------------------------------------------------------------

    def run_generator(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        sketch = self.driving_sketch(batch)
        return {"prediction": self.person_generator(sketch), "sketch": sketch}

    def judge(self, image: Tensor, sketch: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.person_discriminator(torch.cat([image, sketch], dim=1))

    # -- inference -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct_batch(self, batch: Mapping[str, Any]) -> Tensor:
        """The person drawn with the landmarks of ``batch["driving"]``: (b, 3, s, s) in [0, 1]."""
        return self.reenact(batch["driving_landmarks"], batch["driving"].shape[-1])

    @torch.no_grad()
    def reenact(self, driving_landmarks: Tensor, size: int, chunk: int = 16) -> Tensor:
        """The fine-tuned person posed by each set of driving landmarks (any person's).

        Args:
            driving_landmarks: (t, 68, 2) in pixels of a size x size image.
            size: side of the output images (the size the model was trained at).
            chunk: frames synthesised per forward pass.

        Returns:
            (t, 3, size, size) in [0, 1].
        """
        with self.evaluating() as model:
            return model.reenact(driving_landmarks, size, chunk)
