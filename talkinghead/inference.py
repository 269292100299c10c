"""Load an exported model bundle for inference, without Lightning.

A bundle is a folder written by `talkinghead export`::

    manifest.json        format and version, model kind, the networks' class paths and init args, image size, ...
    model.safetensors    the inference weights (the EMA when training kept one); nothing else
    graphs/              optional ONNX / TorchScript / torch.export graphs of OSFV's extractor and renderer

:func:`load` rebuilds the inference model (:class:`~talkinghead.networks.osfv_model.OSFVModel`,
:class:`~talkinghead.networks.few_shot_models.FSTHModel`, ...) from the manifest and loads the weights with
safetensors, so nothing in the bundle can execute code; only classes under ``talkinghead.networks.`` are built.
Importing this module does not import Lightning.

    from talkinghead.inference import load
    model = load("bundle/", device="cuda", kind="osfv")
    frames = model.animate(source, driving, yaw=20)
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "KINDS", "BundleError", "build_model", "load", "read_manifest"]

BUNDLE_FORMAT = "talkinghead-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
ALLOWED_PREFIX = "talkinghead.networks."


class BundleError(ValueError):
    """A bundle that cannot be loaded: missing files, a newer format, another model kind, a foreign class."""


def _osfv(c: Mapping[str, nn.Module]) -> nn.Module:
    from talkinghead.networks.osfv_model import OSFVModel

    return OSFVModel(c["appearance"], c["canonical_keypoints"], c["head_pose"], c["motion"], c["generator"])


def _fsth(c: Mapping[str, nn.Module]) -> nn.Module:
    from talkinghead.networks.few_shot_models import FSTHModel

    return FSTHModel(c["embedder"], c["generator"])


def _fsth_person(c: Mapping[str, nn.Module]) -> nn.Module:
    from talkinghead.networks.few_shot_models import FSTHPersonModel

    return FSTHPersonModel(c["generator"], c["generator"].num_adain_parameters)


def _lpd(c: Mapping[str, nn.Module]) -> nn.Module:
    from talkinghead.networks.few_shot_models import LPDModel

    return LPDModel(c["identity_encoder"], c["pose_encoder"], c["generator"])


def _lpd_person(c: Mapping[str, nn.Module]) -> nn.Module:
    from talkinghead.networks.few_shot_models import LPDPersonGenerator, LPDPersonModel

    return LPDPersonModel(c["pose_encoder"], LPDPersonGenerator(c["generator"], c["generator"].identity_dim))


# kind -> (networks the manifest names, how they make the model, what the model does)
KINDS: dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, nn.Module]], nn.Module], str]] = {
    "osfv": (("appearance", "canonical_keypoints", "head_pose", "motion", "generator"), _osfv,
             "one-shot free-view synthesis: animate(source, driving, relative, yaw, pitch, roll), reconstruct"),
    "fsth": (("embedder", "generator"), _fsth,
             "FSTH meta-learned: reenact(references, references_landmarks, driving_landmarks)"),
    "fsth-person": (("generator",), _fsth_person, "FSTH fine-tuned to one person: reenact(driving_landmarks, size)"),
    "lpd": (("identity_encoder", "pose_encoder", "generator"), _lpd,
            "LPD meta-learned: reenact(references, driving_frames)"),
    "lpd-person": (("pose_encoder", "generator"), _lpd_person, "LPD fine-tuned to one person: reenact(driving_frames)"),
}


def _instantiate(spec: Any, where: str) -> Any:
    """A network from {"class_path", "init_args"} (nested specs too), refusing classes outside talkinghead.networks."""
    if isinstance(spec, Mapping) and "class_path" in spec:
        class_path = str(spec["class_path"])
        if not class_path.startswith(ALLOWED_PREFIX):
            raise BundleError(f"{where}: refusing to build {class_path}: a bundle may only name classes under "
                              f"{ALLOWED_PREFIX}")
        module_name, _, name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as error:
            raise BundleError(f"{where}: {class_path} does not exist in this talkinghead version") from error
        args = {key: _instantiate(value, f"{where}.{key}") for key, value in (spec.get("init_args") or {}).items()}
        return cls(**args)
    if isinstance(spec, list):
        return [_instantiate(value, where) for value in spec]
    return spec


def read_manifest(bundle: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The bundle's manifest, checked: its format, version and (when given) the kind asked for.

    Raises:
        BundleError: not a bundle, a newer format version, or another kind than ``kind``.
    """
    folder = Path(bundle)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} is not a talkinghead bundle (no {MANIFEST}); make one with "
                          f"`talkinghead export --checkpoint CKPT --out {folder}`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a talkinghead bundle manifest (format {BUNDLE_FORMAT!r} expected)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{folder} is a bundle of format version {version}, newer than this talkinghead reads "
                          f"({BUNDLE_FORMAT_VERSION}); upgrade talkinghead or export it again with this version")
    if manifest.get("kind") not in KINDS:
        raise BundleError(f"{folder} holds an unknown model kind {manifest.get('kind')!r} (known: {', '.join(KINDS)})")
    if kind is not None and manifest["kind"] != kind:
        raise BundleError(f"{folder} holds a model of kind {manifest['kind']} ({KINDS[manifest['kind']][2]}), "
                          f"not {kind} as asked")
    return manifest


def build_model(manifest: Mapping[str, Any]) -> nn.Module:
    """The inference model a manifest describes, with freshly initialised weights."""
    names, make, _ = KINDS[manifest["kind"]]
    specs = manifest.get("networks") or {}
    missing = [name for name in names if name not in specs]
    if missing:
        raise BundleError(f"the manifest names no {', '.join(missing)} network for a {manifest['kind']} model")
    return make({name: _instantiate(specs[name], f"networks.{name}") for name in names})


def load(bundle: str | os.PathLike, device: str | torch.device = "cpu", kind: str | None = None) -> nn.Module:
    """The inference model of an exported bundle, in eval mode on ``device``.

    Args:
        bundle: the folder `talkinghead export` wrote.
        device: where the model goes ("cpu", "cuda", "cuda:1", ...).
        kind: the model kind expected ("osfv", "fsth", "fsth-person", "lpd", "lpd-person"); None takes any.

    Returns:
        the model; its manifest is at ``model.manifest`` and its image size at ``model.image_size``.

    Raises:
        BundleError: see :func:`read_manifest`; also missing or mismatching weights.
    """
    from safetensors.torch import load_file

    manifest = read_manifest(bundle, kind)
    weights_path = Path(bundle) / manifest.get("weights", {}).get("file", WEIGHTS)
    if not weights_path.is_file():
        raise BundleError(f"{bundle}: the weights file {weights_path.name} is missing")
    model = build_model(manifest)
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise BundleError(f"{weights_path} is not a readable safetensors file: {error}") from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise BundleError(f"{weights_path} does not match the networks its manifest names: "
                          f"{str(error).splitlines()[0]}") from error
    model.manifest = dict(manifest)
    model.image_size = int(manifest["image_size"]) if manifest.get("image_size") else None
    return model.to(device).eval()
