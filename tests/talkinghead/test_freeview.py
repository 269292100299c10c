"""talkinghead.freeview: exact free-view truth from shard metadata, the sign convention shared with OSFV's animate,
masked scores, and the score tables of a tiny random-init OSFV (structure only; nothing is trained)."""

import json
import math
from importlib import resources

import pytest
import torch

from talkinghead.datamodules.shard_format import decode_clip, expand_shards, iter_shard_samples
from talkinghead.flows import transform_keypoints
from talkinghead.freeview import (
    COLUMNS,
    COPY_SOURCE,
    MODEL,
    MODEL_NO_TURN,
    NO_TURN,
    TRUTH_CHECK,
    NotSyntheticError,
    SyntheticClipSource,
    format_table,
    region_scores,
    score_free_view,
    score_reconstruction,
    synthetic_clip_sources,
    turned_pose,
)
from talkinghead.geometry import rotation_matrix
from talkinghead.lightning.osfv import compose_driving_pose

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """2 people x 1 clip x 6 frames at 32 px (npy, lossless)."""
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards

    out = tmp_path_factory.mktemp("freeview_shards")
    write_synthetic_shards(out, identities=2, clips_per_identity=1, frames=6, size=32, seed=4, first_identity=50)
    return out


@pytest.fixture(scope="module")
def tiny_cli(shards):
    """The tiny OSFV config at 32 px, random init, with fixed validation pairs of the shards."""
    from talkinghead.cli import TalkingHeadCLI

    return TalkingHeadCLI(args=["--config", TINY, f"--data.init_args.shards={shards}",
                                f"--data.init_args.val_shards={shards}", "--data.init_args.image_size=32",
                                "--data.init_args.num_workers=0", "--data.init_args.val_samples=2"], run=False)


def first_clip(shards):
    sample = next(iter_shard_samples(expand_shards(str(shards))[0]))
    return sample, decode_clip(sample)


def test_turned_pose_is_the_rotation_animate_asks_for():
    pose = torch.tensor([[12.0, -15.0, 8.0, 0.05, -0.02, 0.1], [-30.0, 10.0, -18.0, 0.0, 0.03, -0.05]])
    source = {"rotation": rotation_matrix(*pose[:, :3].unbind(-1)), "translation": pose[:, 3:],
              "expression": torch.zeros(2, 4, 3)}
    user = rotation_matrix(torch.tensor(20.0), torch.tensor(0.0), torch.tensor(0.0))
    # animate(source, source[None], relative=True, yaw=20): the source drives itself, then R_d <- R_u R_d.
    rotation, translation, _ = compose_driving_pose(source, source, source, user, torch.zeros(3))
    turned = turned_pose(pose, 20.0)
    torch.testing.assert_close(rotation_matrix(*turned[:, :3].unbind(-1)), rotation, atol=1e-5, rtol=0)
    torch.testing.assert_close(turned[:, 3:], translation)
    # With pitch and roll at 0 it is Euler yaw + 20; otherwise not (the turn is about the camera's axis).
    level = torch.tensor([[12.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(turned_pose(level, 20.0), level + torch.tensor([[20.0, 0, 0, 0, 0, 0]]))
    assert (turned[:, 0] - pose[:, 0] - 20).abs().max() > 0.5


def test_positive_yaw_turns_the_nose_left_for_the_model_and_the_renderer(shards):
    # Model side: a keypoint in front of the face (the face looks towards -z) moves to image left (-x).
    front = torch.tensor([[[0.0, 0.0, -0.5]]])
    user = rotation_matrix(torch.tensor(20.0), torch.tensor(0.0), torch.tensor(0.0))[None]
    assert transform_keypoints(front, user, torch.zeros(1, 3), torch.zeros(1, 1, 3))[0, 0, 0] < -0.1
    # Renderer side: the nose tip landmark of the truth for +20 sits left of the unturned one, right for -20.
    sample, clip = first_clip(shards)
    source = SyntheticClipSource.from_meta(clip.meta, clip.num_frames)
    base = source.render(2)
    nose = [source.render(2, turned_pose(base.pose[0], yaw)).landmarks[0, 30, 0] for yaw in (20.0, -20.0)]
    assert nose[0] < base.landmarks[0, 30, 0] - 1 < base.landmarks[0, 30, 0] + 1 < nose[1]


def test_the_metadata_rerenders_the_stored_frames_exactly(shards):
    sources = synthetic_clip_sources(str(shards), 5)
    assert [(s.identity_index, s.clip_index, s.seed, s.num_frames, s.size) for s, _ in sources] == [
        (50, 0, 4, 6, 32), (51, 0, 4, 6, 32)]
    for source, sample in sources:
        clip = decode_clip(sample)
        for frame in (0, 5):
            again = source.render(frame)
            assert (again.frames[0].numpy() == clip.frames[frame]).all()  # npy shards: bit-exact
            assert (again.mask[0].numpy() == clip.mask[frame]).all()
        turned = source.render(0, turned_pose(torch.from_numpy(clip.pose[0]), 10.0))
        assert (turned.frames[0].float() - torch.from_numpy(clip.frames[0]).float()).abs().mean() > 1


def test_clips_that_cannot_be_rerendered_say_why_in_one_line(random_shards, shards):
    with pytest.raises(NotSyntheticError, match="is not synthetic") as error:
        synthetic_clip_sources(str(random_shards), 2)
    assert "\n" not in str(error.value) and "clip-000" in str(error.value)
    _, clip = first_clip(shards)
    meta = {**vars(clip.meta), "extra": {"supersample": 2}}  # as written before the seed and indices were kept
    with pytest.raises(NotSyntheticError, match="lacks seed, identity_index, clip_index") as error:
        SyntheticClipSource.from_meta(json.loads(json.dumps(meta)), 6)
    assert "\n" not in str(error.value)


def test_frames_the_renderer_does_not_draw_are_refused(tmp_path):
    from talkinghead.datamodules.shard_format import Clip, ClipMeta, ShardWriter
    from talkinghead.datamodules.synthetic_heads import synthetic_clip

    rendered = synthetic_clip(5, 0, 0, frames=2, size=32)  # seed 5, labelled seed 4 below
    meta = ClipMeta(identity="synth-00000", video="synth-00000-v000", source="synthetic", fps=25.0, size=32,
                    extra={"seed": 4, "identity_index": 0, "clip_index": 0, "supersample": 2})
    with ShardWriter(tmp_path, codec="npy") as writer:
        writer.write(Clip(rendered.frames.numpy(), rendered.landmarks.numpy(), meta, rendered.pose.numpy(),
                          rendered.mask.numpy()), "synth-00000/v000")
    with pytest.raises(ValueError, match="not what this renderer draws"):
        score_free_view(None, str(tmp_path), num_clips=1)  # refused before the model is used


def test_region_scores_known_answers():
    target = torch.rand(2, 3, 8, 8)
    prediction = target.clone()
    prediction[:, :, :4] += 0.1  # wrong in the top half only
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 4:] = 1
    whole, bottom = region_scores(prediction, target), region_scores(prediction, target, mask)
    torch.testing.assert_close(whole["L1"], torch.full((2,), 0.05))
    torch.testing.assert_close(whole["PSNR"], torch.full((2,), 10 * math.log10(1 / 0.005)))
    torch.testing.assert_close(bottom["L1"], torch.zeros(2))
    torch.testing.assert_close(bottom["PSNR"], torch.full((2,), 100.0))
    mask[1] = math.nan  # unknown mask: NaN, not a score
    assert region_scores(prediction, target, mask)["PSNR"][1].isnan()


class PerfectModel:
    """reconstruct_batch returns the driving frame: PSNR 100, L1 0."""

    device = torch.device("cpu")

    def reconstruct_batch(self, batch):
        return batch["driving"]


def test_score_reconstruction_groups_large_motion_pairs():
    driving = torch.rand(3, 3, 8, 8)
    batch = {"source": driving.flip(0), "driving": driving, "driving_mask": torch.ones(3, 1, 8, 8),
             "source_pose": torch.tensor([[0.0] * 6, [0.0] * 6, [math.nan] * 6]),
             "driving_pose": torch.tensor([[10.0] + [0.0] * 5, [-20.0] + [0.0] * 5, [40.0] + [0.0] * 5])}
    scores = score_reconstruction(PerfectModel(), [batch])
    assert list(scores) == ["all pairs", "large motion (yaw change >= 15 deg)"]
    everything, large = scores.values()
    assert everything[MODEL]["n"] == 3 and large[MODEL]["n"] == 1  # 10 deg is small, an unknown yaw is left out
    assert everything[MODEL]["PSNR"] == everything[MODEL]["PSNR fg"] == 100.0 and everything[MODEL]["L1"] == 0
    copied = region_scores(batch["source"][1:2], driving[1:2])
    assert large[COPY_SOURCE]["L1"] == pytest.approx(float(copied["L1"][0]))
    assert list(everything[COPY_SOURCE]) == list(COLUMNS)


def test_tiny_random_osfv_scores(tiny_cli, shards):
    model = tiny_cli.model.eval()
    scores = score_free_view(model, str(shards), yaws=(-10.0, 20.0), num_clips=2)
    assert list(scores) == ["yaw -10", "yaw +20", "all yaws", TRUTH_CHECK]
    for group in ("yaw -10", "yaw +20", "all yaws"):
        assert list(scores[group]) == [MODEL, MODEL_NO_TURN, NO_TURN]
        for row in scores[group].values():
            assert list(row) == list(COLUMNS) and all(math.isfinite(v) for v in row.values())
            assert row["PSNR fg"] < row["PSNR"]  # the head is where the turn changes pixels
    assert scores["yaw -10"][MODEL]["n"] == 2 and scores["all yaws"][NO_TURN]["n"] == 4
    # A bigger turn leaves the unturned source further from the truth.
    assert scores["yaw +20"][NO_TURN]["PSNR fg"] < scores["yaw -10"][NO_TURN]["PSNR fg"]
    assert scores[TRUTH_CHECK]["re-rendered source"]["PSNR"] == 100.0
    tiny_cli.datamodule.setup("validate")
    reconstruction = score_reconstruction(model, tiny_cli.datamodule.val_dataloader())
    assert reconstruction["all pairs"][MODEL]["n"] == 2 and math.isfinite(reconstruction["all pairs"][MODEL]["L1 fg"])
    table = format_table(scores)
    assert table.splitlines()[0].split() == ["group", "row", *"n PSNR L1 PSNR fg L1 fg".split()]
    assert len(table.splitlines()) == 1 + 3 * 3 + 1  # header, 3 groups x (model, model no turn, no turn), check
    markdown = format_table(reconstruction, markdown=True).splitlines()
    assert markdown[0].startswith("| group | row |") and len(markdown) == 2 + 4
