"""Loss terms: one nn.Module per paper term, tensors in, scalar out; their weights live in the LightningModules."""

from talkinghead.losses.adversarial import DiscriminatorHingeLoss, FeatureMatchingLoss, GeneratorHingeLoss
from talkinghead.losses.embedding import EmbeddingMatchLoss
from talkinghead.losses.equivariance import EquivarianceLoss, WarpTransform
from talkinghead.losses.head_pose import HeadPoseLoss, Hopenet, load_hopenet
from talkinghead.losses.layout import in_memory_order
from talkinghead.losses.mask import DiceLoss
from talkinghead.losses.perceptual import FaceVGGLoss, PerceptualPyramidLoss
from talkinghead.losses.priors import DeformationPriorLoss, KeypointPriorLoss

__all__ = [
    "PerceptualPyramidLoss",
    "FaceVGGLoss",
    "GeneratorHingeLoss",
    "DiscriminatorHingeLoss",
    "FeatureMatchingLoss",
    "EmbeddingMatchLoss",
    "DiceLoss",
    "EquivarianceLoss",
    "WarpTransform",
    "KeypointPriorLoss",
    "DeformationPriorLoss",
    "HeadPoseLoss",
    "Hopenet",
    "load_hopenet",
    "in_memory_order",
]
