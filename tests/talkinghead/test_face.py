"""Tests of talkinghead.face: the weak-perspective head pose against synthetic ground truth, and MTCNN + dlib on
scikit-image's astronaut photo (public domain, shipped inside the scikit-image wheel)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from talkinghead.datamodules import synthetic_heads as sh
from talkinghead.face import (
    LANDMARK_WEIGHTS,
    fit_weak_perspective,
    generic_face_3d,
    head_pose_from_landmarks,
)
from talkinghead.geometry import matrix_to_angles, normalized_to_pixels, rotation_matrix
from talkinghead.landmarks import FLIP_PERMUTATION

SIZE = 256


def synthetic_people(count: int = 6, frames: int = 24, seed: int = 2024) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(landmarks (T, 68, 2) pixels of a SIZE image, pose labels (T, 6)) of synthetic people unlike the template's
    (another seed), with random poses (yaw +-40, pitch and roll +-20), translations, mouths and eyes."""
    generator = torch.Generator().manual_seed(seed)
    uniform = lambda limit, *shape: (torch.rand(*shape, generator=generator) * 2 - 1) * limit  # noqa: E731
    people = []
    for index in range(count):
        identity = sh.sample_identity(sh.identity_generator(seed, index))
        motion = sh.HeadMotion(
            yaw=uniform(40.0, frames),
            pitch=uniform(20.0, frames),
            roll=uniform(20.0, frames),
            translation=uniform(torch.tensor([0.08, 0.08, 0.1]), frames, 3),
            mouth=torch.rand(frames, generator=generator),
            eyes=torch.rand(frames, generator=generator),
        )
        landmarks = normalized_to_pixels(sh.landmarks_3d(identity, motion)[..., :2], SIZE)
        people.append((landmarks, motion.pose()))
    return people


# ----------------------------------------------------------------------------------------------------------------
# Pose


def test_generic_face_is_a_symmetric_synthetic_face_and_cached():
    template = generic_face_3d()
    assert template.shape == (68, 3) and template.dtype == torch.float32
    mirrored = template[list(FLIP_PERMUTATION)] * torch.tensor([-1.0, 1.0, 1.0])
    torch.testing.assert_close(mirrored, template)
    # The face looks towards -z: the nose tip is nearer the camera than the eye corners and the jaw.
    assert template[30, 2] < template[[36, 45], 2].min() < template[[0, 16], 2].min()
    template[:] = 0  # a clone: the cache is untouched
    assert generic_face_3d().abs().sum() > 0
    from talkinghead.face import GENERIC_FACE_3D

    torch.testing.assert_close(GENERIC_FACE_3D, generic_face_3d())


def test_template_pose_scale_and_translation_are_recovered_exactly():
    generator = torch.Generator().manual_seed(0)
    count = 64
    angles = (torch.rand(count, 3, generator=generator, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [70.0, 45.0, 45.0], dtype=torch.float64)
    scale = 0.6 + 0.8 * torch.rand(count, generator=generator, dtype=torch.float64)
    translation = (torch.rand(count, 3, generator=generator, dtype=torch.float64) * 2 - 1) * 0.3
    rotation = rotation_matrix(*angles.unbind(-1))
    points = scale[:, None, None] * (generic_face_3d().double() @ rotation.mT) + translation[:, None]
    landmarks = normalized_to_pixels(points[..., :2], SIZE)

    fit = fit_weak_perspective(landmarks, SIZE)
    recovered = torch.stack(matrix_to_angles(fit.rotation), dim=-1)
    torch.testing.assert_close(recovered, angles, atol=1e-4, rtol=0)  # measured ~1e-13 degrees
    torch.testing.assert_close(fit.scale, scale, atol=1e-9, rtol=0)
    torch.testing.assert_close(fit.translation, translation[:, :2], atol=1e-9, rtol=0)
    assert fit.residual.max() < 1e-9
    # Without Gauss-Newton steps the SVD projection of the affine fit is already exact on noiseless data.
    torch.testing.assert_close(fit_weak_perspective(landmarks, SIZE, iterations=0).rotation, rotation)

    pose = head_pose_from_landmarks(landmarks.float(), SIZE)
    assert pose.shape == (count, 6) and pose.dtype == torch.float32
    torch.testing.assert_close(pose[:, :3].double(), angles, atol=1e-3, rtol=0)  # float32 input: ~2e-5
    torch.testing.assert_close(pose[:, 3:5].double(), translation[:, :2], atol=1e-5, rtol=0)
    assert (pose[:, 5] == 0).all()  # tz: unobservable, the template's depth


def test_synthetic_people_poses_are_recovered_within_a_few_degrees():
    errors, residuals = [], []
    for landmarks, labels in synthetic_people():
        pose = head_pose_from_landmarks(landmarks, SIZE)
        errors.append((pose - labels)[:, :5].abs())
        residuals.append(fit_weak_perspective(landmarks, SIZE).residual)
    error = torch.cat(errors)
    # Measured on these 144 frames (6 people x 24 poses): yaw, pitch, roll max 2.3 / 8.4 / 4.5 degrees (mean
    # 0.7 / 2.3 / 0.7; one person's pitch is off by 4-8 degrees in every pose); tx, ty max 0.026 / 0.063
    # normalised units. Over 64 people x 32 poses of another seed: max 4.1 / 7.1 / 3.7, mean 0.8 / 1.6 / 0.6,
    # 99th percentile 3.1 / 6.1 / 2.8 degrees. The errors come from each person's shape (the solver is exact on
    # the template, above).
    assert error[:, 0].max() < 5.0 and error[:, 1].max() < 10.0 and error[:, 2].max() < 5.0
    assert error[:, 0].mean() < 1.5 and error[:, 1].mean() < 3.0 and error[:, 2].mean() < 1.0
    assert error[:, 3].max() < 0.04 and error[:, 4].max() < 0.08
    # A face fits to about a pixel at 256 px (measured at most 3.1); points that are not a face do not.
    assert torch.cat(residuals).max() < 4.0
    noise = torch.rand(8, 68, 2, generator=torch.Generator().manual_seed(1)) * SIZE
    assert fit_weak_perspective(noise, SIZE).residual.min() > 20.0


def test_mirrored_landmarks_flip_yaw_roll_and_tx():
    landmarks, labels = synthetic_people(count=2, frames=16)[1]
    # A horizontal flip of the image: x -> S - 1 - x in pixels, and the subject's left and right swap names.
    mirrored = landmarks[:, list(FLIP_PERMUTATION)] * torch.tensor([-1.0, 1.0]) + torch.tensor([SIZE - 1.0, 0.0])
    pose, flipped = head_pose_from_landmarks(landmarks, SIZE), head_pose_from_landmarks(mirrored, SIZE)
    torch.testing.assert_close(flipped, pose * torch.tensor([-1.0, 1.0, -1.0, -1.0, 1.0, 1.0]), atol=1e-3, rtol=0)
    # And the signs are the package's: a head turned by positive yaw has its nose tip left of the eyes on screen.
    identity = sh.sample_identity(sh.identity_generator(2024, 0))
    turned = normalized_to_pixels(sh.landmarks_3d(identity, sh.HeadMotion.still(yaw=30.0))[..., :2], SIZE)
    assert turned[0, 30, 0] < (turned[0, 39, 0] + turned[0, 42, 0]) / 2
    assert head_pose_from_landmarks(turned, SIZE)[0, 0] > 25


def test_frames_without_landmarks_get_nan_and_leave_the_others_alone():
    landmarks = synthetic_people(count=1, frames=4)[0][0]
    holed = landmarks.clone()
    holed[2, 10] = float("nan")
    pose, reference = head_pose_from_landmarks(holed, SIZE), head_pose_from_landmarks(landmarks, SIZE)
    assert pose[2].isnan().all()
    torch.testing.assert_close(pose[[0, 1, 3]], reference[[0, 1, 3]])
    with pytest.raises(ValueError):
        fit_weak_perspective(landmarks[..., :40, :], SIZE)  # 40 points need their own template and weights
    assert LANDMARK_WEIGHTS.shape == (68,) and LANDMARK_WEIGHTS[60:].sum() == 0  # inner lips move with speech


# ----------------------------------------------------------------------------------------------------------------
# Detection and landmarks on a real photo

# Where the astronaut's face is in skimage.data.astronaut() (512 x 512), checked by eye: brows to chin, ear to ear.
ASTRONAUT_FACE = np.array([180.0, 60.0, 270.0, 175.0])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("facenet_pytorch")
    from talkinghead.face import FaceDetector

    return FaceDetector(batch_size=2)  # small batches, so a batch of 3 frames runs in two chunks


@pytest.fixture(scope="module")
def predictor():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from talkinghead.face import LandmarkPredictor

    return LandmarkPredictor()


@pytest.fixture(scope="module")
def astronaut_face(astronaut, detector, predictor) -> tuple[np.ndarray, np.ndarray]:
    """(box (4,), landmarks (68, 2)) of the astronaut's face."""
    (faces,) = detector.detect(astronaut[None])
    assert len(faces) == 1
    return faces.boxes[0], predictor.predict(astronaut, faces.boxes[0])


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The image moved by (dx, dy) pixels, uncovered pixels black."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[max(-dy, 0) : h - max(dy, 0),
                                                                          max(-dx, 0) : w - max(dx, 0)]
    return out


def test_astronaut_has_one_face_where_it_is(astronaut, detector, astronaut_face):
    (faces,) = detector.detect(astronaut[None])
    assert faces.boxes.shape == (1, 4) and faces.scores.shape == (1,) and faces.points.shape == (1, 5, 2)
    assert faces.boxes.dtype == faces.scores.dtype == faces.points.dtype == np.float32
    assert faces.scores[0] > 0.99
    np.testing.assert_allclose(faces.boxes[0], ASTRONAUT_FACE, atol=12)  # measured (179, 60, 267, 171)
    x1, y1, x2, y2 = faces.boxes[0]
    points = faces.points[0]
    assert ((points >= [x1, y1]) & (points <= [x2, y2])).all()
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # subject's right eye / mouth corner first

    _, landmarks = astronaut_face
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    assert (landmarks == np.round(landmarks)).all()  # dlib's whole-pixel indices, our convention as they are
    assert ((landmarks >= ASTRONAUT_FACE[:2] - 5) & (landmarks <= ASTRONAUT_FACE[2:] + 5)).all()
    # The iBUG layout: eyes above the nose tip above the mouth above the chin, the right eye on image left.
    eye_right, eye_left = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    assert eye_right[0] < landmarks[30, 0] < eye_left[0]
    assert max(eye_right[1], eye_left[1]) < landmarks[30, 1] < landmarks[62, 1] < landmarks[8, 1]
    # MTCNN's eyes agree with dlib's to a few pixels (both in the package's pixel convention).
    np.testing.assert_allclose(points[:2], np.stack([eye_right, eye_left]), atol=4)


@pytest.mark.parametrize("dx, dy", [(37, -21), (-50, 30)])
def test_a_shifted_photo_shifts_the_box_and_the_landmarks(astronaut, detector, predictor, astronaut_face, dx, dy):
    box, landmarks = astronaut_face
    image = shifted(astronaut, dx, dy)
    (faces,) = detector.detect(image[None])
    assert len(faces) == 1
    # MTCNN's image pyramid does not move by whole cells, so its box jitters by a few pixels (measured up to 3 px
    # on these shifts, 5 px on others); dlib, started from the re-fitted box, follows to a pixel or two.
    np.testing.assert_allclose(faces.boxes[0], box + [dx, dy, dx, dy], atol=6)
    np.testing.assert_allclose(predictor.predict(image, faces.boxes[0]), landmarks + [dx, dy], atol=2)


def test_blank_frames_have_no_faces_in_a_mixed_batch(astronaut, detector):
    blank = np.zeros_like(astronaut)
    results = detector.detect(np.stack([blank, astronaut, blank]))  # two chunks of batch_size=2
    assert [len(faces) for faces in results] == [0, 1, 0]
    empty = results[0]
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,) and empty.points.shape == (0, 5, 2)
    assert empty.boxes.dtype == np.float32


def test_a_half_size_photo_halves_the_box_and_the_landmarks(astronaut, detector, predictor, astronaut_face):
    box, landmarks = astronaut_face
    # 2 x 2 pixel means: small pixel i covers big pixels 2i and 2i + 1, whose centres average to 2i + 0.5.
    small = astronaut.reshape(256, 2, 256, 2, 3).mean((1, 3)).round().astype(np.uint8)
    half = lambda pixels: (pixels - 0.5) / 2  # noqa: E731
    (faces,) = detector.detect(small[None])
    assert len(faces) == 1
    np.testing.assert_allclose(faces.boxes[0], half(box), atol=3)  # measured 1.8 px
    small_landmarks = predictor.predict(small, faces.boxes[0])
    np.testing.assert_allclose(small_landmarks, half(landmarks), atol=2)  # measured 1.25 px, mean 0.33


def test_predict_many_and_missing_boxes(astronaut, predictor, astronaut_face):
    box, landmarks = astronaut_face
    boxes = np.stack([box, np.full(4, np.nan)])
    many = predictor.predict_many(np.stack([astronaut, astronaut]), boxes)
    assert many.shape == (2, 68, 2) and many.dtype == np.float32
    np.testing.assert_array_equal(many[0], landmarks)
    assert np.isnan(many[1]).all()
    # The box re-fit makes the result nearly independent of where in the face the box starts.
    nudged = predictor.predict(astronaut, box + [-8, 10, -2, 4])
    np.testing.assert_allclose(nudged, landmarks, atol=2)


def test_astronaut_pose_is_plausible(astronaut_face):
    _, landmarks = astronaut_face
    fit = fit_weak_perspective(torch.from_numpy(landmarks[None]), 512)
    yaw, pitch, roll = (angle.item() for angle in matrix_to_angles(fit.rotation))
    # She looks into the camera; measured yaw -0.5, pitch -5.4, roll 3.0 degrees, residual 3.8 px.
    assert abs(yaw) < 30 and abs(pitch) < 30 and abs(roll) < 20
    assert fit.residual.item() < 8.0
    pose = head_pose_from_landmarks(torch.from_numpy(landmarks[None]), 512)
    torch.testing.assert_close(pose[0, :3], torch.tensor([yaw, pitch, roll]))


# ----------------------------------------------------------------------------------------------------------------
# Optional dependencies


def test_import_does_not_need_the_optional_dependencies():
    code = ("import sys, talkinghead.face; "
            "assert not {'facenet_pytorch', 'dlib', 'face_recognition_models'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("missing, build", [
    ("facenet_pytorch", lambda face: face.FaceDetector()),
    ("dlib", lambda face: face.LandmarkPredictor()),
])
def test_missing_dependencies_say_how_to_install_them(monkeypatch, missing, build):
    import talkinghead.face as face

    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "talkinghead\[face\]"'):
        build(face)
