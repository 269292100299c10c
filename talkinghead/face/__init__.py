"""Face detection, 68 landmarks and head pose for real-video preprocessing.

:class:`FaceDetector` (MTCNN, facenet-pytorch) and :class:`LandmarkPredictor` (dlib) import their optional
dependencies only when built (``pip install "talkinghead[face]"``), so ``import talkinghead.face`` and the pose fit
work without them. The pose fit labels real frames in the synthetic shards' pose convention.
"""

from talkinghead.face.detection import FaceDetector, Faces
from talkinghead.face.landmarks68 import LandmarkPredictor
from talkinghead.face.pose import (
    LANDMARK_WEIGHTS,
    WeakPerspectiveFit,
    fit_weak_perspective,
    generic_face_3d,
    head_pose_from_landmarks,
)

__all__ = [
    "Faces",
    "FaceDetector",
    "LandmarkPredictor",
    "GENERIC_FACE_3D",
    "LANDMARK_WEIGHTS",
    "WeakPerspectiveFit",
    "generic_face_3d",
    "fit_weak_perspective",
    "head_pose_from_landmarks",
]


def __getattr__(name: str):
    # GENERIC_FACE_3D is built on first use (see talkinghead.face.pose.generic_face_3d), not at import.
    if name == "GENERIC_FACE_3D":
        return generic_face_3d()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
