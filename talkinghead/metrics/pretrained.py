"""Metrics on pretrained ImageNet networks: FID (torchvision InceptionV3 features) and LPIPS; and what is computable.

Nothing is downloaded here. The weights come from the torch hub cache (``torch.hub.get_dir()/checkpoints``, i.e.
``$TORCH_HOME/hub/checkpoints``) under torchvision's file names, or from a local ``.pth`` path; without them these
metrics refuse with :class:`MissingWeightsError` (a metric with random weights would be meaningless under its name).
To fill the cache, on a machine with network access run e.g.
``python -c "import torchvision as tv; tv.models.inception_v3(weights='IMAGENET1K_V1')"`` (and likewise
``tv.models.alexnet(weights='IMAGENET1K_V1')`` for LPIPS) and copy ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``) to the offline machine.

FID honesty: the original FID (Heusel et al. 2017) uses the TF-Inception (``pt_inception-2015-12-05``) weights;
:class:`FID` uses torchvision's ImageNet InceptionV3 (``inception_v3_google-0cc3c7bd.pth``) 2048-d pool features,
so its values are comparable with each other (within this package) but not with FIDs reported in papers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

from talkinghead.safe_load import safe_torch_load

__all__ = [
    "MissingWeightsError",
    "InceptionV3Features",
    "FID",
    "LPIPS",
    "metric_availability",
    "hub_checkpoint",
    "INCEPTION_V3_FILE",
    "LPIPS_BACKBONE_FILES",
]

INCEPTION_V3_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision Inception_V3_Weights.IMAGENET1K_V1
# torchvision's DEFAULT weights of the LPIPS backbones (what torchmetrics would download).
LPIPS_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_TORCHVISION_BUILDER = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingWeightsError(RuntimeError):
    """Pretrained weights a metric needs are not on this machine (and nothing is downloaded)."""


def hub_checkpoint(file_name: str) -> Path:
    """Where the torch hub cache keeps ``file_name`` (whether or not it is there)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _how_to_get(file_name: str, builder: str) -> str:
    return (f"put {file_name} in the torch hub cache ({hub_checkpoint(file_name).parent}; set TORCH_HOME to move "
            f"it) — on a machine with network access `python -c \"import torchvision; "
            f"torchvision.models.{builder}(weights='IMAGENET1K_V1')\"` writes it there, copy it over — or pass the "
            f"local path of that .pth file")


def _resolve_weights(weights: str | os.PathLike, file_name: str, builder: str, what: str) -> Path:
    """The file of ``weights``: "IMAGENET1K_V1"/"DEFAULT" (hub cache only) or a local path; raises when absent."""
    if str(weights).split(".")[-1] in ("IMAGENET1K_V1", "DEFAULT"):
        path = hub_checkpoint(file_name)
        if not path.is_file():
            raise MissingWeightsError(f"{what} weights {file_name} are not in the torch hub cache ({path}) and "
                                      f"nothing is downloaded here: {_how_to_get(file_name, builder)}.")
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"{what} weights file not found: {path}. Expected torchvision's {file_name}: "
                                  f"{_how_to_get(file_name, builder)}.")
    return path


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    state_dict = safe_torch_load(path, "weights file")
    for key in ("state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


class InceptionV3Features(nn.Module):
    """torchvision InceptionV3 (ImageNet, IMAGENET1K_V1) 2048-d average-pool features of [0, 1] images.

    Not the TF-Inception network of the original FID (see the module doc). Images are resized to 299 x 299
    (bilinear) and ImageNet-normalised inside.

    Args:
        weights: "IMAGENET1K_V1" (read from the torch hub cache only) or a local path of
            ``inception_v3_google-0cc3c7bd.pth`` (a torchvision Inception3 state dict).

    Raises:
        MissingWeightsError: the weights are absent.
    """

    num_features = 2048

    def __init__(self, weights: str | os.PathLike = "IMAGENET1K_V1") -> None:
        super().__init__()
        path = _resolve_weights(weights, INCEPTION_V3_FILE, "inception_v3", "InceptionV3 (FID)")
        from torchvision.models import inception_v3

        # transform_input: the IMAGENET1K_V1 weights expect it (torchvision sets it when loading them).
        self.network = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        self.network.load_state_dict(_load_state_dict(path))
        self.network.fc = nn.Identity()
        self.network.eval().requires_grad_(False)
        self.source = str(path)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> InceptionV3Features:
        return super().train(False)  # a fixed feature extractor

    def forward(self, images: Tensor) -> Tensor:
        """(b, 3, h, w) float RGB in [0, 1] -> (b, 2048) pool features."""
        x = nn.functional.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.network((x - self.mean) / self.std)


class FID(FrechetInceptionDistance):
    """Fréchet distance between torchvision-InceptionV3 pool features of real and generated images.

    torchmetrics' FID with :class:`InceptionV3Features` as the feature extractor; its states (feature sums and
    outer-product sums) are summed across DDP processes. Values are comparable only within this package (not the
    TF-Inception FID of the papers). ``update(images, real=True/False)`` with (b, 3, h, w) float images in [0, 1].

    Args:
        weights: "IMAGENET1K_V1" (hub cache only) or a local ``inception_v3_google-0cc3c7bd.pth`` path.
        reset_real_features: whether ``reset()`` also clears the real statistics.

    Raises:
        MissingWeightsError: the InceptionV3 weights are absent.
    """

    def __init__(self, weights: str | os.PathLike = "IMAGENET1K_V1", reset_real_features: bool = True,
                 **kwargs) -> None:
        super().__init__(feature=InceptionV3Features(weights), reset_real_features=reset_real_features,
                         normalize=True, **kwargs)


class LPIPS(Metric):
    """LPIPS (Zhang et al. 2018) averaged over image pairs, from torchmetrics' network with local backbone weights.

    torchmetrics ships the linear calibration layers (``lpips_models/{net}.pth``) but builds the backbone with
    torchvision's DEFAULT weights, downloading them when absent. Here the backbone is built random and then
    loaded from the hub cache file or a local path, so nothing is ever downloaded. States are a sum and a count.

    Args:
        net_type: backbone, "alex" (the LPIPS paper's default), "vgg" or "squeeze".
        weights: "DEFAULT"/"IMAGENET1K_V1" (the backbone's file in the torch hub cache, see
            :data:`LPIPS_BACKBONE_FILES`) or a local path of that torchvision state dict.

    Raises:
        MissingWeightsError: the backbone weights are absent.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, net_type: str = "alex", weights: str | os.PathLike = "DEFAULT", **kwargs) -> None:
        super().__init__(**kwargs)
        if net_type not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"net_type must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net_type!r}")
        path = _resolve_weights(weights, LPIPS_BACKBONE_FILES[net_type], _TORCHVISION_BUILDER[net_type],
                                f"LPIPS backbone ({_TORCHVISION_BUILDER[net_type]})")
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        # pnet_rand=True: torchvision builds the backbone with weights=None (no download); loaded below.
        self.net = _NoTrainLpips(net=net_type, pnet_rand=True)
        self._load_backbone(_load_state_dict(path), str(path))
        self.net.requires_grad_(False)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _load_backbone(self, state_dict: dict[str, Tensor], source: str) -> None:
        """Copies torchvision ``features.N.*`` weights into torchmetrics' slices (children named by N)."""
        own = {}
        for name, _ in self.net.net.named_parameters():  # slice{k}.{N}.{...}
            _, index, rest = name.split(".", 2)
            own[name] = f"features.{index}.{rest}"
        missing = [key for key in own.values() if key not in state_dict]
        if missing:
            raise ValueError(f"{source} is not a torchvision backbone state dict: missing {missing[:4]}")
        self.net.net.load_state_dict({name: state_dict[key] for name, key in own.items()})

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Adds a batch.

        Args:
            prediction: (b, 3, h, w) generated images in [0, 1].
            target: (b, 3, h, w) ground-truth images in [0, 1].
        """
        if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] != 3:
            raise ValueError(f"expected two (b, 3, h, w) batches of one shape, got {tuple(prediction.shape)} and "
                             f"{tuple(target.shape)}")
        scores = self.net(prediction.float() * 2 - 1, target.float() * 2 - 1)  # LPIPS works on [-1, 1]
        self.total += scores.detach().double().sum()
        self.count += prediction.shape[0]

    def compute(self) -> Tensor:
        """Mean LPIPS distance (NaN before any update)."""
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


def _missing_modules(*names: str) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def metric_availability(fid_weights: str | os.PathLike = "IMAGENET1K_V1",
                        lpips_weights: str | os.PathLike = "DEFAULT", lpips_net: str = "alex") -> dict[str, str | None]:
    """Which metrics can be computed here: None when computable, else a short reason.

    Args:
        fid_weights: what :class:`FID` would be given.
        lpips_weights: what :class:`LPIPS` would be given.
        lpips_net: the LPIPS backbone.

    Returns:
        {"fid", "lpips", "akd", "aed", "csim", "pose"} -> None or e.g. "n/a (InceptionV3 weights absent: ...)".
    """
    availability: dict[str, str | None] = {}
    try:
        _resolve_weights(fid_weights, INCEPTION_V3_FILE, "inception_v3", "InceptionV3")
        availability["fid"] = None
    except MissingWeightsError:
        availability["fid"] = f"n/a (InceptionV3 weights absent: {INCEPTION_V3_FILE})"
    try:
        _resolve_weights(lpips_weights, LPIPS_BACKBONE_FILES[lpips_net], _TORCHVISION_BUILDER[lpips_net], "LPIPS")
        availability["lpips"] = None
    except MissingWeightsError:
        availability["lpips"] = f"n/a (LPIPS backbone weights absent: {LPIPS_BACKBONE_FILES[lpips_net]})"
    face = _missing_modules("facenet_pytorch", "dlib", "face_recognition_models")
    reason = f"n/a (missing {', '.join(face)}: pip install \"talkinghead[face]\")" if face else None
    for name in ("akd", "aed", "csim", "pose"):
        availability[name] = reason
    return availability
