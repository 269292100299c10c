"""OSFV: one-shot free-view neural talking-head synthesis (face-vid2vid; Wang, Mallya, Liu, CVPR 2021).

The source image gives an appearance volume f_s (F) and canonical keypoints x_c (L); the head-pose and expression
estimator (H/Δ) gives each image a rotation R, translation t and expression deltas δ, and the keypoints of an
image are x = R x_c + t + δ, always with the SOURCE's x_c. The motion field estimator (M) turns the K first-order
flows w_k(p) = R_s R_d^-1 (p - x_d,k) + x_s,k (plus the identity flow) into one 3D flow and an occlusion mask, and
the generator (G) warps f_s with it and decodes the driving frame. At inference a user rotation R_u and translation
t_u re-pose the head: R_d <- R_u R_d, t_d <- t_u + t_d (free view).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from talkinghead.errors import ConfigError
from talkinghead.geometry import rotation_matrix
from talkinghead.lightning.adversarial import AdversarialModule, built_by_cli
from talkinghead.losses import (
    DeformationPriorLoss,
    DiscriminatorHingeLoss,
    EquivarianceLoss,
    FeatureMatchingLoss,
    GeneratorHingeLoss,
    HeadPoseLoss,
    KeypointPriorLoss,
    PerceptualPyramidLoss,
    in_memory_order,
)
from talkinghead.metrics import psnr_per_image
from talkinghead.networks.osfv_model import OSFVModel, compose_driving_pose

__all__ = ["OSFVModule", "compose_driving_pose", "PAPER_LOSS_WEIGHTS"]

# Section 3.3 of the paper: perceptual 10, GAN 1 (+ feature matching 10), equivariance 20, keypoint prior 10,
# head pose 20, deformation prior 5; the discriminator's hinge loss has weight 1.
PAPER_LOSS_WEIGHTS: dict[str, float] = {
    "perceptual": 10.0,
    "gan": 1.0,
    "feature_matching": 10.0,
    "equivariance": 20.0,
    "keypoint_prior": 10.0,
    "head_pose": 20.0,
    "deformation_prior": 5.0,
    "discriminator": 1.0,
    # Not in the paper: pixel L1 to the driving frame, 0 (off) by default. Without downloadable VGG19 weights the
    # perceptual loss runs on random-init features, which teach a small generator slowly; tiny configs turn it on.
    "l1": 0.0,
}


class OSFVModule(AdversarialModule):
    """OSFV training and inference (face-vid2vid, Wang et al. CVPR 2021, section 3).

    Args:
        appearance, canonical_keypoints, head_pose, motion, generator: F, L, H/Δ, M and G, which make the
            inference model :class:`~talkinghead.networks.osfv_model.OSFVModel` (its docstring has their contracts).
        discriminator: D, image -> list over scales of {"features", "logits"}.
        loss_weights: weight per term (the paper's by default); 0 disables a term.
        vgg_weights: VGG19 weights for the perceptual loss: a torchvision enum name ("IMAGENET1K_V1", from the torch
            hub cache) or a local .pth file; None uses random-init features and says so once.
        face_vgg_weights: local VGG-Face weights for the extra face perceptual term; None leaves it out.
        hopenet_weights: local Hopenet weights for head-pose pseudo-labels; None uses the shards' pose labels.
        sigma_affine: equivariance loss, scale of the random affine part.
        sigma_tps: equivariance loss, scale of the random thin-plate-spline part.
        perceptual_layer_weights: weights of VGG19 relu1_1 ... relu5_1 in the perceptual loss (the paper's);
            fewer entries use only the first layers.
        perceptual_scales: relative image sizes of the perceptual pyramid (256, 128, 64, 32 px at 256).
        generator_optimizer: optimizer for F, L, H/Δ, M and G (default Adam 2e-4, betas 0.5/0.999).
        discriminator_optimizer: optimizer for D (default Adam 2e-4, betas 0.5/0.999).
        ema_decay: decay of an EMA of the generator side used for inference; None for none.
        nonfinite_patience: consecutive non-finite steps skipped before the run stops (AdversarialModule).
        channels_last: conv weights and activations channels-last in training; None: on the CPU only
            (AdversarialModule).
        flow_rotation_from_labels: not in the paper, for short runs on labelled (synthetic) data: in training the
            first-order flows use the rotations of the batch's stored pose labels (rows without labels keep H's),
            while H still learns them through the head-pose loss; inference always uses H. Early H is wrong by
            10-15 degrees of yaw, so the rigid keypoint flows mislead and M learns to route 95% of the volume
            through the identity (background) flow, after which the motion path hardly learns; with exact
            rotations M keeps using the keypoint flows (benchmarks/osfv_diagnose.py --teacher-pose).
    """

    bundle_kind = "osfv"  # what `talkinghead export` calls its inference model (talkinghead.inference.KINDS)
    discriminator_terms = ("gan", "feature_matching")

    def __init__(
        self,
        appearance: nn.Module,
        canonical_keypoints: nn.Module,
        head_pose: nn.Module,
        motion: nn.Module,
        generator: nn.Module,
        discriminator: nn.Module,
        loss_weights: dict[str, float] | None = None,
        vgg_weights: str | None = None,
        face_vgg_weights: str | None = None,
        hopenet_weights: str | None = None,
        sigma_affine: float = 0.05,
        sigma_tps: float = 0.005,
        perceptual_layer_weights: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
        perceptual_scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125),
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        ema_decay: float | None = None,
        nonfinite_patience: int = 10,
        channels_last: bool | None = None,
        flow_rotation_from_labels: bool = False,
    ) -> None:
        super().__init__(
            loss_weights=loss_weights,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
            ema_decay=ema_decay,
            nonfinite_patience=nonfinite_patience,
            channels_last=channels_last,
            default_loss_weights=PAPER_LOSS_WEIGHTS,
        )
        networks = ["appearance", "canonical_keypoints", "head_pose", "motion", "generator", "discriminator"]
        self.save_hyperparameters(ignore=None if built_by_cli() else networks)
        # The generator side is the inference model itself (its EMA copy is one too); the state-dict keys
        # (networks.appearance.*, ...) are those of every earlier checkpoint.
        self.networks = OSFVModel(appearance, canonical_keypoints, head_pose, motion, generator)
        self.patch_discriminator = discriminator

        from talkinghead.losses.head_pose import load_hopenet
        from talkinghead.networks.vgg import load_face_vgg, load_vgg19

        self.perceptual = PerceptualPyramidLoss(load_vgg19(vgg_weights), perceptual_layer_weights, perceptual_scales)
        self.face_perceptual = None
        if face_vgg_weights is not None:
            from talkinghead.losses import FaceVGGLoss

            self.face_perceptual = FaceVGGLoss(load_face_vgg(face_vgg_weights))
        self.generator_hinge = GeneratorHingeLoss()
        self.discriminator_hinge = DiscriminatorHingeLoss()
        self.feature_matching = FeatureMatchingLoss()
        self.equivariance = EquivarianceLoss(sigma_affine=sigma_affine, sigma_tps=sigma_tps)
        self.keypoint_prior = KeypointPriorLoss()
        self.head_pose_loss = HeadPoseLoss(None if hopenet_weights is None else load_hopenet(hopenet_weights))
        self.deformation_prior = DeformationPriorLoss()
        self.flow_rotation_from_labels = flow_rotation_from_labels

    # -- the adversarial hooks -----------------------------------------------------------------------------------

    def _fits(self, size: int) -> bool:
        probe = torch.zeros(1, 3, size, size, device=self.device)
        try:
            with torch.no_grad():
                return self.reconstruct(probe, probe).shape[-2:] == (size, size)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:  # the sizes of two tensors that should meet do not
            if "size" in str(error) or "shape" in str(error):
                return False
            raise

    def check_image_size(self, size: int) -> None:
        """Refuses (ConfigError) an image size the networks' down- and up-sampling cannot take, naming sizes that
        work; a dry run of the inference path on one zero image, so any configuration is checked as it is."""
        if self._fits(size):
            return
        near = sorted({m * max(1, size // m + k) for m in (8, 16, 32, 64) for k in (0, 1)}, key=lambda n: abs(n - size))
        working = [n for n in near[:6] if n != size and self._fits(n)][:2]
        raise ConfigError(f"data image_size {size} does not fit this OSFV configuration (its down- and up-sampling "
                          f"do not meet); use e.g. {' or '.join(map(str, working)) or 'a multiple of 64'}")

    def generator_side(self) -> nn.Module:
        return self.networks

    def discriminator(self) -> nn.Module:
        return self.patch_discriminator

    def run_generator(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        model = self.networks
        source, driving = batch["source"], batch["driving"]
        source_pose, driving_pose = model.estimate_pose(source), model.estimate_pose(driving)
        if self.flow_rotation_from_labels and self.training:
            source_pose = with_labelled_rotation(source_pose, batch.get("source_pose"))
            driving_pose = with_labelled_rotation(driving_pose, batch.get("driving_pose"))
        state = model.encode_source(source, pose=source_pose)
        driving_kp = model.keypoints(state.canonical, driving_pose)
        outputs = model.synthesize(state.feature, state.keypoints, driving_kp, source_pose["rotation"],
                                   driving_pose["rotation"])
        return {**outputs, "canonical": state.canonical, "driving_kp": driving_kp, "driving_pose": driving_pose}

    def judge_real(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """D(driving) once per batch: the feature-matching targets (read detached) and the first D step's real
        logits (D's weights do not change in between). With spectral norm in D, one D pass fewer also means one
        power iteration fewer per batch (3 instead of 4): the same sigma estimates once they have converged."""
        return self.patch_discriminator(batch["driving"])

    def generator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                         real: Any = None) -> dict[str, Tensor]:
        driving, prediction = batch["driving"], outputs["prediction"]
        pose = outputs["driving_pose"]
        terms: dict[str, Tensor] = {}
        if self.wants("l1"):
            terms["l1"] = F.l1_loss(*in_memory_order(prediction, driving))
        if self.wants("perceptual"):
            terms["perceptual"] = self.perceptual(prediction, driving)
            if self.face_perceptual is not None:
                terms["perceptual"] = terms["perceptual"] + self.face_perceptual(prediction, driving)
        if self.wants("gan") or self.wants("feature_matching"):
            fake = self.patch_discriminator(prediction)
            terms["gan"] = self.generator_hinge(fake)
            real = self.patch_discriminator(driving) if real is None else real
            terms["feature_matching"] = self.feature_matching(real, fake)  # the real features enter detached
        if self.wants("equivariance"):
            canonical = outputs["canonical"]

            def detect(image: Tensor) -> Tensor:
                # The warped driving frame is posed against the same (source) canonical keypoints.
                return self.networks.keypoints(canonical, self.networks.estimate_pose(image))

            terms["equivariance"] = self.equivariance(driving, outputs["driving_kp"], detect)
        if self.wants("keypoint_prior"):
            terms["keypoint_prior"] = self.keypoint_prior(outputs["driving_kp"])
        if self.wants("head_pose"):
            angles = torch.stack([pose["yaw"], pose["pitch"], pose["roll"]], dim=-1)
            terms["head_pose"] = self.head_pose_loss(angles, driving, batch.get("driving_pose"))
        if self.wants("deformation_prior"):
            terms["deformation_prior"] = self.deformation_prior(pose["expression"])
        return {name: value for name, value in terms.items() if self.wants(name)}

    def discriminator_losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Any],
                             real: Any = None) -> dict[str, Tensor]:
        real = self.patch_discriminator(batch["driving"]) if real is None else real
        fake = self.patch_discriminator(outputs["prediction"])
        return {"discriminator": self.discriminator_hinge(real, fake)}

    # -- evaluation and inference --------------------------------------------------------------------------------

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        prediction = self.reconstruct(batch["source"], batch["driving"])
        driving, source = batch["driving"], batch["source"]
        size = driving.shape[0]
        self.log("val/l1", F.l1_loss(prediction, driving), batch_size=size, sync_dist=True, prog_bar=True)
        self.log("val/psnr", psnr(prediction, driving), batch_size=size, sync_dist=True)
        self.log("val/copy_source/l1", F.l1_loss(source, driving), batch_size=size, sync_dist=True)
        self.log("val/copy_source/psnr", psnr(source, driving), batch_size=size, sync_dist=True)

    def reconstruct_batch(self, batch: Mapping[str, Any]) -> Tensor:
        """The callbacks' view of the model: ``reconstruct(batch["source"], batch["driving"])``."""
        return self.reconstruct(batch["source"], batch["driving"])

    @torch.no_grad()
    def reconstruct(self, source: Tensor, driving: Tensor) -> Tensor:
        """:meth:`OSFVModel.reconstruct` with the inference networks (the EMA when kept), in eval mode."""
        with self.evaluating() as model:
            return model.reconstruct(source, driving)

    @torch.no_grad()
    def animate(self, source: Tensor, driving_frames: Tensor, relative: bool = True, yaw: float = 0.0,
                pitch: float = 0.0, roll: float = 0.0, translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
                chunk: int = 16) -> Tensor:
        """:meth:`OSFVModel.animate` (one source, a driving video, free view) with the inference networks."""
        with self.evaluating() as model:
            return model.animate(source, driving_frames, relative, yaw, pitch, roll, translation, chunk)


def with_labelled_rotation(pose: dict[str, Tensor], labels: Tensor | None) -> dict[str, Tensor]:
    """``pose`` with its rotation replaced by that of the stored labels (b, 6: yaw, pitch, roll, ...) on the rows
    where they are finite; the estimated yaw, pitch and roll (which the head-pose loss reads) stay."""
    if labels is None:
        return pose
    labels = labels.to(pose["rotation"].dtype)
    known = torch.isfinite(labels[:, :3]).all(-1)
    if not bool(known.any()):
        return pose
    angles = torch.where(known[:, None], labels[:, :3], torch.zeros_like(labels[:, :3]))
    rotation = rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    return {**pose, "rotation": torch.where(known[:, None, None], rotation, pose["rotation"])}


def psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean PSNR in dB of images in [0, 1], per image then averaged, capped at 100 dB for identical images."""
    return psnr_per_image(prediction, target).mean()
