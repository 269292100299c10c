"""Networks: pure nn.Modules, one class per paper component (no Lightning)."""

from talkinghead.networks.osfv import (
    AppearanceFeatureExtractor,
    CanonicalKeypointDetector,
    HeadPoseExpressionEstimator,
    MotionFieldEstimator,
    OSFVGenerator,
    SPADEGenerator,
)

__all__ = [
    "AppearanceFeatureExtractor",
    "CanonicalKeypointDetector",
    "HeadPoseExpressionEstimator",
    "MotionFieldEstimator",
    "OSFVGenerator",
    "SPADEGenerator",
]
