"""The synthetic identity / landmark judge: file format, and that the shipped one tells unseen people apart."""

import pytest
import torch
from safetensors.torch import save_file

from talkinghead.datamodules.synthetic_heads import synthetic_clip
from talkinghead.metrics.synthetic_judge import SyntheticJudge, judge_path, load_judge, save_judge


def test_saved_judge_reloads_to_the_same_outputs_without_the_classifier(tmp_path):
    torch.manual_seed(0)
    judge = SyntheticJudge(num_identities=5, image_size=32, width=4, embedding_dim=8).eval()
    path = save_judge(judge, tmp_path / "judge.safetensors", {"closed-set accuracy": 0.5})
    loaded, figures = load_judge(path)
    assert figures == {"closed-set accuracy": 0.5} and not loaded.training
    frames = torch.rand(3, 3, 32, 32)
    expected, got = judge(frames), loaded(frames)
    torch.testing.assert_close(got["embedding"], expected["embedding"])
    torch.testing.assert_close(got["landmarks"], expected["landmarks"])
    assert torch.allclose(got["embedding"].norm(dim=-1), torch.ones(3))
    big = loaded(torch.rand(2, 3, 64, 64))["landmarks"]  # other sizes: resized in, landmarks in the input's pixels
    assert big.shape == (2, 68, 2)


def test_load_judge_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks/identity_judge.py"):
        load_judge(tmp_path / "absent.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign), metadata={"config": '{"num_identities": 1, "width": 4}'})
    with pytest.raises(ValueError, match="does not hold a SyntheticJudge"):
        load_judge(foreign)


def test_shipped_judge_tells_unseen_people_apart_and_reads_their_landmarks():
    """People far outside the judge's training range (500000..) and the benchmarks' (0.., 100000..)."""
    assert judge_path().is_file()
    judge, figures = load_judge()
    assert figures["closed-set accuracy, held-out clips"] > 0.5
    people = [synthetic_clip(7, 900_000 + i, clip, 6, 64) for i in range(3) for clip in range(2)]
    frames = [clip.frames.permute(0, 3, 1, 2).float() / 255 for clip in people]
    with torch.no_grad():
        outputs = [judge(f) for f in frames]
    centroids = torch.nn.functional.normalize(torch.stack([outputs[2 * i]["embedding"].mean(0) for i in range(3)]),
                                              dim=-1)
    queries = torch.cat([outputs[2 * i + 1]["embedding"] for i in range(3)])  # the person's other clip
    truth = torch.arange(3).repeat_interleave(6)
    assert ((queries @ centroids.t()).argmax(1) == truth).float().mean() >= 0.8
    errors = torch.cat([(o["landmarks"] - clip.landmarks).norm(dim=-1).mean(-1) for o, clip in zip(outputs, people)])
    assert errors.mean() < 3.0  # pixels of a 64-px frame
