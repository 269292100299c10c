"""ValidationMetrics, ValidationMedia and Throughput: known answers on a fake module, and a tiny OSFV fit with an
offline WandbLogger."""

from importlib import resources
from types import SimpleNamespace

import av
import pytest
import torch

from talkinghead.callbacks import Throughput, ValidationMedia, ValidationMetrics
from talkinghead.callbacks.throughput import batch_length

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")


class Copier:
    """Stands in for a LightningModule: reconstruct_batch returns the driving frame exactly; log collects values."""

    device = torch.device("cpu")

    def __init__(self):
        self.logged = {}

    def reconstruct_batch(self, batch):
        return batch["driving"].clone()

    def log(self, key, value, **kwargs):
        self.logged[key] = float(value)


def run_validation(callback, module, batches):
    trainer = SimpleNamespace(sanity_checking=False)
    callback.on_validation_epoch_start(trainer, module)
    for index, batch in enumerate(batches):
        callback.on_validation_batch_end(trainer, module, None, batch, index)
    callback.on_validation_epoch_end(trainer, module)
    return module.logged


def val_batches(shards, image_size, batch_size):
    from talkinghead.datamodules.talking_heads import PairsDataModule

    data = PairsDataModule(shards=str(shards), val_shards=str(shards), image_size=image_size, batch_size=batch_size,
                           num_workers=0, val_samples=batch_size)
    data.setup("fit")
    return list(data.val_dataloader())


def test_perfect_reconstruction_scores_exactly():
    g = torch.Generator().manual_seed(0)
    batches = [{"source": torch.rand(3, 3, 64, 64, generator=g), "driving": torch.rand(3, 3, 64, 64, generator=g)}
               for _ in range(2)]
    logged = run_validation(ValidationMetrics(), Copier(), batches)
    assert logged["val/l1"] == 0 and logged["val/psnr"] == pytest.approx(100)
    assert logged["val/ssim"] == pytest.approx(1, abs=1e-5)
    assert logged["val/ms_ssim_3scale"] == pytest.approx(1, abs=1e-5) and "val/ms_ssim" not in logged
    assert 0.2 < logged["val/copy_source/l1"] < 0.5 and logged["val/copy_source/psnr"] < 10
    assert "val/akd" not in logged  # face metrics are off by default


def test_msssim_uses_five_scales_at_its_minimum_size_and_skips_tiny_images():
    from talkinghead.metrics import msssim_min_size

    side = msssim_min_size()
    logged = run_validation(ValidationMetrics(), Copier(), [{"source": torch.rand(1, 3, side, side),
                                                             "driving": torch.rand(1, 3, side, side)}])
    assert logged["val/ms_ssim"] == pytest.approx(1, abs=1e-5) and "val/ms_ssim_3scale" not in logged
    logged = run_validation(ValidationMetrics(), Copier(), [{"source": torch.rand(1, 3, 16, 16),
                                                             "driving": torch.rand(1, 3, 16, 16)}])
    assert "val/l1" in logged and not any(key.startswith("val/ms_ssim") for key in logged)


def test_face_metrics_on_synthetic_faces(synthetic_shards):
    batches = val_batches(synthetic_shards, image_size=128, batch_size=4)
    assert torch.isfinite(batches[0]["driving_landmarks"]).all()
    logged = run_validation(ValidationMetrics(face_metrics=True), Copier(), batches[:1])
    assert 0 <= logged["val/akd_miss_rate"] <= 1 and 0 <= logged["val/pose_error_miss_rate"] <= 1
    if logged["val/akd_miss_rate"] < 1:
        # The output is the ground truth, but dlib on synthetic 32 px faces upscaled to 128 px is rough (~10 px):
        # only finite and within the face.
        assert 0 <= logged["val/akd"] < 32 and 0 <= logged["val/akd_normalized"] < 1
        assert 0 <= logged["val/pose_error"] < 90
    # Rows without ground-truth landmarks are left out rather than counted as misses.
    unknown = {**batches[0], "driving_landmarks": torch.full_like(batches[0]["driving_landmarks"], float("nan"))}
    assert "val/akd" not in run_validation(ValidationMetrics(face_metrics=True), Copier(), [unknown])


def test_throughput_counts_samples_of_the_first_tensor():
    assert batch_length({"identity": ["a", "b"], "source": torch.zeros(5, 3)}) == 5
    assert batch_length([torch.tensor(1.0), (torch.zeros(2),)]) == 2
    callback, module = Throughput(window=2), Copier()
    for index in range(3):
        callback.on_train_batch_start(None, module, {"source": torch.zeros(4)}, index)
        callback.on_train_batch_end(None, module, None, {"source": torch.zeros(4)}, index)
    assert module.logged["train/samples_per_s"] > 0 and "train/peak_memory_gb" not in module.logged
    assert len(callback.samples) == 2


def test_tiny_osfv_fit_logs_metrics_and_media_to_offline_wandb(tmp_path, synthetic_shards, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from talkinghead.cli import TalkingHeadCLI

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cli = TalkingHeadCLI(args=[
        "--config", TINY, f"--data.init_args.shards={synthetic_shards}",
        f"--data.init_args.val_shards={synthetic_shards}", "--data.init_args.num_workers=0",
        "--data.init_args.samples_per_epoch=16", "--trainer.max_steps=4", "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ], run=False)
    media = ValidationMedia(max_images=3, max_frames=6)
    cli.trainer.callbacks.extend([ValidationMetrics(), media, Throughput(window=2)])
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="tests")
    cli.trainer.loggers = [logger]
    cli.trainer.fit(cli.model, cli.datamodule)
    logger.experiment.finish()

    metrics = {key: float(value) for key, value in cli.trainer.callback_metrics.items()}
    assert 0 < metrics["val/l1"] < 1 and 0 < metrics["val/psnr"] < 60
    assert -1 <= metrics["val/ssim"] <= 1 and 0 <= metrics["val/ms_ssim_3scale"] <= 1
    assert metrics["val/copy_source/l1"] > 0 and metrics["val/copy_source/psnr"] > 0
    assert metrics["train/samples_per_s"] > 0

    png, mp4 = (tmp_path / "media" / "epoch=000.png"), (tmp_path / "media" / "epoch=000.mp4")
    assert png.is_file() and mp4.is_file() and media.written == [png, mp4]
    with av.open(str(mp4)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (64, 3 * 64, 3)

    run_dirs = list(tmp_path.glob("wandb/offline-run-*/files/media"))
    assert len(run_dirs) == 1
    assert list(run_dirs[0].glob("images/val/samples_*.png"))
    assert list(run_dirs[0].glob("videos/val/animation_*.mp4"))


def test_metrics_and_media_read_few_shot_batches_through_reconstruct_batch(tmp_path):
    """FSTH/LPD validation batches hold references and a target, no source: the first reference is the baseline."""
    g = torch.Generator().manual_seed(3)
    batch = {"references": torch.rand(4, 2, 3, 16, 16, generator=g), "driving": torch.rand(4, 3, 16, 16, generator=g),
             "driving_landmarks": torch.rand(4, 68, 2, generator=g) * 16, "video": ["a", "b", "c", "d"]}
    logged = run_validation(ValidationMetrics(), Copier(), [batch])
    assert logged["val/l1"] == 0
    expected = (batch["references"][:, 0] - batch["driving"]).abs().mean()
    assert logged["val/copy_source/l1"] == pytest.approx(float(expected), rel=1e-5)

    seen = []

    class Recorder(Copier):
        def reconstruct_batch(self, batch):
            seen.append(batch)
            return batch["driving"].clone()

    media = ValidationMedia(max_images=2, max_frames=3, directory=str(tmp_path))
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, is_global_zero=True, loggers=[])
    media.on_validation_batch_end(trainer, Recorder(), None, batch, 0)
    media.on_validation_epoch_end(trainer, Recorder())
    grid_batch, video_batch = seen
    assert grid_batch["references"].shape[0] == 2
    # The video drives the first item's references with every kept item's landmarks.
    assert torch.equal(video_batch["references"], batch["references"][:1].expand(3, -1, -1, -1, -1))
    assert torch.equal(video_batch["driving_landmarks"], batch["driving_landmarks"][:3])
    with av.open(str(tmp_path / "epoch=000.mp4")) as container:
        assert len(list(container.decode(video=0))) == 3
