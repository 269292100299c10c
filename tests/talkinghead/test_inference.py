"""Inference models, export bundles (loaded without Lightning), graph export and `talkinghead animate`."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.evaluation import load_model
from talkinghead.export import export_bundle
from talkinghead.flows import transform_keypoints
from talkinghead.geometry import rotation_matrix
from talkinghead.inference import BundleError, load
from talkinghead.lightning.slim import write_inference_checkpoint
from talkinghead.networks.osfv_model import OSFVModel, compose_driving_pose

CONFIGS = resources.files("talkinghead.lightning_configs")
DEFAULT_OSFV_CHECKPOINT = Path(str(resources.files("talkinghead.assets") / "osfv_tiny.ckpt"))  # the embedded default
QUIET = ["--trainer.enable_progress_bar=false", "--data.init_args.num_workers=0", "--trainer.logger=false"]


@pytest.fixture(scope="module")
def osfv():
    return load_model(DEFAULT_OSFV_CHECKPOINT)


def old_chain(networks, source, driving_pose_of, relative_reference=None, user=None):
    """The F -> L -> H/Δ -> keypoints -> M -> G chain as OSFVModule wrote it before OSFVModel (for bit-identity)."""
    def pose_of(image):
        pose = dict(networks["head_pose"](image))
        pose["rotation"] = rotation_matrix(pose["yaw"], pose["pitch"], pose["roll"])
        return pose

    feature = networks["appearance"](source)
    canonical = networks["canonical_keypoints"](source)["keypoints"]
    source_pose = pose_of(source)
    source_kp = transform_keypoints(canonical, source_pose["rotation"], source_pose["translation"],
                                    source_pose["expression"])
    driving_pose = pose_of(driving_pose_of)
    n = driving_pose_of.shape[0]
    if user is None:
        rotation, shift, expression = driving_pose["rotation"], driving_pose["translation"], driving_pose["expression"]
    else:
        reference = pose_of(relative_reference)
        rotation, shift, expression = compose_driving_pose(source_pose, driving_pose, reference, user, torch.zeros(3))
    driving_kp = transform_keypoints(canonical.expand(n, -1, -1), rotation, shift, expression)
    motion = networks["motion"](feature.expand(n, *feature.shape[1:]), source_kp.expand(n, -1, -1), driving_kp,
                                source_pose["rotation"].expand(n, -1, -1), rotation)
    return networks["generator"](feature.expand(n, *feature.shape[1:]), motion["deformation"], motion["occlusion"])


def test_osfv_model_gives_the_old_chain_bit_for_bit(osfv):
    model = osfv.inference_networks()
    assert isinstance(model, OSFVModel)
    generator = torch.Generator().manual_seed(0)
    source, driving = torch.rand(2, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        assert torch.equal(osfv.reconstruct(source, driving), old_chain(model, source, driving))
        frames = torch.rand(5, 3, 64, 64, generator=generator)
        user = rotation_matrix(*(torch.tensor(a) for a in (20.0, -5.0, 3.0)))
        expected = old_chain(model, source[:1], frames, relative_reference=frames[:1], user=user)
        assert torch.equal(osfv.animate(source[0], frames, yaw=20, pitch=-5, roll=3), expected)


@pytest.fixture(scope="module")
def osfv_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "osfv"
    return out, export_bundle(DEFAULT_OSFV_CHECKPOINT, out)


def test_osfv_bundle_loads_to_the_same_outputs_and_is_described(osfv, osfv_bundle):
    out, manifest = osfv_bundle
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors"]
    assert manifest["kind"] == "osfv" and manifest["image_size"] == 64 and manifest["num_keypoints"] == 10
    assert manifest["ema"] and manifest["format_version"] == 1
    assert "RGB in [0, 1], NCHW" in manifest["conventions"]["images"]
    assert all(spec["class_path"].startswith("talkinghead.networks.") for spec in manifest["networks"].values())
    model = load(out, kind="osfv")
    generator = torch.Generator().manual_seed(1)
    source, frames = torch.rand(1, 3, 64, 64, generator=generator), torch.rand(4, 3, 64, 64, generator=generator)
    assert torch.equal(model.animate(source, frames, yaw=15), osfv.animate(source, frames, yaw=15))
    assert torch.equal(model.reconstruct(source, frames[:1]), osfv.reconstruct(source, frames[:1]))


def test_a_bundle_loads_in_a_fresh_process_without_lightning(osfv, osfv_bundle, tmp_path):
    out, _ = osfv_bundle
    generator = torch.Generator().manual_seed(2)
    source, driving = torch.rand(1, 3, 64, 64, generator=generator), torch.rand(1, 3, 64, 64, generator=generator)
    torch.save({"source": source, "driving": driving}, tmp_path / "inputs.pt")
    script = f"""
import sys, torch
from talkinghead.inference import load
model = load({str(out)!r}, device="cpu")
inputs = torch.load({str(tmp_path / 'inputs.pt')!r}, weights_only=True)
torch.save(model.reconstruct(inputs["source"], inputs["driving"]), {str(tmp_path / 'output.pt')!r})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = torch.load(tmp_path / "output.pt", weights_only=True)
    assert torch.equal(output, osfv.reconstruct(source, driving))


def test_bundle_errors_are_clear(osfv_bundle, tmp_path):
    out, manifest = osfv_bundle
    with pytest.raises(BundleError, match="holds a model of kind osfv .*not lpd as asked"):
        load(out, kind="lpd")
    with pytest.raises(BundleError, match="not a talkinghead bundle"):
        load(tmp_path)
    for change, message in (({"format_version": 2}, "format version 2, newer than this talkinghead reads"),
                            ({"networks": {**manifest["networks"],
                                           "motion": {"class_path": "os.system", "init_args": {"command": "x"}}}},
                             "refusing to build os.system")):
        bundle = tmp_path / f"changed{len(message)}"
        bundle.mkdir()
        (bundle / "model.safetensors").symlink_to(out / "model.safetensors")
        (bundle / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(BundleError, match=message):
            load(bundle)
    with pytest.raises(BundleError, match="is not empty"):
        export_bundle(DEFAULT_OSFV_CHECKPOINT, out)


def test_export_command_writes_graphs_that_match_pytorch(tmp_path, run_talkinghead):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bundle"
    result = run_talkinghead("export", "--checkpoint", str(DEFAULT_OSFV_CHECKPOINT), "--out", str(out),
                             "--format", "onnx", "--format", "torch-export")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "osfv bundle" in result.stdout and "max |difference| to PyTorch" in result.stdout
    graphs = json.loads((out / "manifest.json").read_text())["graphs"]
    assert set(graphs) == {f"{name}.{fmt}" for name in ("appearance", "keypoints", "renderer")
                           for fmt in ("onnx", "torch-export")}
    for name, graph in graphs.items():
        assert (out / graph["file"]).is_file()
        # ONNX Resize's antialiasing filter differs from PyTorch's by ~1e-4 in L's input; the rest is float noise.
        assert graph["max_abs_difference_to_pytorch"] < 2e-3, (name, graph)
    assert not list(out.rglob("*.partial*"))

    refused = run_talkinghead("export", "--checkpoint", str(DEFAULT_OSFV_CHECKPOINT), "--out", str(tmp_path / "b2"),
                              "--kind", "lpd")
    assert refused.returncode == 2 and "not lpd as asked" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "b2").exists()


# -- FSTH and LPD, meta-learned and fine-tuned ---------------------------------------------------------------------


def fit(config: str, shards, root: Path, *extra: str) -> tuple[Path, TalkingHeadCLI]:
    cli = TalkingHeadCLI(args=["--config", config, f"--data.init_args.shards={shards}", *QUIET,
                               "--trainer.max_steps=2", f"--trainer.default_root_dir={root}", *extra], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    return next(root.glob("**/last.ckpt")), cli


@pytest.mark.slow
@pytest.mark.parametrize("paper", ["fsth", "lpd"])
def test_few_shot_bundles_reenact_like_their_modules_and_animate(paper, synthetic_shards, tmp_path, photo_and_video,
                                                                run_talkinghead, read_mp4):
    meta_ckpt, meta_cli = fit(str(CONFIGS / paper / "tiny_meta.yaml"), synthetic_shards, tmp_path / "meta")
    person_ckpt, person_cli = fit(str(CONFIGS / paper / "tiny_finetune.yaml"), synthetic_shards, tmp_path / "person",
                                  f"--model.init_args.init_from={meta_ckpt}")
    generator = torch.Generator().manual_seed(3)
    references, driving = torch.rand(4, 3, 64, 64, generator=generator), torch.rand(5, 3, 64, 64, generator=generator)
    landmarks = 16 + 32 * torch.rand(4, 68, 2, generator=generator)
    driving_landmarks = 16 + 32 * torch.rand(5, 68, 2, generator=generator)
    for checkpoint, kind, trained in ((meta_ckpt, paper, meta_cli.model), (person_ckpt, f"{paper}-person",
                                                                          person_cli.model)):
        module = load_model(checkpoint)
        manifest = export_bundle(checkpoint, tmp_path / kind)
        assert manifest["kind"] == kind
        weights = manifest["weights"]["bytes"]
        assert weights < checkpoint.stat().st_size / 2  # no discriminator, loss networks or optimizer state
        model = load(tmp_path / kind, kind=kind)
        if kind == "fsth":
            args = (references, landmarks, driving_landmarks)
        elif kind == "fsth-person":
            args = (driving_landmarks, 64)
        elif kind == "lpd":
            args = (references, driving)
        else:
            args = (driving,)
        assert torch.equal(model.reenact(*args), module.reenact(*args)), kind
        # A slim (inference-only) checkpoint keeps everything inference reads (LPD's frozen pose encoder too).
        slim = write_inference_checkpoint(trained, tmp_path / f"{kind}.slim.ckpt", 0, {"image_size": 64})
        assert torch.equal(load_model(slim).reenact(*args), module.reenact(*args)), kind

    # The fine-tuned person driven by a real video (FSTH through the video's dlib landmarks, LPD its frames).
    out = tmp_path / "person.mp4"
    result = run_talkinghead("animate", "--model", str(tmp_path / f"{paper}-person"), "--driving",
                             str(photo_and_video[1]), "--out", str(out), "--side-by-side")
    assert result.returncode == 0, result.stderr[-3000:]
    frames = read_mp4(out)
    assert len(frames) == 12 and frames[0].shape == (64, 128, 3)


# -- animate -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_and_video(tmp_path_factory):
    """scikit-image's astronaut (a real photo shipped in a PyPI package) and a driving mp4 made from it: the head
    tilting back and forth (frames rotated about the face)."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from talkinghead.callbacks.media import write_mp4

    folder = tmp_path_factory.mktemp("animate")
    image = skimage_data.astronaut()
    Image.fromarray(image).save(folder / "astronaut.png")
    frames = [np.asarray(Image.fromarray(image).rotate(8 * np.sin(i / 11 * 2 * np.pi), resample=Image.BILINEAR,
                                                        center=(250, 150)).resize((256, 256))) for i in range(12)]
    write_mp4(folder / "driving.mp4", np.stack(frames), fps=10)
    return folder / "astronaut.png", folder / "driving.mp4"


def test_animate_a_real_photo_end_to_end(osfv_bundle, photo_and_video, tmp_path, run_talkinghead, read_mp4):
    bundle, _ = osfv_bundle
    photo, video = photo_and_video
    out = tmp_path / "out.mp4"
    result = run_talkinghead("animate", "--model", str(bundle), "--source", str(photo), "--driving", str(video),
                             "--out", str(out), "--side-by-side", "--size", "128", "--yaw", "10")
    assert result.returncode == 0, result.stderr[-3000:]
    frames = read_mp4(out)
    assert len(frames) == 12 and frames[0].shape == (128, 256, 3)
    assert "frames/s synthesised" in result.stdout
    # The left half is the driving crop (a face, not the frame's background), the right the animated photo.
    driving, output = frames[0][:, :128].astype(float), frames[0][:, 128:].astype(float)
    assert driving.std() > 20 and output.std() > 10
    assert not list(tmp_path.glob("*.partial*"))


def test_animate_bad_input_exits_2_in_one_line_and_writes_nothing(osfv_bundle, photo_and_video, tmp_path,
                                                                   run_talkinghead):
    from PIL import Image

    bundle, _ = osfv_bundle
    photo, video = photo_and_video
    blank, broken = tmp_path / "blank.png", tmp_path / "broken.mp4"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    broken.write_bytes(b"not a video at all")
    fsth_like = tmp_path / "fsth_bundle"
    fsth_like.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    (fsth_like / "manifest.json").write_text(json.dumps({**manifest, "kind": "fsth"}))
    out = tmp_path / "out.mp4"
    cases = [
        (["--source", str(blank), "--driving", str(video)], "no face found in SOURCE: "),
        (["--source", str(photo), "--driving", str(broken)], "cannot read the video"),
        (["--source", str(photo), "--driving", str(tmp_path / "missing.mp4")], "no such file"),
    ]
    for args, message in cases:
        result = run_talkinghead("animate", "--model", str(bundle), *args, "--out", str(out))
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr[-2000:])
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not out.exists() and not list(tmp_path.glob("*.partial*"))
    result = run_talkinghead("animate", "--model", str(fsth_like), "--source", str(photo), "--driving", str(video),
                             "--out", str(out))
    assert result.returncode == 2 and "holds a model of kind fsth" in result.stderr and not out.exists()
