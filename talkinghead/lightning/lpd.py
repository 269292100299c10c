"""LPD: neural head reenactment with latent pose descriptors (Burkov, Pasechnik, Grigorev, Lempitsky, CVPR 2020).

Two stages, each its own ``talkinghead fit``:

- :class:`LPDModule`, meta-learning: for a video i, the identity encoder turns K frames into the identity embedding
  (mean over the K), the pose encoder turns ONE augmented frame (the target, with pose-preserving pixel changes)
  into a pose descriptor, and the generator draws the target from both: RGB x a foreground mask. The RGB-only
  projection discriminator scores the image against the video's column W_i; the identity embedding is matched
  to W_i.
- :class:`LPDFineTuneModule`, fine-tuning to a new person: the encoders are frozen (batch-norm in eval mode),
  the person's identity embedding becomes a trainable parameter initialised from the mean over their frames, and
  the generator and discriminator are fine-tuned on those frames. Afterwards the person is reenacted by the pose
  of anyone's frames (cross-person reenactment).

Foreground masks: with ``remove_background`` in the data config the frames arrive with the background blacked out
(LPD trains on segmented frames), the generator's RGB x mask is compared with them, and a dice loss trains the mask
where the shards store masks. Without masks the dice term is skipped (the run says so once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from talkinghead.augment import PoseAugmentation
from talkinghead.lightning.adversarial import AdversarialModule, built_by_cli
from talkinghead.lightning.finetune import (
    PersonFineTuning,
    VideoColumnsMetaLearning,
    load_meta_module,
)
from talkinghead.losses import (
    DiceLoss,
    DiscriminatorHingeLoss,
    EmbeddingMatchLoss,
    FaceVGGLoss,
    FeatureMatchingLoss,
    GeneratorHingeLoss,
    PerceptualPyramidLoss,
    in_memory_order,
)
from talkinghead.networks.few_shot_models import LPDModel, LPDPersonGenerator, LPDPersonModel

__all__ = ["LPDModule", "LPDFineTuneModule", "PersonalisedLPDGenerator", "PAPER_LOSS_WEIGHTS",
           "PAPER_FINETUNE_LOSS_WEIGHTS"]

log = logging.getLogger(__name__)

# LPD 3.2: VGG19 perceptual 3e-2, VGGFace on a centre crop 6e-3, hinge adversarial, feature matching 10, dice on
# the mask 1, identity embedding match 1e-2 (meta-learning only).
PAPER_LOSS_WEIGHTS: dict[str, float] = {
    "perceptual": 3e-2,
    "face_perceptual": 6e-3,  # computed only with face-VGG weights (face_vgg_weights)
    "adversarial": 1.0,
    "feature_matching": 10.0,
    "dice": 1.0,  # computed only on rows whose shards store a foreground mask
    "identity_match": 1e-2,
    "discriminator": 1.0,
    # Not in the paper: pixel L1 to the target, off by default (tiny configs use it: without downloadable VGG19
    # weights the perceptual loss runs on random-init features).
    "l1": 0.0,
}

PAPER_FINETUNE_LOSS_WEIGHTS: dict[str, float] = {
    name: weight for name, weight in PAPER_LOSS_WEIGHTS.items() if name != "identity_match"
}


def centre_crop(image: Tensor, fraction: float) -> Tensor:
    """The central ``fraction`` of each side: (b, c, s, s) -> (b, c, round(fraction s), round(fraction s))."""
    size = image.shape[-1]
    side = max(1, round(size * fraction))
    start = (size - side) // 2
    return image[..., start:start + side, start:start + side]


class _LPDStage(AdversarialModule):
    """What both LPD stages share: pose augmentation and the reconstruction, adversarial and mask terms.

    Subclasses put ``prediction`` (RGB x mask), ``mask``, ``target`` and ``target_mask`` (the geometry-augmented
    driving frame and its mask) into the generator's outputs and provide ``judge(image, batch)``.
    """

    def _make_stage(self, perceptual: nn.Module, face_perceptual: nn.Module | None, face_crop: float,
                    augment_pose: bool, pose_augmentation: PoseAugmentation | None) -> None:
        if not 0 < face_crop <= 1:
            raise ValueError(f"face_crop must be a fraction of the image side in (0, 1], got {face_crop}")
        self.perceptual, self.face_perceptual, self.face_crop = perceptual, face_perceptual, face_crop
        self.pose_augmentation = (pose_augmentation or PoseAugmentation()) if augment_pose else None
        self.generator_hinge = GeneratorHingeLoss()
        self.discriminator_hinge = DiscriminatorHingeLoss()
        self.feature_matching = FeatureMatchingLoss()
        self.dice = DiceLoss()
        self._said_no_masks = False

    def pose_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        """(pose frame, target, target mask): in training the driving frame augmented (pixel changes on the pose
        frame only, the same geometry on all three), drawn once per training step (judge_real and run_generator
        both read it; outside training_step every call draws anew), else the driving frame as is."""
        driving, mask = batch["driving"], batch.get("driving_mask")
        if not (self.training and self.pose_augmentation is not None):
            return driving, driving, mask
        cache = getattr(self, "_pose_inputs_cache", None)
        if cache is not None and cache.get("driving") is driving:
            return cache["augmented"]
        augmented = self.pose_augmentation(driving, driving, mask)
        if cache is not None:
            cache.update(driving=driving, augmented=augmented)
        return augmented

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._pose_inputs_cache: dict[str, Any] | None = {}  # one augmentation per step, even for a batch seen again
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self._pose_inputs_cache = None

    def judge_real(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """D(target) once per batch: feature matching reads its features (detached; they do not depend on the
        projection column) and the D step its logits, instead of a pass in each (3 D passes per batch, not 4)."""
        return self.judge(self.pose_inputs(batch)[1], batch)

    def judge(self, image: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def judge_for_generator(self, image: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        """D's output as the generator's terms see it (by default the same as ``judge``)."""
        return self.judge(image, batch)

    def _dice(self, mask: Tensor, target_mask: Tensor | None) -> Tensor | None:
        known = (torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device) if target_mask is None
                 else target_mask.flatten(1).isfinite().all(1))
        if not known.any():
            if not self._said_no_masks:
                log.warning("LPD: the batches carry no foreground masks, so the dice term on the mask is skipped "
                            "(shards written with masks, e.g. synthetic ones, train it)")
                self._said_no_masks = True
            return None
        return self.dice(mask[known], target_mask[known])

    def generator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                         real: Any = None) -> dict[str, Tensor]:
        prediction, target = outputs["prediction"], outputs["target"]
        terms: dict[str, Tensor] = {}
        if self.wants("l1"):
            terms["l1"] = F.l1_loss(*in_memory_order(prediction, target))
        if self.wants("perceptual"):
            terms["perceptual"] = self.perceptual(prediction, target)
        if self.wants("face_perceptual") and self.face_perceptual is not None:
            terms["face_perceptual"] = self.face_perceptual(centre_crop(prediction, self.face_crop),
                                                            centre_crop(target, self.face_crop))
        if self.wants("adversarial") or self.wants("feature_matching"):
            fake = self.judge_for_generator(prediction, batch)
            terms["adversarial"] = self.generator_hinge(fake)
            real = self.judge_for_generator(target, batch) if real is None else real
            terms["feature_matching"] = self.feature_matching(real, fake)  # the real features enter detached
        if self.wants("dice"):
            dice = self._dice(outputs["mask"], outputs["target_mask"])
            if dice is not None:
                terms["dice"] = dice
        return {name: value for name, value in terms.items() if self.wants(name)}

    def discriminator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                             real: Any = None) -> dict[str, Tensor]:
        real = self.judge(outputs["target"], batch) if real is None else real
        fake = self.judge(outputs["prediction"], batch)
        return {"discriminator": self.discriminator_hinge(real, fake)}


def _perceptual_losses(vgg_weights: str | None, face_vgg_weights: str | None,
                       layer_weights: tuple[float, ...]) -> tuple[nn.Module, nn.Module | None]:
    from talkinghead.networks.vgg import load_face_vgg, load_vgg19

    vgg19 = PerceptualPyramidLoss(load_vgg19(vgg_weights), layer_weights=layer_weights, scales=(1.0,))
    face = None if face_vgg_weights is None else FaceVGGLoss(load_face_vgg(face_vgg_weights), layer_weights)
    return vgg19, face


class LPDModule(VideoColumnsMetaLearning, _LPDStage):
    """LPD meta-learning (Burkov et al. 2020, section 3): identity and pose encoders, generator, projection D.

    Args:
        identity_encoder: frames (b, k, 3, s, s) -> identity embedding (b, d_id), the mean over k, e.g.
            :class:`~talkinghead.networks.lpd.IdentityEncoder` (ResNeXt-50 32x4d).
        pose_encoder: one frame (b, 3, s, s) -> pose descriptor (b, d_pose), e.g.
            :class:`~talkinghead.networks.lpd.PoseEncoder` (MobileNetV2).
        generator: (identity, pose) -> {"image", "mask", ...}, e.g. :class:`~talkinghead.networks.lpd.LPDGenerator`.
        discriminator: RGB projection discriminator with one column per training video and ``embedding_dim`` =
            d_id (the identity match compares the two), e.g.
            :class:`~talkinghead.networks.discriminators.ProjectionDiscriminator` with ``in_channels=3``.
        num_videos: columns of D's W; None sizes W from the training data at the start of fit and records it.
        loss_weights: weight per term (the paper's by default); 0 disables a term.
        vgg_weights: VGG19 weights for the perceptual loss: a torchvision enum name ("IMAGENET1K_V1", from the
            torch hub cache) or a local .pth; None uses random-init features and says so once.
        face_vgg_weights: local VGG-Face weights for the face term on the centre crop; None leaves it out.
        perceptual_layer_weights: weights of the VGG relu1_1 ... relu5_1 activations.
        face_crop: side of the centre crop the face term sees, as a fraction of the image side (the face box
            inside LPD's 1.8x crop).
        augment_pose: augment the pose frame in training (LPD's defence against identity leaking through pose).
        pose_augmentation: the augmentation's ranges; None takes :class:`~talkinghead.augment.PoseAugmentation`'s
            defaults (scale 0.8-1.2 per axis, shift 5%, blur / sharpen / noise / colour / JPEG).
        generator_optimizer: optimizer for the encoders, the generator and W's identity-match gradient (default
            Adam 2e-4, betas 0.5 / 0.999; SPEC gives no meta-learning optimizer for LPD).
        discriminator_optimizer: optimizer for D (default Adam 2e-4).
        discriminator_steps: D updates per G update.
        ema_decay: decay of the EMA of the encoders and the generator used for inference (0.999); None for none.
        nonfinite_patience: consecutive non-finite steps skipped before the run stops (AdversarialModule).
        channels_last: conv weights and activations channels-last in training; None: on the CPU only
            (AdversarialModule).
        video_columns_init: "embedding" sets each W_i to its video's first identity embedding before the identity
            match pulls (as FSTH; :meth:`VideoColumnsMetaLearning.initialise_video_columns`); "random" keeps W's
            N(0, 0.02^2) rows.
    """

    bundle_kind = "lpd"  # what `talkinghead export` calls its inference model (talkinghead.inference.KINDS)

    stage_name = "LPD meta-learning"

    def __init__(
        self,
        identity_encoder: nn.Module,
        pose_encoder: nn.Module,
        generator: nn.Module,
        discriminator: nn.Module,
        num_videos: int | None = None,
        loss_weights: dict[str, float] | None = None,
        vgg_weights: str | None = None,
        face_vgg_weights: str | None = None,
        perceptual_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0),
        face_crop: float = 0.6,
        augment_pose: bool = True,
        pose_augmentation: PoseAugmentation | None = None,
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        discriminator_steps: int = 1,
        ema_decay: float | None = 0.999,
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
            default_lr=(2e-4, 2e-4),
            default_loss_weights=PAPER_LOSS_WEIGHTS,
        )
        networks = ["identity_encoder", "pose_encoder", "generator", "discriminator", "pose_augmentation"]
        self.save_hyperparameters(ignore=None if built_by_cli() else networks)
        _check_sizes(identity_encoder, pose_encoder, generator, discriminator)
        # The inference model (state-dict keys networks.*, as before).
        self.networks = LPDModel(identity_encoder, pose_encoder, generator)
        self.projection_discriminator = discriminator
        if num_videos is not None:
            discriminator.set_num_videos(num_videos)
        self._make_stage(*_perceptual_losses(vgg_weights, face_vgg_weights, perceptual_layer_weights), face_crop,
                         augment_pose, pose_augmentation)
        if face_vgg_weights is None and self.wants("face_perceptual"):
            log.warning("LPD: no face-VGG weights (face_vgg_weights), so the loss has no VGGFace term")
        self.identity_match = EmbeddingMatchLoss()

    # -- the adversarial hooks -----------------------------------------------------------------------------------

    def run_generator(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if (batch["video_index"] < 0).any():
            raise ValueError("a training batch holds a video outside the discriminator's columns (video_index -1)")
        pose_frame, target, target_mask = self.pose_inputs(batch)
        identity = self.networks["identity_encoder"](batch["references"])
        out = self.networks["generator"](identity, self.networks["pose_encoder"](pose_frame))
        return {"prediction": out["image"], "mask": out["mask"], "target": target, "target_mask": target_mask,
                "identity": identity}

    def judge(self, image: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.projection_discriminator(image, video_index=batch["video_index"])

    def judge_for_generator(self, image: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.projection_discriminator(image, column=self.fixed_video_column(batch))

    def generator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                         real: Any = None) -> dict[str, Tensor]:
        terms = super().generator_losses(batch, outputs, real)
        if self.wants("identity_match"):
            self.initialise_video_columns(batch["video_index"], outputs["identity"])
            column = self.projection_discriminator.video_embeddings(batch["video_index"])
            terms["identity_match"] = self.identity_match(outputs["identity"], column)
        return terms

    # -- inference -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct_batch(self, batch: Mapping[str, Any]) -> Tensor:
        """``batch["driving"]`` re-synthesised from its own pose and the identity of ``batch["references"]``."""
        return self.reenact(batch["references"], batch["driving"])

    @torch.no_grad()
    def reenact(self, references: Tensor, driving: Tensor, chunk: int = 16) -> Tensor:
        """Feed-forward reenactment: :meth:`LPDModel.reenact` with the inference networks (the EMA when kept), in
        eval mode."""
        with self.evaluating() as model:
            return model.reenact(references, driving, chunk)


def _check_sizes(identity_encoder: nn.Module, pose_encoder: nn.Module, generator: nn.Module,
                 discriminator: nn.Module) -> None:
    """Refuses networks whose embedding sizes do not fit together, naming the settings to change."""
    sizes = {
        "identity_encoder.embedding_dim": getattr(identity_encoder, "embedding_dim", None),
        "generator.identity_dim": getattr(generator, "identity_dim", None),
        "discriminator.embedding_dim": getattr(discriminator, "embedding_dim", None),
    }
    if len({size for size in sizes.values() if size is not None}) > 1:
        raise ValueError(f"LPD needs one identity embedding size (the identity match compares it with D's columns); "
                         f"got {sizes}")
    pose = (getattr(pose_encoder, "embedding_dim", None), getattr(generator, "pose_dim", None))
    if None not in pose and pose[0] != pose[1]:
        raise ValueError(f"pose_encoder.embedding_dim {pose[0]} differs from generator.pose_dim {pose[1]}")


PersonalisedLPDGenerator = LPDPersonGenerator  # its name before the inference models moved to talkinghead.networks


class LPDFineTuneModule(PersonFineTuning, _LPDStage):
    """LPD fine-tuning to one new person (Burkov et al. 2020, section 3.3).

    At the start of fit the identity embedding is set to the mean identity-encoder output over the person's T frames
    (``PersonDataModule.person_frames()``) and the discriminator's column to w_0 + that embedding; then the generator
    with the (trainable) embedding, and the discriminator, are trained on the person's frames. Both encoders are
    frozen and stay in eval mode (batch-norm statistics fixed): the pose encoder still reads each driving frame.

    Args:
        init_from: the meta-learning checkpoint (:class:`LPDModule`, from ``talkinghead fit``).
        meta_config: the meta module's config (JSON), stored by this module so its checkpoints rebuild without
            ``init_from``. Leave it unset.
        loss_weights: weight per term (the meta-learning weights without the identity match).
        augment_pose: augment the pose frame in training.
        pose_augmentation: the augmentation's ranges (None: the defaults).
        generator_optimizer: optimizer for the generator and the identity embedding (default RAdam 5e-4).
        discriminator_optimizer: optimizer for D and its column (default RAdam 8e-4).
        discriminator_steps: D updates per G update.
        ema_decay: decay of an EMA of the generator and the identity embedding used for inference; None for none.
        nonfinite_patience: consecutive non-finite steps skipped before the run stops (AdversarialModule).
        channels_last: conv weights and activations channels-last in training; None: on the CPU only
            (AdversarialModule).

    The losses reuse the meta checkpoint's feature networks and face crop.
    """

    bundle_kind = "lpd-person"  # what `talkinghead export` calls its inference model (talkinghead.inference.KINDS)

    stage_name = "LPD fine-tuning"
    frozen_networks = ("identity_encoder", "pose_encoder")

    def __init__(
        self,
        init_from: str | None = None,
        meta_config: str | None = None,
        loss_weights: dict[str, float] | None = None,
        augment_pose: bool = True,
        pose_augmentation: PoseAugmentation | None = None,
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        discriminator_steps: int = 1,
        ema_decay: float | None = 0.999,
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
            default_lr=(5e-4, 8e-4),
            default_optimizer=torch.optim.RAdam,
            default_loss_weights=PAPER_FINETUNE_LOSS_WEIGHTS,
        )
        self.save_hyperparameters(ignore=None if built_by_cli() else ["pose_augmentation"])
        meta, config = load_meta_module(LPDModule, init_from, meta_config)
        self.hparams["meta_config"] = config
        # Frozen, and always in eval mode: batch-norm statistics must not drift towards the person's frames.
        self.identity_encoder = meta.networks["identity_encoder"]
        self.pose_encoder = meta.networks["pose_encoder"]
        generator, discriminator = meta.networks["generator"], meta.projection_discriminator
        self.personalise(PersonalisedLPDGenerator(generator, generator.identity_dim), discriminator,
                         discriminator.embedding_dim)
        self._make_stage(meta.perceptual, meta.face_perceptual, meta.face_crop, augment_pose, pose_augmentation)

    # -- the person ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def initialise_person(self, frames: Tensor) -> Tensor:
        """Sets the identity embedding to the mean over the person's frames, and D's column to w_0 + it.

        Args:
            frames: (t, 3, s, s) or (1, t, 3, s, s) frames of the person in [0, 1].

        Returns:
            the identity embedding (1, d).
        """
        frames = frames.reshape(1, -1, *frames.shape[-3:]).to(self.device)
        identity = self.identity_encoder(frames)  # always in eval mode
        self.person_generator.identity.copy_(identity)
        self.set_person_column(identity)
        return identity

    def initialise_from(self, person: Mapping[str, Any]) -> None:
        self.initialise_person(person["references"])

    # -- the adversarial hooks -----------------------------------------------------------------------------------

    def run_generator(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        pose_frame, target, target_mask = self.pose_inputs(batch)
        with torch.no_grad():
            pose = self.pose_encoder(pose_frame)
        out = self.person_generator(pose)
        return {"prediction": out["image"], "mask": out["mask"], "target": target, "target_mask": target_mask}

    def judge(self, image: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.person_discriminator(image)

    # -- inference -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct_batch(self, batch: Mapping[str, Any]) -> Tensor:
        """The person in the pose of ``batch["driving"]``: (b, 3, s, s) in [0, 1]."""
        return self.reenact(batch["driving"])

    @torch.no_grad()
    def reenact(self, driving: Tensor, chunk: int = 16) -> Tensor:
        """Cross-person reenactment: the fine-tuned person in the pose of each driving frame (anyone's).

        Args:
            driving: (t, 3, s, s) frames in [0, 1] at the trained size.
            chunk: frames synthesised per forward pass.

        Returns:
            (t, 3, s, s) in [0, 1]: RGB x mask.
        """
        with self.evaluating() as generator:  # the pose encoder is always in eval mode
            return LPDPersonModel(self.pose_encoder, generator).reenact(driving, chunk)

    def inference_model(self) -> LPDPersonModel:
        """The person's model for export: the frozen pose encoder and the person's generator (its EMA when kept)."""
        return LPDPersonModel(self.pose_encoder, self.inference_networks())
