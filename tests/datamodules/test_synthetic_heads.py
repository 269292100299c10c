"""Tests of the procedural synthetic talking heads: shapes, determinism, and that the geometry (pose, landmarks,
part labels) is exact and follows the package conventions."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from talkinghead.datamodules import synthetic_heads as sh
from talkinghead.datamodules.shard_format import decode_clip, expand_shards, iter_shard_samples, read_index
from talkinghead.geometry import normalized_to_pixels, rotation_matrix


def person(index: int, seed: int = 0) -> tuple[sh.HeadIdentity, sh.Scene]:
    identity = sh.sample_identity(sh.identity_generator(seed, index))
    return identity, sh.sample_scene(sh.identity_generator(seed, index, 0))


def posed(yaw, pitch=0.0, roll=0.0, translation=None, mouth=0.3, eyes=1.0) -> sh.HeadMotion:
    """A motion with one frame per entry of yaw (and of the other arguments, when given as lists)."""
    yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
    full = lambda value: torch.as_tensor(value, dtype=torch.float32).expand(len(yaw)).clone()  # noqa: E731
    if translation is None:
        translation = torch.zeros(len(yaw), 3)
    return sh.HeadMotion(yaw, full(pitch), full(roll), torch.as_tensor(translation, dtype=torch.float32),
                         full(mouth), full(eyes))


def labels_at(clip: sh.RenderedClip, indices: list[int]) -> torch.Tensor:
    """(T, len(indices)) part labels of the pixels nearest to the given landmarks."""
    size = clip.parts.shape[-1]
    pixel = clip.landmarks[:, indices].round().long().clamp(0, size - 1)
    frames = torch.arange(len(pixel))[:, None]
    return clip.parts[frames, pixel[..., 1], pixel[..., 0]]


def identities_equal(a: sh.HeadIdentity, b: sh.HeadIdentity) -> bool:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if not (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y):
            return False
    return True


def test_shapes_dtypes_and_ranges():
    identity, scene = person(0)
    motion = sh.sample_motion(6, sh.identity_generator(0, 0, 0))
    clip = sh.render_clip(identity, motion, scene, 48)
    assert clip.frames.shape == (6, 48, 48, 3) and clip.frames.dtype == torch.uint8
    assert clip.landmarks.shape == (6, 68, 2) and clip.landmarks.dtype == torch.float32
    assert clip.pose.shape == (6, 6) and clip.pose.dtype == torch.float32
    assert clip.mask.shape == (6, 48, 48) and clip.mask.dtype == torch.uint8
    assert clip.parts.shape == (6, 48, 48) and clip.parts.dtype == torch.int64
    assert set(clip.mask.unique().tolist()) <= {0, 1}
    assert 0 <= int(clip.parts.min()) and int(clip.parts.max()) < len(sh.PART_NAMES)
    assert torch.equal(clip.pose, motion.pose())
    # The person is in the picture, with room around: landmarks inside, background in the top corners.
    assert bool(((clip.landmarks > 0) & (clip.landmarks < 47)).all())
    assert bool((clip.mask[:, :4, :4] == 0).all())
    assert 0.15 < float(clip.mask.float().mean()) < 0.8
    # Frames are not flat colour: the head is shaded and textured.
    assert float(clip.frames.float().std()) > 10


def test_mask_is_everything_but_background():
    identity, scene = person(1)
    clip = sh.render_clip(identity, sh.sample_motion(4, sh.identity_generator(0, 1, 0)), scene, 64)
    assert torch.equal(clip.mask.bool(), clip.parts != sh.BACKGROUND)
    assert {sh.SKIN, sh.HAIR, sh.EYE, sh.NOSE, sh.LIPS, sh.NECK, sh.CLOTHES} <= set(clip.parts.unique().tolist())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_motion_stays_in_range(seed):
    motion = sh.sample_motion(250, torch.Generator().manual_seed(seed), fps=25.0)
    assert float(motion.yaw.abs().max()) <= 45 + 1e-4
    assert float(motion.pitch.abs().max()) <= 20 + 1e-4 and float(motion.roll.abs().max()) <= 20 + 1e-4
    assert float(motion.translation[:, :2].abs().max()) <= 0.1
    assert 0 <= float(motion.mouth.min()) and float(motion.mouth.max()) <= 1
    assert 0 <= float(motion.eyes.min()) and float(motion.eyes.max()) <= 1
    # Smooth: at 25 fps no angle jumps by more than a few degrees between frames.
    assert float(motion.pose()[:, :3].diff(dim=0).abs().max()) < 8
    assert float(motion.eyes.min()) == 0.0  # ten seconds hold at least one blink


def test_same_seed_same_clip():
    clips = []
    for _ in range(2):
        identity, scene = person(3, seed=11)
        motion = sh.sample_motion(5, sh.identity_generator(11, 3, 0))
        clips.append(sh.render_clip(identity, motion, scene, 32))
    for field in ("frames", "landmarks", "pose", "mask", "parts"):
        assert torch.equal(getattr(clips[0], field), getattr(clips[1], field))
    assert not identities_equal(person(3, seed=11)[0], person(4, seed=11)[0])
    assert not identities_equal(person(3, seed=11)[0], person(3, seed=12)[0])


@pytest.mark.parametrize("rays", [2, 4, 9])
def test_antialiasing_changes_colour_only(rays):
    identity, scene = person(2)
    motion = sh.sample_motion(3, sh.identity_generator(0, 2, 0))
    sharp, smooth = (sh.render_clip(identity, motion, scene, 64, supersample=s) for s in (1, rays))
    assert torch.equal(sharp.parts, smooth.parts) and torch.equal(sharp.landmarks, smooth.landmarks)
    difference = (sharp.frames.float() - smooth.frames.float()).abs()
    assert float(difference.mean()) < 6 and float(difference.max()) > 0
    # Away from edges the filter leaves flat colour alone: the top-left corner is plain background.
    assert float(difference[:, :3, :3].max()) <= 1


def test_antialiasing_needs_a_known_ray_count():
    identity, scene = person(2)
    for rays in (0, 3):
        with pytest.raises(ValueError, match="supersample"):
            sh.render_clip(identity, sh.HeadMotion.still(1), scene, 16, supersample=rays)


def test_landmarks_move_exactly_with_the_pose():
    identity, _ = person(5)
    rest = sh.landmarks_3d(identity, posed(0.0))[0]
    yaw, pitch, roll = torch.tensor([30.0, -40.0]), torch.tensor([-12.0, 20.0]), torch.tensor([8.0, -15.0])
    translation = torch.tensor([[0.05, -0.03, 0.2], [-0.08, 0.06, -0.1]])
    moved = sh.landmarks_3d(identity, posed(yaw, pitch, roll, translation))
    expected = rest @ rotation_matrix(yaw, pitch, roll).mT + translation[:, None]
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)
    # The rendered clip reports their projections in pixels.
    _, scene = person(5)
    clip = sh.render_clip(identity, posed(yaw, pitch, roll, translation), scene, 40)
    torch.testing.assert_close(clip.landmarks, normalized_to_pixels(moved[..., :2], 40))


def test_positive_yaw_turns_the_nose_to_image_left():
    identity, scene = person(6)
    clip = sh.render_clip(identity, posed([0.0, 30.0, -30.0]), scene, 128)
    nose_x = clip.landmarks[:, 30, 0]
    assert nose_x[1] < nose_x[0] - 5 and nose_x[2] > nose_x[0] + 5
    # In the picture too: the nose pixels sit left of the face's middle under positive yaw.
    columns = torch.arange(128.0)
    for frame, side in ((1, -1), (2, 1)):
        nose = (clip.parts[frame] == sh.NOSE).float()
        face = ((clip.parts[frame] != sh.BACKGROUND) & (clip.parts[frame] != sh.CLOTHES)
                & (clip.parts[frame] != sh.NECK)).float()
        nose_centre = float((nose.sum(0) * columns).sum() / nose.sum())
        face_centre = float((face.sum(0) * columns).sum() / face.sum())
        assert side * (nose_centre - face_centre) > 3


@pytest.mark.parametrize("frame", [0, 29])
def test_one_frame_rerendered_alone_is_the_clip_frame(frame):
    # Person 3, clip 1 of seed 3 has a drifting background: the frame must be drawn at its own time.
    clip = sh.synthetic_clip(3, 3, 1, frames=30, size=32)
    one = sh.synthetic_frame(3, 3, 1, 30, frame, 32)
    for name in ("frames", "landmarks", "pose", "mask", "parts"):
        torch.testing.assert_close(getattr(one, name), getattr(clip, name)[frame:frame + 1], atol=0, rtol=0)
    # Its own pose given explicitly changes nothing; another pose moves the head and keeps the expression.
    again = sh.synthetic_frame(3, 3, 1, 30, frame, 32, pose=clip.pose[frame])
    assert torch.equal(again.frames, one.frames)
    pose = clip.pose[frame] + torch.tensor([20.0, 0, 0, 0, 0, 0])
    turned = sh.synthetic_frame(3, 3, 1, 30, frame, 32, pose=pose)
    assert torch.equal(turned.pose[0], pose)
    assert (turned.frames.float() - one.frames.float()).abs().mean() > 2
    assert turned.landmarks[0, 30, 0] < one.landmarks[0, 30, 0] - 1  # positive yaw: nose to image left
    with pytest.raises(ValueError, match="outside the clip"):
        sh.synthetic_frame(3, 3, 1, 30, 30, 32)


def test_landmarks_lie_on_the_features_they_name():
    generator = torch.Generator().manual_seed(5)
    for index in range(6):
        identity, scene = person(index, seed=3)
        frames = 6
        uniform = lambda limit, *shape: (torch.rand(frames, *shape, generator=generator) * 2 - 1) * limit  # noqa: E731
        mouth = torch.rand(frames, generator=generator)
        motion = posed(uniform(30), uniform(15), uniform(20), uniform(0.08, 3), mouth=mouth)
        clip = sh.render_clip(identity, motion, scene, 256, supersample=1)
        assert bool((labels_at(clip, [30]) == sh.NOSE).all()), f"person {index}: nose tip off the nose"
        eyes = labels_at(clip, list(range(36, 48)))
        assert bool((eyes == sh.EYE).all()), f"person {index}: eye landmarks off the eyes: {eyes.tolist()}"
        brows = labels_at(clip, list(range(17, 27)))
        assert float((brows == sh.BROW).float().mean()) > 0.9
        lips = labels_at(clip, [49, 50, 51, 52, 53, 55, 56, 57, 58, 59])
        assert float((lips == sh.LIPS).float().mean()) > 0.9


def test_mouth_and_eyelids_follow_the_expression():
    identity, scene = person(7)
    clip = sh.render_clip(identity, posed([0.0, 0.0], mouth=[0.0, 1.0], eyes=[1.0, 0.0]), scene, 128)
    gap = (clip.landmarks[:, 66, 1] - clip.landmarks[:, 62, 1]).tolist()
    assert abs(gap[0]) < 1e-4 and gap[1] > 2  # closed lips meet; open, the inner lips part
    assert int((clip.parts[0] == sh.MOUTH).sum()) == 0 and int((clip.parts[1] == sh.MOUTH).sum()) > 10
    lid = (clip.landmarks[:, [40, 41], 1] - clip.landmarks[:, [38, 37], 1]).abs()
    assert float(lid[0].min()) > 1 and float(lid[1].max()) < 1e-4  # shut eyes: lids meet
    assert int((clip.parts[1] == sh.EYE).sum()) < int((clip.parts[0] == sh.EYE).sum()) / 2


def test_person_does_not_depend_on_how_many_are_written(tmp_path):
    kwargs = dict(clips_per_identity=1, frames=2, size=32, seed=4, clips_per_shard=8)
    sh.write_synthetic_shards(tmp_path / "three", identities=3, **kwargs)
    sh.write_synthetic_shards(tmp_path / "one", identities=1, **kwargs)
    sh.write_synthetic_shards(tmp_path / "third", identities=1, first_identity=2, **kwargs)

    def clips(folder):
        return {decode_clip(s).meta.video: decode_clip(s) for url in expand_shards(str(folder))
                for s in iter_shard_samples(url)}

    three, one, third = clips(tmp_path / "three"), clips(tmp_path / "one"), clips(tmp_path / "third")
    assert list(one) == ["synth-00000-v000"] and list(third) == ["synth-00002-v000"]
    np.testing.assert_array_equal(one["synth-00000-v000"].frames, three["synth-00000-v000"].frames)
    np.testing.assert_array_equal(third["synth-00002-v000"].frames, three["synth-00002-v000"].frames)
    assert not np.array_equal(three["synth-00000-v000"].frames, three["synth-00001-v000"].frames)


def test_shards_round_trip(tmp_path):
    paths = sh.write_synthetic_shards(tmp_path, identities=2, clips_per_identity=2, frames=3, size=32, seed=9,
                                      clips_per_shard=3)
    assert [p.name for p in paths] == ["synth-000000.tar", "synth-000001.tar"]
    samples = [s for url in expand_shards(str(tmp_path)) for s in iter_shard_samples(url)]
    assert [s["__key__"] for s in samples] == ["synth-00000/v000", "synth-00000/v001", "synth-00001/v000",
                                               "synth-00001/v001"]
    assert all("frames.npy" in s for s in samples)  # "auto" stores small frames losslessly
    entries = [e for p in paths for e in read_index(str(p))]
    assert [(e.identity, e.video, e.num_frames) for e in entries][1] == ("synth-00000", "synth-00000-v001", 3)
    for sample in samples:
        clip = decode_clip(sample)
        i, c = clip.meta.extra["identity_index"], clip.meta.extra["clip_index"]
        expected = sh.synthetic_clip(9, i, c, frames=3, size=32)
        np.testing.assert_array_equal(clip.frames, expected.frames.numpy())
        np.testing.assert_array_equal(clip.landmarks, expected.landmarks.numpy())
        np.testing.assert_array_equal(clip.pose, expected.pose.numpy())
        np.testing.assert_array_equal(clip.mask, expected.mask.numpy())
        assert clip.meta.identity == f"synth-{i:05d}" and clip.meta.video == f"synth-{i:05d}-v{c:03d}"
        assert clip.meta.source == "synthetic" and clip.meta.size == 32 and clip.meta.fps == 25.0
        assert clip.meta.preprocessing == "talkinghead.synthetic_heads v1" and clip.meta.extra["seed"] == 9
    meta = json.loads(samples[0]["meta.json"])
    assert meta["num_frames"] == 3


def test_same_seed_same_shards(tmp_path):
    for name in ("a", "b"):
        sh.write_synthetic_shards(tmp_path / name, identities=2, clips_per_identity=1, frames=2, size=16, seed=5)
    a, b = (sorted((tmp_path / name).glob("*.tar")) for name in ("a", "b"))
    assert len(a) == len(b) == 1
    first, second = (list(iter_shard_samples(str(p[0]))) for p in (a, b))
    assert first == [dict(s, __url__=first[i]["__url__"]) for i, s in enumerate(second)]


def test_large_frames_are_stored_as_mp4(tmp_path):
    sh.write_synthetic_shards(tmp_path, identities=1, clips_per_identity=1, frames=2, size=132, seed=0,
                              supersample=1)
    (sample,) = iter_shard_samples(expand_shards(str(tmp_path))[0])
    assert "frames.mp4" in sample
    clip = decode_clip(sample)
    expected = sh.synthetic_clip(0, 0, 0, frames=2, size=132, supersample=1)
    assert clip.frames.shape == (2, 132, 132, 3)
    assert np.abs(clip.frames.astype(float) - expected.frames.numpy()).mean() < 6  # lossy, but the same picture
