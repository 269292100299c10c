"""Face-geometry metrics: average keypoint distance (AKD) and head-pose error, with their landmark extraction.

AKD (FOMM, Siarohin et al. 2019, and the talking-head papers since) is the mean distance between the 68 landmarks
found on the generated frame and those of the ground truth. On the synthetic shards the ground-truth landmarks are
stored exactly, so only the prediction goes through :class:`LandmarkExtractor` (MTCNN box + dlib 68 points).
A frame where no face is found has NaN landmarks; :class:`AKD` and :class:`PoseError` skip such rows and count them
as misses (reported by ``compute()``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from talkinghead.metrics._images import to_uint8_frames

__all__ = ["AKD", "PoseError", "LandmarkExtractor", "pose_from_landmarks", "OUTER_EYE_CORNERS"]

# iBUG-68 outer eye corners (subject's right eye's outer corner, left eye's outer corner): inter-ocular distance.
OUTER_EYE_CORNERS = (36, 45)


class LandmarkExtractor:
    """68 iBUG landmarks of the most confident face per image: MTCNN (:class:`talkinghead.face.FaceDetector`) then
    dlib (:class:`talkinghead.face.LandmarkPredictor`). Works offline (both models ship inside their wheels).

    Args:
        device: where MTCNN runs.
        min_face_size: smallest face side, in pixels, MTCNN looks for.
    """

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = 20) -> None:
        from talkinghead.face import FaceDetector, LandmarkPredictor

        self.detector = FaceDetector(device=device, min_face_size=min_face_size)
        self.predictor = LandmarkPredictor()

    def __call__(self, images: Tensor | np.ndarray) -> Tensor:
        """Landmarks of a batch.

        Args:
            images: (b, 3, h, w) float RGB in [0, 1], or (b, h, w, 3) uint8 RGB.

        Returns:
            (b, 68, 2) float32 x, y pixels (pixel centres at integers); all NaN for an image without a face.
        """
        frames = to_uint8_frames(images)
        faces = self.detector.detect(frames)
        boxes = np.stack([found.boxes[int(np.argmax(found.scores))] if len(found) else np.full(4, np.nan, np.float32)
                          for found in faces]) if len(frames) else np.zeros((0, 4), np.float32)
        return torch.from_numpy(self.predictor.predict_many(frames, boxes))


class AKD(Metric):
    """Average keypoint distance between predicted and ground-truth 68-point landmarks, in pixels and normalised.

    ``compute()`` returns a dict: ``akd`` (mean point distance in pixels over all points of the frames where both
    sets are finite), ``akd_normalized`` (per frame, the mean distance divided by the target's inter-ocular
    distance — outer eye corners 36 and 45 — then averaged), ``misses`` (frames skipped because a set had NaN: no
    face found) and ``miss_rate`` (misses / all frames).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("distance_sum", "normalized_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("frames", "misses"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_landmarks: Tensor, target_landmarks: Tensor) -> None:
        """Adds a batch.

        Args:
            pred_landmarks: (b, 68, 2) landmarks of the generated frames in pixels, NaN rows where no face was found.
            target_landmarks: (b, 68, 2) ground-truth landmarks in the same pixel coordinates.
        """
        if pred_landmarks.shape != target_landmarks.shape or pred_landmarks.dim() != 3 or pred_landmarks.shape[-1] != 2:
            raise ValueError(f"expected two (b, k, 2) landmark sets of one shape, got {tuple(pred_landmarks.shape)} "
                             f"and {tuple(target_landmarks.shape)}")
        pred, target = pred_landmarks.detach().double(), target_landmarks.detach().double()
        valid = pred.isfinite().flatten(1).all(1) & target.isfinite().flatten(1).all(1)
        distance = (pred[valid] - target[valid]).norm(dim=-1).mean(-1)  # (n,)
        eyes = target[valid][:, list(OUTER_EYE_CORNERS)]
        inter_ocular = (eyes[:, 0] - eyes[:, 1]).norm(dim=-1)
        self.distance_sum += distance.sum()
        self.normalized_sum += (distance / inter_ocular).sum()
        self.frames += valid.numel()
        self.misses += (~valid).sum()

    def compute(self) -> dict[str, Tensor]:
        """{"akd", "akd_normalized", "misses", "miss_rate"} (NaN means when no frame counted)."""
        found = self.frames - self.misses
        nan = torch.tensor(float("nan"))
        return {
            "akd": (self.distance_sum / found).float() if found > 0 else nan,
            "akd_normalized": (self.normalized_sum / found).float() if found > 0 else nan,
            "misses": self.misses.clone(),
            "miss_rate": (self.misses / self.frames).float() if self.frames > 0 else nan,
        }


def pose_from_landmarks(landmarks: Tensor, image_size: int) -> Tensor:
    """Yaw, pitch, roll of frames from their 68 landmarks (:func:`talkinghead.face.head_pose_from_landmarks`).

    Args:
        landmarks: (b, 68, 2) pixels of an S x S frame; NaN rows give NaN poses.
        image_size: S in pixels.

    Returns:
        (b, 3) yaw, pitch, roll in degrees, in the synthetic shards' convention.
    """
    from talkinghead.face import head_pose_from_landmarks

    return head_pose_from_landmarks(landmarks, image_size)[:, :3]


class PoseError(Metric):
    """Mean absolute head-pose error in degrees, per angle (yaw, pitch, roll) and over all three.

    Differences are wrapped to [-180, 180). ``compute()`` returns {"yaw", "pitch", "roll", "mean", "misses",
    "miss_rate"}; a row with a NaN angle on either side (no face) is skipped and counted as a miss.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("error_sum", default=torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("frames", "misses"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_pose: Tensor, target_pose: Tensor) -> None:
        """Adds a batch.

        Args:
            pred_pose: (b, 3) yaw, pitch, roll in degrees of the generated frames (e.g. :func:`pose_from_landmarks`);
                wider rows (b, 6) pose labels are cut to their first 3 columns.
            target_pose: (b, 3) the wanted angles (driver's pose, requested free-view angles or stored labels).
        """
        pred, target = pred_pose.detach().double()[:, :3], target_pose.detach().double()[:, :3]
        if pred.shape != target.shape or pred.dim() != 2 or pred.shape[-1] != 3:
            raise ValueError(f"expected two (b, 3) pose batches, got {tuple(pred_pose.shape)} and "
                             f"{tuple(target_pose.shape)}")
        valid = pred.isfinite().all(1) & target.isfinite().all(1)
        difference = torch.remainder(pred[valid] - target[valid] + 180.0, 360.0) - 180.0
        self.error_sum += difference.abs().sum(0)
        self.frames += valid.numel()
        self.misses += (~valid).sum()

    def compute(self) -> dict[str, Tensor]:
        """{"yaw", "pitch", "roll", "mean", "misses", "miss_rate"} (errors in degrees, NaN before any frame)."""
        found = self.frames - self.misses
        errors = (self.error_sum / found).float() if found > 0 else torch.full((3,), float("nan"))
        return {
            "yaw": errors[0], "pitch": errors[1], "roll": errors[2], "mean": errors.mean(),
            "misses": self.misses.clone(),
            "miss_rate": (self.misses / self.frames).float() if self.frames > 0 else torch.tensor(float("nan")),
        }
