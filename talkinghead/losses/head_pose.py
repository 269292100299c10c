"""The head-pose loss of face-vid2vid (3.3) and Hopenet, the head-pose network that gives its pseudo-labels.

Hopenet (Ruiz, Chong, Rehg, CVPRW 2018, "Fine-Grained Head Pose Estimation Without Keypoints"): a ResNet-50 with
three 66-bin classification heads (3 degrees per bin over [-99, 99)); the angle is the softmax expectation of the
bin index * 3 - 99. Its weights come from the deep-head-pose project (github.com/natanielruiz/deep-head-pose,
README "Pretrained models", e.g. ``hopenet_robust_alpha1.pkl``, a plain PyTorch state dict); download the file
elsewhere and pass its local path to :func:`load_hopenet`. Nothing is downloaded here. Without it the head-pose
loss uses the pose labels stored in the shards (``<role>_pose``, estimated from landmarks by PnP).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.safe_load import safe_torch_load

__all__ = ["Hopenet", "load_hopenet", "HeadPoseLoss"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Hopenet(nn.Module):
    """Hopenet (Ruiz et al. 2018): ResNet-50 trunk + yaw/pitch/roll 66-bin heads -> angles in degrees.

    The module names match the deep-head-pose state dicts (conv1, bn1, layer1-4, fc_yaw, fc_pitch, fc_roll and
    the unused fc_finetune), so their files load as they are.

    Args:
        num_bins: bins per angle head (66 bins of 3 degrees).
        input_size: side the images are resized to before the trunk (Hopenet was trained at 224).
    """

    def __init__(self, num_bins: int = 66, input_size: int = 224) -> None:
        super().__init__()
        from torchvision.models.resnet import Bottleneck, ResNet

        trunk = ResNet(Bottleneck, [3, 4, 6, 3])
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        features = 512 * Bottleneck.expansion
        self.fc_yaw = nn.Linear(features, num_bins)
        self.fc_pitch = nn.Linear(features, num_bins)
        self.fc_roll = nn.Linear(features, num_bins)
        self.fc_finetune = nn.Linear(features + 3, 3)  # in the released checkpoints; unused by the forward pass
        self.num_bins = num_bins
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bin_index", torch.arange(num_bins, dtype=torch.float32), persistent=False)

    def bin_logits(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Yaw, pitch and roll bin logits, each (b, num_bins), of images (b, 3, h, w) in [0, 1]."""
        if image.shape[-2:] != (self.input_size, self.input_size):
            image = F.interpolate(image, size=(self.input_size,) * 2, mode="bilinear", align_corners=False,
                                  antialias=True)
        x = (image - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x).flatten(1)
        return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)

    def forward(self, image: Tensor) -> Tensor:
        """Head pose of face crops.

        Args:
            image: (b, 3, h, w) RGB in [0, 1] (square face crops; resized to ``input_size``).

        Returns:
            (b, 3) yaw, pitch, roll in degrees.
        """
        angles = [
            (logits.softmax(-1) * self.bin_index).sum(-1) * 3 - 99 for logits in self.bin_logits(image)
        ]
        return torch.stack(angles, dim=-1)


def load_hopenet(path: str | os.PathLike) -> Hopenet:
    """Hopenet with weights from a local deep-head-pose file (e.g. ``hopenet_robust_alpha1.pkl``), frozen, eval.

    Raises:
        FileNotFoundError: the file does not exist (the message says where the weights come from).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Hopenet weights file not found: {path}. Get hopenet_robust_alpha1.pkl from the deep-head-pose "
            f"project (github.com/natanielruiz/deep-head-pose) and pass its local path."
        )
    state_dict = safe_torch_load(path, "Hopenet weights file")
    for key in ("state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    model = Hopenet()
    model.load_state_dict(state_dict)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _angles(output: Any) -> Tensor:
    """(b, 3) degrees from an estimator's output: a (b, >=3) tensor, a (yaw, pitch, roll) tuple or dict."""
    if isinstance(output, Mapping):
        return torch.stack([output["yaw"], output["pitch"], output["roll"]], dim=-1)
    if isinstance(output, (tuple, list)):
        return torch.stack(list(output[:3]), dim=-1)
    return output[..., :3]


class HeadPoseLoss(nn.Module):
    """L_H, the head-pose loss of face-vid2vid (3.3): L1 between predicted and pseudo-label yaw, pitch, roll.

    Pseudo-labels come from the injected head-pose network (Hopenet) when given, else from the batch's stored pose
    labels. Rows whose label has a NaN are left out; with no labelled row at all the loss is 0 (said once).

    Args:
        estimator: image (b, 3, h, w) in [0, 1] -> (b, 3) yaw, pitch, roll degrees (e.g. :class:`Hopenet`), run
            without gradients and kept in eval mode; None uses the stored labels.
    """

    def __init__(self, estimator: nn.Module | None = None) -> None:
        super().__init__()
        self.estimator = estimator
        if estimator is not None:
            for parameter in estimator.parameters():
                parameter.requires_grad_(False)
        self._warned_unlabelled = False

    def train(self, mode: bool = True) -> HeadPoseLoss:
        super().train(mode)
        if self.estimator is not None:  # a fixed labeller: its batch norm stays in eval mode
            self.estimator.eval()
        return self

    def forward(self, predicted: Tensor, images: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """Args:
            predicted: (b, 3) yaw, pitch, roll in degrees from the head-pose estimator H.
            images: (b, 3, h, w) in [0, 1]; needed when an estimator is set.
            labels: (b, 6) stored poses (yaw, pitch, roll, tx, ty, tz; NaN where unknown) or (b, 3) angles;
                used when no estimator is set.

        Returns:
            scalar: mean |predicted - label| over the labelled rows and the three angles.
        """
        if predicted.dim() != 2 or predicted.shape[1] != 3:
            raise ValueError(f"expected predicted angles (b, 3), got {tuple(predicted.shape)}")
        if self.estimator is not None:
            if images is None:
                raise ValueError("HeadPoseLoss with an estimator needs the images")
            self.estimator.eval()
            with torch.no_grad():
                target = _angles(self.estimator(images)).to(predicted.dtype)
        else:
            if labels is None:
                raise ValueError("HeadPoseLoss without an estimator needs the stored pose labels")
            target = labels[..., :3].to(predicted.dtype)
        if target.shape != predicted.shape:
            raise ValueError(f"pose labels {tuple(target.shape)} do not match predictions {tuple(predicted.shape)}")
        labelled = torch.isfinite(target).all(-1)
        if not bool(labelled.any()):
            if not self._warned_unlabelled:
                self._warned_unlabelled = True
                warnings.warn("HeadPoseLoss: no pose labels in the batch (all NaN); the head-pose loss is 0 for "
                              "such batches. Give Hopenet weights or shards with pose labels.", UserWarning,
                              stacklevel=2)
            return predicted.sum() * 0.0
        return (predicted[labelled] - target[labelled]).abs().mean()
