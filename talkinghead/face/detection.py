"""Batched face detection with MTCNN (Zhang et al. 2016) from facenet-pytorch, on CPU or GPU.

MTCNN's weights ship inside the facenet-pytorch wheel, so nothing is downloaded. facenet-pytorch is an optional
dependency (``pip install "talkinghead[face]"``) imported only when a :class:`FaceDetector` is built.

Pixel coordinates: facenet-pytorch keeps the original MATLAB MTCNN's 1-based pixel numbering (its own cropping
code reads box corner x1 as array column x1 - 1). :class:`FaceDetector` subtracts 1 from its boxes and points, so
they use the package's convention (pixel centres at 0 .. S-1, :func:`talkinghead.geometry.normalized_to_pixels`).
A left-right mirror test agrees: raw facenet-pytorch points sit 1.6 px (the astronaut test image) and 3.5 px (32
synthetic heads) to the right of where detection in the mirrored image puts them, i.e. an offset of +0.8 to
+1.8 px, half the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Faces", "FaceDetector"]

_INSTALL_HINT = 'pip install "talkinghead[face]"'


@dataclass(frozen=True, eq=False)
class Faces:
    """The faces found in one frame, highest score first.

    Attributes:
        boxes: (n, 4) float32 x1, y1, x2, y2 in pixels (package convention, pixel centres at integers). MTCNN's
            boxes are square-ish and loose: brows to chin, often some forehead.
        scores: (n,) float32 MTCNN's final (O-Net) face probabilities, above the last threshold.
        points: (n, 5, 2) float32 x, y of MTCNN's five landmarks: the subject's right eye (image left), left eye,
            nose tip, right and left mouth corners.
    """

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty() -> Faces:
        """No face: arrays with zero rows and the usual trailing shapes."""
        return Faces(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


class FaceDetector:
    """MTCNN face detection over batches of equal-size frames (facenet-pytorch's ``MTCNN(keep_all=True)``).

    Args:
        device: where the three MTCNN networks run ("cpu", "cuda", a torch.device).
        min_face_size: smallest face side, in pixels, the image pyramid looks for (smaller is slower).
        thresholds: P-Net, R-Net and O-Net face-probability thresholds (MTCNN's defaults).
        batch_size: frames per MTCNN call; bounds memory (the pyramid of every frame of a batch is held at once).

    Raises:
        ImportError: facenet-pytorch is not installed.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        min_face_size: int = 40,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        batch_size: int = 16,
    ) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as error:
            raise ImportError(f"FaceDetector needs facenet-pytorch: {_INSTALL_HINT}") from error
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        # select_largest=False: we sort by score ourselves; keep_all: every face, not only the first.
        self._mtcnn = MTCNN(
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            keep_all=True,
            select_largest=False,
            device=self.device,
        ).eval()

    def detect(self, frames: np.ndarray) -> list[Faces]:
        """Finds the faces in every frame.

        Args:
            frames: (t, h, w, 3) uint8 RGB, all the same size (MTCNN batches only equal-size images); a single
                (h, w, 3) frame is taken as t = 1.

        Returns:
            t :class:`Faces`, one per frame, each with n >= 0 faces (empty arrays, never None, when n = 0).
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (t, h, w, 3) RGB, got {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        faces: list[Faces] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = np.ascontiguousarray(frames[start : start + self.batch_size])
            boxes, scores, points = self._mtcnn.detect(chunk, landmarks=True)
            faces.extend(_faces(b, s, p) for b, s, p in zip(boxes, scores, points))
        return faces


def _faces(boxes: object, scores: object, points: object) -> Faces:
    """One frame's :class:`Faces` from facenet-pytorch's per-frame entries (None or [None] when no face)."""
    if boxes is None:
        return Faces.empty()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - 1.0  # 1-based (MATLAB MTCNN) -> ours
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) - 1.0
    order = np.argsort(-scores, kind="stable")
    return Faces(np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order]),
                 np.ascontiguousarray(points[order]))
