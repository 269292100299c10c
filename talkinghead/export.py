"""Export a `talkinghead fit` checkpoint as a bundle that loads without Lightning (:mod:`talkinghead.inference`).

:func:`export_bundle` writes ``model.safetensors`` (the inference model's weights: the EMA when kept; no loss
networks, discriminator or optimizer state) and ``manifest.json``; :func:`export_graphs` adds OSFV's graphs
(ONNX, TorchScript or torch.export) and checks each against PyTorch on random inputs.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from talkinghead.inference import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, KINDS, MANIFEST, WEIGHTS, BundleError
from talkinghead.lightning.slim import _plain

__all__ = ["GRAPH_FORMATS", "export_bundle", "export_graphs", "module_kind"]

GRAPH_FORMATS = ("onnx", "torchscript", "torch-export")
CONVENTIONS = {
    "images": "float32 RGB in [0, 1], NCHW (n, 3, image_size, image_size); faces cropped as in training "
              "(talkinghead preprocess / animate)",
    "landmarks": "68 (x, y) points in pixels of the image_size x image_size crop (iBUG 68 order)",
    "angles": "degrees: yaw, pitch, roll (talkinghead.geometry conventions)",
}


def module_kind(module: Any) -> str:
    """The bundle kind of a talkinghead LightningModule ("osfv", "fsth", "fsth-person", "lpd", "lpd-person")."""
    kind = getattr(type(module), "bundle_kind", None)
    if kind not in KINDS:
        raise BundleError(f"{type(module).__name__} has no inference bundle kind")
    return kind


def _network_specs(hparams: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Class path and init args of each network the kind's model is built from, from a checkpoint's stored
    hyper-parameters (the meta module's config for the fine-tuning stages)."""
    hparams = dict(hparams)
    if kind.endswith("-person"):
        hparams = json.loads(hparams["meta_config"])
    specs = {}
    for name in KINDS[kind][0]:
        spec = hparams.get(name)
        spec = spec.as_dict() if hasattr(spec, "as_dict") else spec
        if not (isinstance(spec, Mapping) and "class_path" in spec):
            raise BundleError(f"the checkpoint's hyper-parameters do not name the {name} network's class (it was "
                              f"not trained through `talkinghead fit`), so no bundle can rebuild it")
        specs[name] = _plain(spec)
    return specs


def export_bundle(checkpoint: str | os.PathLike, out: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Writes the bundle of a checkpoint into ``out`` (a new or empty folder) and returns its manifest.

    Args:
        checkpoint: a `talkinghead fit` checkpoint (full or inference-only), loaded safely.
        out: the bundle folder.
        kind: the kind expected (refused if the checkpoint is another); None takes the checkpoint's.

    Raises:
        BundleError: ``out`` holds other files, a kind mismatch, or networks the bundle cannot name.
    """
    from safetensors.torch import save_file

    from talkinghead.evaluation import find_checkpoint_image_size, load_model
    from talkinghead.safe_load import safe_torch_load

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} is not empty: export writes a new bundle folder (choose another --out)")
    module = load_model(checkpoint)
    found = module_kind(module)
    if kind is not None and kind != found:
        raise BundleError(f"{checkpoint} holds a model of kind {found}, not {kind} as asked")
    state = safe_torch_load(checkpoint, "checkpoint")
    image_size, image_size_source = find_checkpoint_image_size(checkpoint, state=state)
    model = module.inference_model()
    weights = {name: value.detach().to("cpu", copy=True).contiguous() for name, value in model.state_dict().items()}
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "kind": found,
        "usage": KINDS[found][2],
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "networks": _network_specs(state.get("hyper_parameters") or {}, found),
        "image_size": image_size,
        "image_size_source": image_size_source,
        "num_keypoints": getattr(model, "num_keypoints", None),
        "ema": module.hparams.get("ema_decay") is not None,  # then the weights are the EMA's (also when slim)
        "conventions": CONVENTIONS,
        "talkinghead_version": importlib.metadata.version("talkinghead"),
        "torch_version": torch.__version__,
        "source_checkpoint": {"name": checkpoint.name, "bytes": checkpoint.stat().st_size,
                              "global_step": int(state.get("global_step", 0))},
        "weights": {"file": WEIGHTS, "tensors": len(weights),
                    "parameters": sum(v.numel() for v in weights.values() if v.is_floating_point())},
        "graphs": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / WEIGHTS), metadata={"format": BUNDLE_FORMAT, "kind": found})
    manifest["weights"]["bytes"] = (out / WEIGHTS).stat().st_size
    _write_manifest(out, manifest)
    return manifest


def _write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    partial = out / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(partial, out / MANIFEST)


# -- graphs of OSFV ----------------------------------------------------------------------------------------------


def _only(model: nn.Module, *names: str) -> nn.Module:
    """An OSFVModel sharing ``model``'s networks ``names``, the others empty (so a graph holds only its weights)."""
    from talkinghead.networks.osfv_model import OSFVModel

    return OSFVModel(*(getattr(model, name) if name in names else nn.Identity() for name in OSFVModel.names))


class KeypointExtractor(nn.Module):
    """H/Δ and L of one image (1, 3, s, s): rotation (1, 3, 3), translation (1, 3), expression (1, k, 3),
    canonical keypoints (1, k, 3) and the image's keypoints x = R x_c + t + δ (1, k, 3)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = _only(model, "canonical_keypoints", "head_pose")

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        pose = self.model.estimate_pose(image)
        canonical = self.model.canonical_keypoints(image)["keypoints"]
        return (pose["rotation"], pose["translation"], pose["expression"], canonical,
                self.model.keypoints(canonical, pose))


class AppearanceEncoder(nn.Module):
    """F of one image (1, 3, s, s): the appearance feature volume f_s (1, c, d, h, w)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.appearance = model.appearance

    def forward(self, image: Tensor) -> Tensor:
        return self.appearance(image)


class Renderer(nn.Module):
    """M and G for one frame from a source state: (f_s, x_s, R_s, x_c, R_d, t_d, δ_d) -> image (1, 3, s, s).

    The source state comes from :class:`AppearanceEncoder` (f_s) and :class:`KeypointExtractor` (x_s, R_s, x_c)
    once per source; per frame the driving pose (composed with relative motion or a free-view rotation by the
    caller) is the only input that changes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = _only(model, "motion", "generator")

    def forward(self, feature: Tensor, source_keypoints: Tensor, source_rotation: Tensor, canonical: Tensor,
                rotation: Tensor, translation: Tensor, expression: Tensor) -> Tensor:
        driving = self.model.keypoints(canonical, {"rotation": rotation, "translation": translation,
                                                   "expression": expression})
        return self.model.synthesize(feature, source_keypoints, driving, source_rotation, rotation)["prediction"]


GRAPH_INPUTS = {
    "appearance": ("image",),
    "keypoints": ("image",),
    "renderer": ("feature", "source_keypoints", "source_rotation", "canonical", "rotation", "translation",
                 "expression"),
}
GRAPH_OUTPUTS = {
    "appearance": ("feature",),
    "keypoints": ("rotation", "translation", "expression", "canonical", "keypoints"),
    "renderer": ("image",),
}
ONNX_OPSET = 20  # GridSample on 5-D inputs (the 3D warp of f_s) exists in ONNX from opset 20 on


def _example_inputs(model: nn.Module, size: int) -> dict[str, tuple[Tensor, ...]]:
    generator = torch.Generator().manual_seed(0)
    source, driving = torch.rand(2, 1, 3, size, size, generator=generator)
    with torch.no_grad():
        rotation, _, _, canonical, keypoints = KeypointExtractor(model)(source)
        feature = model.appearance(source)
        pose = model.estimate_pose(driving)
    return {"appearance": (source,), "keypoints": (source,),
            "renderer": (feature, keypoints, rotation, canonical, pose["rotation"], pose["translation"],
                         pose["expression"])}


def _run_graph(path: Path, fmt: str, inputs: Sequence[Tensor], names: Sequence[str]) -> list[Tensor]:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {name: tensor.numpy() for name, tensor in zip(names, inputs)}
        return [torch.from_numpy(array) for array in session.run(None, feed)]
    if fmt == "torchscript":
        outputs = torch.jit.load(str(path))(*inputs)
    else:
        outputs = torch.export.load(str(path)).module()(*inputs)
    return [outputs] if isinstance(outputs, Tensor) else list(outputs)


def export_graphs(bundle: str | os.PathLike, formats: Sequence[str]) -> dict[str, Any]:
    """Adds OSFV's three per-frame graphs (appearance, keypoints, renderer; batch 1) to a bundle in each format,
    runs each on random inputs and records the largest absolute difference to PyTorch in the manifest.

    Raises:
        BundleError: the bundle is not OSFV's, or a format's tools are not installed.
    """
    from talkinghead.inference import load, read_manifest

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest["kind"] != "osfv":
        raise BundleError(f"graph export covers OSFV's extractor and renderer; {bundle} holds a {manifest['kind']} "
                          f"model (its bundle is model.safetensors + manifest.json, for talkinghead.inference.load)")
    unknown = [fmt for fmt in formats if fmt not in GRAPH_FORMATS]
    if unknown:
        raise BundleError(f"unknown graph format {unknown[0]!r}: choose from {', '.join(GRAPH_FORMATS)}")
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise BundleError("--format onnx needs onnx and onnxruntime: pip install 'talkinghead[export]'") from error
    model = load(bundle).float().requires_grad_(False)  # traced weights become constants, never grad leaves
    example = _example_inputs(model, manifest["image_size"])
    # In eval mode: the TorchScript-based ONNX exporter restores each wrapper's mode afterwards, recursively, so a
    # wrapper left in (the default) training mode would switch the networks' BatchNorm to batch statistics for every
    # later graph.
    wrappers = {"appearance": AppearanceEncoder(model).eval(), "keypoints": KeypointExtractor(model).eval(),
                "renderer": Renderer(model).eval()}
    with torch.no_grad():  # PyTorch's outputs, once per graph, for every format to be checked against
        reference = {name: wrapper(*example[name]) for name, wrapper in wrappers.items()}
    reference = {name: [out] if isinstance(out, Tensor) else list(out) for name, out in reference.items()}
    folder = bundle / "graphs"
    folder.mkdir(exist_ok=True)
    graphs = dict(manifest.get("graphs") or {})
    for fmt in formats:
        suffix = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "torch-export": ".pt2"}[fmt]
        for name, wrapper in wrappers.items():
            path, inputs, expected = folder / f"{name}{suffix}", example[name], reference[name]
            start = time.perf_counter()
            with torch.no_grad():
                try:
                    _save_graph(wrapper, inputs, path, fmt, name)
                except Exception as error:  # noqa: BLE001 - the exporters raise many types; name the op in one line
                    raise BundleError(f"the {name} graph does not export to {fmt}: "
                                      f"{str(error).strip().splitlines()[0]}") from error
            got = _run_graph(path, fmt, inputs, GRAPH_INPUTS[name])
            difference = max(float((a - b).abs().max()) for a, b in zip(got, expected))
            graphs[f"{name}.{fmt}"] = {
                "file": str(path.relative_to(bundle)), "format": fmt, "bytes": path.stat().st_size,
                "inputs": list(GRAPH_INPUTS[name]), "outputs": list(GRAPH_OUTPUTS[name]), "batch": 1,
                "max_abs_difference_to_pytorch": difference, "export_seconds": round(time.perf_counter() - start, 2),
                **({"opset": ONNX_OPSET, "checked_with": f"onnxruntime {_onnxruntime_version()}"} if fmt == "onnx"
                   else {}),
            }
    manifest["graphs"] = graphs
    _write_manifest(bundle, manifest)
    return graphs


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _antialiased_bilinear(g: Any, image: Any, output_size: Any, align_corners: Any, scale_factors: Any) -> Any:
    """ONNX for aten::_upsample_bilinear2d_aa (L's antialiased down-scaling of the image, which the TorchScript
    exporter has no symbolic for): Resize with mode linear and antialias=1 (ONNX opset >= 18), sizes fixed at export."""
    from torch.onnx import symbolic_helper

    shape = symbolic_helper._get_tensor_sizes(image)
    size = None if symbolic_helper._is_none(output_size) else symbolic_helper._maybe_get_const(output_size, "is")
    if size is None and not symbolic_helper._is_none(scale_factors):
        scales = symbolic_helper._maybe_get_const(scale_factors, "fs")
        if not symbolic_helper._is_value(scales) and None not in shape[2:]:
            size = [math.floor(side * scale) for side, scale in zip(shape[2:], scales)]  # as PyTorch sizes it
    if size is None or symbolic_helper._is_value(size) or None in shape[:2]:
        raise BundleError("antialiased resize with a size known only at run time does not export")
    sizes = g.op("Constant", value_t=torch.tensor([*shape[:2], *size], dtype=torch.int64))
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    mode = "align_corners" if symbolic_helper._maybe_get_const(align_corners, "b") else "pytorch_half_pixel"
    return g.op("Resize", image, empty, empty, sizes, mode_s="linear", antialias_i=1,
                coordinate_transformation_mode_s=mode)


def _save_graph(wrapper: nn.Module, inputs: tuple[Tensor, ...], path: Path, fmt: str, name: str) -> None:
    partial = path.with_name(path.name.replace(".", ".partial.", 1))  # keeps the suffix torch.export expects
    if fmt == "onnx":
        torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _antialiased_bilinear, ONNX_OPSET)
        with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, inputs, str(partial), opset_version=ONNX_OPSET, dynamo=False,
                              input_names=list(GRAPH_INPUTS[name]), output_names=list(GRAPH_OUTPUTS[name]))
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.jit.trace(wrapper, inputs, check_trace=False).save(str(partial))
    else:
        torch.export.save(torch.export.export(wrapper, inputs), str(partial))
    os.replace(partial, path)


def bundle_bytes(bundle: str | os.PathLike) -> int:
    """Bytes of the files a bundle needs (manifest and weights; graphs counted separately in the manifest)."""
    bundle = Path(bundle)
    return sum((bundle / name).stat().st_size for name in (MANIFEST, WEIGHTS))
