"""Tests of talkinghead.metrics: known answers of the pixel, landmark and pose metrics, refusal of the metrics whose
pretrained weights are absent, dlib identity embeddings on scikit-image photos, and a 2-process CPU DDP sync."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from talkinghead.datamodules import synthetic_heads as sh
from talkinghead.geometry import normalized_to_pixels
from talkinghead.metrics import (
    AED,
    AKD,
    CSIM,
    FID,
    L1,
    LPIPS,
    MSSSIM,
    MSSSIM_BETAS,
    PSNR,
    SSIM,
    FacenetEmbedder,
    MissingWeightsError,
    PoseError,
    metric_availability,
    msssim_min_size,
    pose_from_landmarks,
)

SIZE = 256


def random_images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def head_landmarks(count: int = 4, seed: int = 2024, **pose: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(landmarks (count, 68, 2) pixels of a SIZE image, labels (count, 6)) of synthetic people in one pose."""
    landmarks, labels = [], []
    for index in range(count):
        identity = sh.sample_identity(sh.identity_generator(seed, index))
        motion = sh.HeadMotion.still(**pose)
        landmarks.append(normalized_to_pixels(sh.landmarks_3d(identity, motion)[..., :2], SIZE))
        labels.append(motion.pose())
    return torch.cat(landmarks), torch.cat(labels)


# ----------------------------------------------------------------------------------------------------------------
# Pixel and structure metrics


def test_identical_images_give_the_ideal_scores():
    images = random_images(2, 3, 64, 64)
    for metric, expected in ((L1(), 0.0), (PSNR(), 100.0), (SSIM(), 1.0), (MSSSIM(betas=MSSSIM_BETAS[:3]), 1.0)):
        metric.update(images, images.clone())
        torch.testing.assert_close(metric.compute(), torch.tensor(expected), atol=1e-5, rtol=0)
    side = msssim_min_size()  # 176 px for the paper's 5 scales
    large = random_images(1, 3, side, side)
    metric = MSSSIM()
    metric.update(large, large.clone())
    torch.testing.assert_close(metric.compute(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_constant_offset_gives_its_l1_and_psnr_over_batches():
    l1, psnr = L1(), PSNR()
    for offset, seed in ((0.1, 0), (0.1, 1)):
        target = random_images(3, 3, 32, 32, seed=seed) * 0.8
        l1.update(target + offset, target)
        psnr.update(target + offset, target)
    torch.testing.assert_close(l1.compute(), torch.tensor(0.1), atol=1e-6, rtol=0)
    torch.testing.assert_close(psnr.compute(), torch.tensor(-20 * math.log10(0.1)), atol=1e-4, rtol=0)  # 20 dB


def test_msssim_refuses_images_too_small_for_its_scales():
    images = random_images(1, 3, 64, 64)
    with pytest.raises(ValueError, match="at least 176 x 176"):
        MSSSIM().update(images, images)
    assert msssim_min_size(11, 3) == 44
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert PSNR().compute().isnan()  # nothing seen yet


# ----------------------------------------------------------------------------------------------------------------
# Landmarks and pose


def test_akd_known_answers_and_nan_rows_are_misses():
    target, _ = head_landmarks(count=3, yaw=10.0)
    metric = AKD()
    metric.update(target.clone(), target)
    assert metric.compute()["akd"] == 0 and metric.compute()["akd_normalized"] == 0

    metric = AKD()
    shifted = target + torch.tensor([3.0, 4.0])
    shifted[1] = float("nan")  # no face found in the second frame
    metric.update(shifted, target)
    result = metric.compute()
    inter_ocular = (target[:, 36] - target[:, 45]).norm(dim=-1)[[0, 2]]
    torch.testing.assert_close(result["akd"], torch.tensor(5.0))
    torch.testing.assert_close(result["akd_normalized"], (5.0 / inter_ocular).mean())
    assert result["misses"] == 1 and result["miss_rate"] == pytest.approx(1 / 3)


def test_pose_error_known_difference_wraps_and_skips_nan_rows():
    target = torch.tensor([[10.0, -5.0, 0.0], [170.0, 0.0, 20.0], [0.0, 0.0, 0.0]])
    pred = torch.tensor([[12.0, -8.0, 1.0], [-176.0, 4.0, 14.0], [float("nan"), 0.0, 0.0]])
    metric = PoseError()
    metric.update(pred, target)
    result = metric.compute()
    # yaw: 2 and 14 (170 -> -176 across the +-180 seam); pitch: 3 and 4; roll: 1 and 6.
    torch.testing.assert_close(torch.stack([result["yaw"], result["pitch"], result["roll"]]),
                               torch.tensor([8.0, 3.5, 3.5]))
    torch.testing.assert_close(result["mean"], torch.tensor(5.0))
    assert result["misses"] == 1


def test_pose_from_synthetic_heads_landmarks_is_within_a_few_degrees():
    landmarks, labels = head_landmarks(count=8, yaw=25.0, pitch=-10.0, roll=8.0)
    metric = PoseError()
    metric.update(pose_from_landmarks(landmarks, SIZE), labels)  # (b, 6) labels: the angles are used
    result = metric.compute()
    # Measured over these 8 people: mean absolute error yaw 1.15, pitch 2.29, roll 0.82, overall 1.42 degrees
    # (max 2.5 / 5.2 / 2.3): each person's face shape differs from the fit's generic template (as in
    # tests/talkinghead/test_face.py).
    assert result["yaw"] < 2.0 and result["pitch"] < 4.0 and result["roll"] < 1.5 and result["mean"] < 2.5
    assert result["misses"] == 0


def test_a_known_rotation_of_a_synthetic_head_gives_that_pose_error():
    # An output turned 12 degrees further in yaw than its label (the same people, exact landmarks): the measured
    # pose error is the 12 degrees, up to the template error of the fit measured above.
    turned, _ = head_landmarks(count=8, yaw=22.0, pitch=-5.0, roll=4.0)
    _, labels = head_landmarks(count=8, yaw=10.0, pitch=-5.0, roll=4.0)
    metric = PoseError()
    metric.update(pose_from_landmarks(turned, SIZE), labels)
    result = metric.compute()
    assert abs(result["yaw"] - 12.0) < 2.0
    assert result["pitch"] < 4.0 and result["roll"] < 1.5


# ----------------------------------------------------------------------------------------------------------------
# Refusal without pretrained weights


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache with nothing in it, whatever the machine's cache holds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return tmp_path


def test_fid_and_lpips_refuse_without_weights(empty_hub):
    with pytest.raises(MissingWeightsError, match="inception_v3_google-0cc3c7bd.pth"):
        FID()
    with pytest.raises(MissingWeightsError, match="inception_v3_google-0cc3c7bd.pth"):
        FID(weights=empty_hub / "nowhere.pth")
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        LPIPS()
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        LPIPS(net_type="vgg")
    availability = metric_availability()
    assert availability["fid"].startswith("n/a (InceptionV3 weights absent")
    assert availability["lpips"].startswith("n/a (LPIPS backbone weights absent")
    assert set(availability) == {"fid", "lpips", "akd", "aed", "csim", "pose"}


def test_facenet_embedder_refuses_without_a_local_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="20180402-114759-vggface2.pt"):
        FacenetEmbedder(None)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        FacenetEmbedder(tmp_path / "missing.pt")


def test_lpips_and_fid_load_local_backbone_files(empty_hub):
    """The local-file path: random-init torchvision state dicts (values meaningless, only the loading is tested)."""
    torchvision = pytest.importorskip("torchvision")
    alexnet_file = empty_hub / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), alexnet_file)
    lpips = LPIPS(weights=alexnet_file)
    images = random_images(2, 3, 64, 64)
    lpips.update(images, images)
    assert lpips.compute() == pytest.approx(0.0, abs=1e-6)
    lpips.update(images, random_images(2, 3, 64, 64, seed=1))
    assert lpips.compute() > 0

    # The hub cache under torchvision's file name is found by the enum name.
    checkpoints = empty_hub / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
               checkpoints / "inception_v3_google-0cc3c7bd.pth")
    assert metric_availability()["fid"] is None
    fid = FID()
    fid.update(random_images(4, 3, 64, 64, seed=2), real=True)
    fid.update(random_images(4, 3, 64, 64, seed=3), real=False)
    assert torch.isfinite(fid.compute())


# ----------------------------------------------------------------------------------------------------------------
# Identity embeddings (dlib, offline) on scikit-image photos


@pytest.fixture(scope="module")
def dlib_embedder():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    pytest.importorskip("facenet_pytorch")
    from talkinghead.metrics import DlibFaceEmbedder

    return DlibFaceEmbedder()


def as_batch(image: np.ndarray) -> torch.Tensor:
    """(h, w, 3) or (h, w) uint8 -> (1, 3, h, w) float in [0, 1]."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def test_dlib_aed_and_csim_on_photos(dlib_embedder):
    data = pytest.importorskip("skimage.data")
    astronaut = as_batch(data.astronaut())
    cameraman = as_batch(data.camera())  # another person (grey, 512 x 512)
    moved = torch.roll(astronaut, shifts=(3, 2), dims=(2, 3)).mul(1.1).clamp(0, 1)  # shifted and 10% brighter
    blank = torch.zeros_like(astronaut)  # no face

    embeddings = dlib_embedder(torch.cat([astronaut, moved, cameraman, blank]))
    assert embeddings.shape == (4, 128) and embeddings[3].isnan().all() and embeddings[:3].isfinite().all()

    aed, csim = AED(), CSIM()  # fed embeddings
    aed.update(embeddings[[0, 0]], embeddings[[0, 3]])
    csim.update(embeddings[[0, 0]], embeddings[[0, 3]])
    assert aed.compute()["aed"] == 0 and csim.compute()["csim"] == pytest.approx(1.0, abs=1e-6)
    assert aed.compute()["misses"] == 1 and csim.compute()["miss_rate"] == 0.5

    def score(metric_type, first, second):
        metric = metric_type(dlib_embedder)  # fed images
        metric.update(first, second)
        return metric.compute()[metric_type.key].item()

    # Measured: AED 0.068 (CSIM 0.999) to the moved copy, 0.82 (CSIM 0.83) to the cameraman, above dlib's
    # same-person threshold of 0.6.
    same, other = score(AED, astronaut, moved), score(AED, astronaut, cameraman)
    assert same < 0.3 < 0.6 < other
    assert score(CSIM, astronaut, moved) > score(CSIM, astronaut, cameraman)

    # AKD through the same LandmarkExtractor: the moved copy's landmarks vs the astronaut's moved by (2, 3) px.
    landmarks = dlib_embedder.landmarks(torch.cat([astronaut, moved, blank]))
    assert landmarks.shape == (3, 68, 2) and landmarks[2].isnan().all()
    akd = AKD()
    akd.update(landmarks[1:], (landmarks[:1] + torch.tensor([2.0, 3.0])).expand(2, 68, 2))
    result = akd.compute()
    assert result["akd"] < 2.0 and result["misses"] == 1 and result["miss_rate"] == 0.5  # measured 0.56 px


# ----------------------------------------------------------------------------------------------------------------
# DDP: states are summed across processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pred images, target images, pred landmarks, target landmarks): 5 frames, split 2 + 3 over two ranks."""
    generator = torch.Generator().manual_seed(7)
    pred, target = torch.rand(5, 3, 16, 16, generator=generator), torch.rand(5, 3, 16, 16, generator=generator)
    target_landmarks = torch.rand(5, 68, 2, generator=generator) * 64
    pred_landmarks = target_landmarks + torch.randn(5, 68, 2, generator=generator)
    pred_landmarks[3] = float("nan")
    return pred, target, pred_landmarks, target_landmarks


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        pred, target, pred_landmarks, target_landmarks = _ddp_data()
        part = slice(0, 2) if rank == 0 else slice(2, 5)
        l1, akd = L1(), AKD()
        l1.update(pred[part], target[part])
        akd.update(pred_landmarks[part], target_landmarks[part])
        torch.save({"l1": l1.compute(), **akd.compute()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_sync_over_two_cpu_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    pred, target, pred_landmarks, target_landmarks = _ddp_data()
    l1, akd = L1(), AKD()
    l1.update(pred, target)
    akd.update(pred_landmarks, target_landmarks)
    expected = {"l1": l1.compute(), **akd.compute()}
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(result) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(result[key], value, msg=f"rank {rank}, {key}")
    assert expected["misses"] == 1
