import random

import numpy as np
import pytest
import torch

from talkinghead.datamodules.transforms import Augment, ColorJitter, clip_to_frames, hflip, select
from talkinghead.geometry import rotation_matrix
from talkinghead.landmarks import FLIP_PERMUTATION, GROUPS


def test_flip_permutation_is_an_involution_that_swaps_sides():
    permutation = np.array(FLIP_PERMUTATION)
    np.testing.assert_array_equal(permutation[permutation], np.arange(68))
    assert [permutation[i] for i in GROUPS["right_eye"]] == [45, 44, 43, 42, 47, 46]
    assert [permutation[i] for i in GROUPS["right_brow"]] == list(reversed(GROUPS["left_brow"]))
    assert permutation[30] == 30 and permutation[8] == 8 and permutation[0] == 16
    assert [permutation[i] for i in GROUPS["inner_lips"]] == [64, 63, 62, 61, 60, 67, 66, 65]


def test_hflip_mirrors_images_masks_and_landmarks_with_remapping(random_clip):
    frames = clip_to_frames(random_clip(0, size=16), 16)
    flipped = hflip(frames)
    torch.testing.assert_close(flipped["image"], frames["image"].flip(-1))
    torch.testing.assert_close(flipped["mask"], frames["mask"].flip(-1))
    # Landmark 36 (the subject's right outer eye corner) of the mirror image is where 45 was, mirrored.
    original, mirrored = frames["landmarks"], flipped["landmarks"]
    torch.testing.assert_close(mirrored[:, 36, 0], 15 - original[:, 45, 0])
    torch.testing.assert_close(mirrored[:, 36, 1], original[:, 45, 1])
    back = hflip(flipped)
    for name in frames:
        torch.testing.assert_close(back[name], frames[name])


def test_hflip_pose_equals_the_mirrored_rotation(random_clip):
    frames = clip_to_frames(random_clip(1), 16)
    frames["pose"][:, :3] = torch.tensor([[30.0, -12.0, 8.0]]).repeat(frames["pose"].shape[0], 1)
    flipped = hflip(frames)["pose"]
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    rotation = rotation_matrix(*frames["pose"][:, :3].unbind(-1))
    torch.testing.assert_close(rotation_matrix(*flipped[:, :3].unbind(-1)), mirror @ rotation @ mirror)
    torch.testing.assert_close(flipped[:, 3:], frames["pose"][:, 3:] * torch.tensor([-1.0, 1.0, 1.0]))


def test_resize_scales_landmarks_with_pixel_centres(random_clip):
    clip = random_clip(2, size=16)
    clip.landmarks[:] = np.array([0.0, 15.0], dtype=np.float32)
    # Pixel 0 of 16 covers pixels 0-1 of 32 (centre 0.5); pixel 15 covers 30-31 (centre 30.5).
    frames = clip_to_frames(clip, 32)
    assert frames["image"].shape[-2:] == (32, 32) and frames["mask"].shape[-2:] == (32, 32)
    np.testing.assert_allclose(frames["landmarks"][0, 0].numpy(), [0.5, 30.5])
    assert 0.0 <= frames["image"].min() and frames["image"].max() <= 1.0


def test_missing_pose_and_mask_become_nan(random_clip):
    frames = clip_to_frames(random_clip(0, pose=False, mask=False), 16)
    assert frames["pose"].isnan().all() and frames["mask"].isnan().all()


@pytest.mark.parametrize("seed", range(3))
def test_colour_jitter_is_the_same_for_every_frame_of_a_sample(seed, random_clip):
    frames = clip_to_frames(random_clip(0), 16)
    image = frames["image"][:1].repeat(3, 1, 1, 1)
    jittered = ColorJitter(0.3, 0.3, 0.3, 0.1)(image, random.Random(seed))
    assert not torch.allclose(jittered, image)
    torch.testing.assert_close(jittered[1], jittered[0])
    torch.testing.assert_close(jittered[2], jittered[0])
    assert 0.0 <= jittered.min() and jittered.max() <= 1.0


def test_augment_flips_all_frames_together(random_clip):
    frames = clip_to_frames(random_clip(0), 16)
    flipped = Augment(flip_probability=1.0)(frames, random.Random(0))
    torch.testing.assert_close(select(flipped, [1, 0])["image"], select(frames, [1, 0])["image"].flip(-1))
    unchanged = Augment(flip_probability=0.0)(frames, random.Random(0))
    torch.testing.assert_close(unchanged["landmarks"], frames["landmarks"])


def test_uint8_round_trip_is_exact_for_decoded_frames_and_keeps_unknown_masks(random_clip):
    from talkinghead.datamodules.transforms import from_uint8, to_uint8

    frames = clip_to_frames(random_clip(0, size=16), 16)
    unknown = clip_to_frames(random_clip(1, size=16, mask=False), 16)
    item = {"source": frames["image"][0], "source_mask": frames["mask"][0], "driving": unknown["image"][0],
            "driving_mask": unknown["mask"][0], "driving_landmarks": unknown["landmarks"][0]}
    packed = to_uint8(item)
    assert packed["source"].dtype == packed["source_mask"].dtype == packed["driving_mask"].dtype == torch.uint8
    assert packed["driving_landmarks"] is item["driving_landmarks"]
    back = from_uint8(packed)
    for name in item:
        assert back[name].dtype == torch.float32
        torch.testing.assert_close(back[name], item[name], rtol=0, atol=0, equal_nan=True)
    assert back["driving_mask"].isnan().all() and back["source_mask"].isfinite().all()
    resized = clip_to_frames(random_clip(0, size=16), 12)["image"]
    error = from_uint8(to_uint8({"source": resized}))["source"] - resized
    assert 0 < error.abs().max() <= 0.5 / 255 + 1e-7


def test_color_jitter_batched_parameters_equal_one_draw_per_sample():
    jitter = ColorJitter(brightness=0.2, contrast=0.3, saturation=0.3, hue=0.05)
    images = torch.rand(3, 2, 3, 8, 8)  # 3 samples of 2 frames
    one_by_one, rows = [], []
    for sample in range(3):
        one_by_one.append(jitter(images[sample], random.Random(sample)))
        rows.append(jitter.draw(random.Random(sample)))
    params = torch.tensor(rows).repeat_interleave(2, dim=0)
    batched = jitter.apply(images.flatten(0, 1), params).unflatten(0, (3, 2))
    torch.testing.assert_close(batched, torch.stack(one_by_one), rtol=0, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # the samples did get different changes
    assert ColorJitter(brightness=0.2, contrast=0, saturation=0, hue=0).draw(random.Random(0))[1:] == [1.0, 1.0, 0.0]
