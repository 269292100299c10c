"""Frozen VGG feature pyramids for perceptual losses: VGG19 (ImageNet) and VGG-Face (VGG16 layout).

Both trunks take RGB images in [0, 1] and normalise them inside, and both return the activations after the first
ReLU of every stage (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1), the layers face-vid2vid, FOMM and the few-shot
talking-head papers compare.

Where the weights come from (nothing is downloaded by this package):

- VGG19: torchvision's ``VGG19_Weights.IMAGENET1K_V1``. Put the file in the torch hub cache on a machine with
  network access, e.g. ``python -c "import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')"``,
  which writes ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`` (copy that folder to offline machines), or pass
  the path of that ``.pth`` file directly.
- VGG-Face: the Oxford VGG-Face network (Parkhi et al., BMVC 2015) converted to PyTorch, e.g. ``vgg_face_dag.pth``
  from Samuel Albanie's pytorch-mcn model zoo (keys ``conv1_1.weight`` ...), or any state dict with torchvision
  VGG16 ``features.N.*`` keys. Only local files are accepted.

Without VGG19 weights :func:`load_vgg19` falls back to random-init features and says so once per process.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from talkinghead.safe_load import safe_torch_load

__all__ = ["VGG19Features", "FaceVGGFeatures", "load_vgg19", "load_face_vgg", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# VGG-Face (vgg_face_dag) expects 0..255 RGB minus this mean; as [0, 1] statistics: mean / 255 and std 1 / 255.
VGG_FACE_MEAN = (129.186279296875 / 255.0, 104.76238250732422 / 255.0, 93.59396362304688 / 255.0)
VGG_FACE_STD = (1.0 / 255.0,) * 3

# Layer configurations (torchvision's "E" = VGG19 and "D" = VGG16), cut after the last conv stage's first ReLU.
_VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
_VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512)

_warned_random_vgg19 = False


def _make_trunk(config: Sequence[int | str]) -> tuple[nn.Sequential, tuple[int, ...]]:
    """A torchvision-layout ``features`` trunk and the indices of the relu{n}_1 modules in it."""
    layers: list[nn.Module] = []
    taps: list[int] = []
    channels, new_stage = 3, True
    for item in config:
        if item == "M":
            # ceil_mode: small pyramid levels (a 4 px image at 32 px training) still reach relu5_1; on sides that
            # are multiples of 16 the maps equal torchvision's.
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            new_stage = True
            continue
        layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
        if new_stage:
            taps.append(len(layers) - 1)
            new_stage = False
        channels = int(item)
    for module in layers:
        if isinstance(module, nn.Conv2d):  # torchvision's VGG initialisation
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return nn.Sequential(*layers), tuple(taps)


class _FrozenFeaturePyramid(nn.Module):
    """A frozen conv trunk that normalises [0, 1] images and returns the activations at its tap layers."""

    def __init__(self, config: Sequence[int | str], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.features, self.taps = _make_trunk(config)
        # Non-persistent: state dicts hold only the conv weights, so they match torchvision's keys.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def freeze(self) -> None:
        """No parameter trains and the trunk stays in eval mode (gradients still reach the input image)."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _FrozenFeaturePyramid:
        # A fixed feature extractor: the surrounding module's .train() must not change it.
        return super().train(False)

    def forward(self, image: Tensor, num_layers: int | None = None) -> list[Tensor]:
        """Activations at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

        Args:
            image: (b, 3, h, w) RGB in [0, 1].
            num_layers: return only the first this many maps, and stop the trunk there (saves the deeper convs).

        Returns:
            maps (b, c_i, ceil(h / 2^i), ceil(w / 2^i)), i = 0..4, with c = 64, 128, 256, 512, 512.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images (b, 3, h, w), got {tuple(image.shape)}")
        wanted = len(self.taps) if num_layers is None else num_layers
        x = (image - self.mean) / self.std
        outputs = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.taps:
                outputs.append(x)
                if len(outputs) == wanted:
                    break
        return outputs

    def load_trunk_state_dict(self, state_dict: dict[str, Tensor], source: str) -> None:
        """Loads the ``features.N.*`` conv weights of a full VGG state dict (classifier and later layers ignored)."""
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        if missing:
            raise ValueError(f"{source} does not hold VGG conv weights: missing {missing[:4]} ...")
        for key in own:
            if state_dict[key].shape != own[key].shape:
                raise ValueError(
                    f"{source}: {key} has shape {tuple(state_dict[key].shape)}, expected {tuple(own[key].shape)}"
                )
        self.load_state_dict({key: state_dict[key] for key in own})
        self.freeze()


class VGG19Features(_FrozenFeaturePyramid):
    """VGG19 (Simonyan & Zisserman 2015) relu1_1 ... relu5_1 features for the perceptual loss (face-vid2vid 3.3).

    Args:
        weights: None for random init; a torchvision ``VGG19_Weights`` name ("IMAGENET1K_V1", "DEFAULT"), read
            from the torch hub cache only; or the path of a local ``.pth`` state dict (torchvision keys).
    """

    def __init__(self, weights: str | None = None) -> None:
        super().__init__(_VGG19_CONFIG, IMAGENET_MEAN, IMAGENET_STD)
        self.weights = weights
        if weights is not None:
            state_dict, source = _read_vgg19_weights(weights)
            self.load_trunk_state_dict(state_dict, source)


class FaceVGGFeatures(_FrozenFeaturePyramid):
    """VGG-Face (Parkhi et al. 2015; VGG16 layout) relu1_1 ... relu5_1 features for the face perceptual term.

    Args:
        weights: path of a local state dict: ``vgg_face_dag.pth`` style (``conv1_1.weight`` ... names) or
            torchvision VGG16 style (``features.N.weight``). None leaves random init (only for tests).
        mean: per-channel mean of [0, 1] input images the weights expect (vgg_face_dag's, by default).
        std: per-channel std (1/255: vgg_face_dag works on 0..255 values).
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        mean: Sequence[float] = VGG_FACE_MEAN,
        std: Sequence[float] = VGG_FACE_STD,
    ) -> None:
        super().__init__(_VGG16_CONFIG, mean, std)
        if weights is not None:
            state_dict = _torch_load(weights, "VGG-Face")
            self.load_trunk_state_dict(self._torchvision_keys(state_dict), str(weights))

    def _torchvision_keys(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Maps vgg_face_dag names (conv{stage}_{n}.weight) onto this trunk's ``features.N`` names."""
        names = re.compile(r"^conv(\d)_(\d)\.(weight|bias)$")
        named = {key: value for key, value in state_dict.items() if names.match(key)}
        if not named:
            return state_dict
        convs = sorted({key.rsplit(".", 1)[0] for key in named}, key=lambda name: tuple(map(int, name[4:].split("_"))))
        indices = [index for index, module in enumerate(self.features) if isinstance(module, nn.Conv2d)]
        mapped = {}
        for conv, index in zip(convs, indices):
            for kind in ("weight", "bias"):
                mapped[f"features.{index}.{kind}"] = named[f"{conv}.{kind}"]
        return mapped


def _torch_load(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    """A state dict from a local file, unwrapped from common checkpoint containers."""
    state_dict = safe_torch_load(path, f"{what} weights file")
    for key in ("state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state_dict).__name__})")
    return state_dict


def _read_vgg19_weights(weights: str) -> tuple[dict[str, Tensor], str]:
    """The state dict named by a torchvision enum name (hub cache only) or a local path, and where it came from."""
    from torchvision.models import VGG19_Weights

    name = weights.removeprefix("VGG19_Weights.")
    if name in VGG19_Weights.__members__:
        url = VGG19_Weights[name].url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if not cached.is_file():
            raise FileNotFoundError(
                f"VGG19 weights VGG19_Weights.{name} are not in the torch hub cache ({cached}) and nothing is "
                f"downloaded here. On a machine with network access run "
                f"`python -c \"import torchvision; torchvision.models.vgg19(weights='{name}')\"` and copy "
                f"{os.path.basename(cached)} to {cached.parent} (or set TORCH_HOME), or pass a local .pth path."
            )
        return _torch_load(cached, "VGG19"), str(cached)
    if not Path(weights).expanduser().is_file():
        raise FileNotFoundError(
            f"VGG19 weights file not found: {weights} (expected a local .pth state dict or one of the torchvision "
            f"names {sorted(VGG19_Weights.__members__)})"
        )
    return _torch_load(weights, "VGG19"), weights


def load_vgg19(weights: str | None = None) -> VGG19Features:
    """VGG19 features for a perceptual loss, saying once per process when they are random.

    Args:
        weights: None, a torchvision ``VGG19_Weights`` name or a local ``.pth`` path (see :class:`VGG19Features`).

    Returns:
        the frozen feature pyramid.

    Raises:
        FileNotFoundError: the named weights are neither in the torch hub cache nor at the given path.
    """
    global _warned_random_vgg19
    if weights is None and not _warned_random_vgg19:
        _warned_random_vgg19 = True
        warnings.warn(
            "The perceptual loss uses RANDOM-INIT VGG19 features (no weights given). For the paper's loss put "
            "torchvision's VGG19_Weights.IMAGENET1K_V1 (vgg19-dcbb9e9d.pth) into the torch hub cache "
            f"({Path(torch.hub.get_dir()) / 'checkpoints'}) and pass vgg_weights='IMAGENET1K_V1', or pass the path "
            "of a local VGG19 .pth state dict.",
            UserWarning,
            stacklevel=2,
        )
    return VGG19Features(weights)


def load_face_vgg(weights: str | os.PathLike | None) -> FaceVGGFeatures | None:
    """VGG-Face features from a local file, or None when no file is given (the face term is then left out).

    Raises:
        FileNotFoundError: the path does not exist.
    """
    if weights is None:
        return None
    return FaceVGGFeatures(weights)
