"""Evaluation metrics as DDP-syncing torchmetrics ``Metric`` objects (sums and counts, ``dist_reduce_fx="sum"``).

- Pixels / structure (:mod:`~talkinghead.metrics.image`): :class:`L1`, :class:`PSNR`, :class:`SSIM`, :class:`MSSSIM`.
- Face geometry (:mod:`~talkinghead.metrics.face`): :class:`AKD` with :class:`LandmarkExtractor`, :class:`PoseError`
  with :func:`pose_from_landmarks`.
- Identity (:mod:`~talkinghead.metrics.identity`): :class:`AED`, :class:`CSIM` over a :class:`FaceEmbedder`
  (:class:`DlibFaceEmbedder` offline; :class:`FacenetEmbedder` with local weights only).
- Pretrained ImageNet networks (:mod:`~talkinghead.metrics.pretrained`): :class:`FID` (torchvision InceptionV3
  features), :class:`LPIPS`; both refuse with :class:`MissingWeightsError` when the weights are absent.
  :func:`metric_availability` says which metrics can be computed on this machine.

Images are float (b, 3, h, w) in [0, 1] throughout.
"""

from talkinghead.metrics.face import AKD, OUTER_EYE_CORNERS, LandmarkExtractor, PoseError, pose_from_landmarks
from talkinghead.metrics.identity import (
    AED,
    CSIM,
    FACENET_WEIGHTS_HINT,
    DlibFaceEmbedder,
    FaceEmbedder,
    FacenetEmbedder,
)
from talkinghead.metrics.image import (
    L1,
    MSSSIM,
    MSSSIM_BETAS,
    PSNR,
    PSNR_CAP_DB,
    SMALL_MSSSIM_SCALES,
    SSIM,
    msssim_for_size,
    msssim_min_size,
    psnr_per_image,
)
from talkinghead.metrics.pretrained import (
    FID,
    INCEPTION_V3_FILE,
    LPIPS,
    LPIPS_BACKBONE_FILES,
    InceptionV3Features,
    MissingWeightsError,
    hub_checkpoint,
    metric_availability,
)

__all__ = [
    "L1",
    "PSNR",
    "SSIM",
    "MSSSIM",
    "MSSSIM_BETAS",
    "PSNR_CAP_DB",
    "msssim_min_size",
    "psnr_per_image",
    "msssim_for_size",
    "SMALL_MSSSIM_SCALES",
    "AKD",
    "OUTER_EYE_CORNERS",
    "LandmarkExtractor",
    "PoseError",
    "pose_from_landmarks",
    "AED",
    "CSIM",
    "FaceEmbedder",
    "DlibFaceEmbedder",
    "FacenetEmbedder",
    "FACENET_WEIGHTS_HINT",
    "FID",
    "LPIPS",
    "InceptionV3Features",
    "MissingWeightsError",
    "INCEPTION_V3_FILE",
    "LPIPS_BACKBONE_FILES",
    "hub_checkpoint",
    "metric_availability",
]
