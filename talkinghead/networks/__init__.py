"""Networks: pure nn.Modules, one class per paper component (no Lightning)."""

from talkinghead.networks.discriminators import (
    MultiScalePatchDiscriminator,
    PatchDiscriminator,
    ProjectionDiscriminator,
)
from talkinghead.networks.fsth import Embedder, FSTHGenerator
from talkinghead.networks.lpd import IdentityEncoder, LPDGenerator, PoseEncoder
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
    "Embedder",
    "FSTHGenerator",
    "HeadPoseExpressionEstimator",
    "IdentityEncoder",
    "LPDGenerator",
    "MotionFieldEstimator",
    "MultiScalePatchDiscriminator",
    "OSFVGenerator",
    "PatchDiscriminator",
    "PoseEncoder",
    "ProjectionDiscriminator",
    "SPADEGenerator",
]
