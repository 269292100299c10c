"""`talkinghead evaluate` of meta-learned FSTH / LPD checkpoints (the shipped tiny ones): the few-shot protocol
(--mode few-shot) and same- / cross-identity reenactment."""

import csv
import subprocess
import sys
from importlib import resources

import lightning as L
import pytest
import torch

from talkinghead.datamodules.talking_heads import PersonDataModule
from talkinghead.evaluation import BASELINE, evaluate, load_model
from talkinghead.few_shot_evaluation import FewShotSettings, evaluate_few_shot
from talkinghead.metrics import PSNR

ASSETS = resources.files("talkinghead.assets")
FSTH, LPD, OSFV = (str(ASSETS / name) for name in ("fsth_tiny_meta.ckpt", "lpd_tiny_meta.ckpt", "osfv_tiny.ckpt"))


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """3 synthetic people x 1 clip x 8 frames at 64 px (the shipped checkpoints' size)."""
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards

    out = tmp_path_factory.mktemp("few_shot_people")
    write_synthetic_shards(out, identities=3, first_identity=400_000, clips_per_identity=1, frames=8, size=64,
                           seed=2, clips_per_shard=2, progress=False)
    return out


def run_evaluate(*args):
    return subprocess.run([sys.executable, "-m", "talkinghead", "evaluate", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def person(shards, identity, shots, held_out):
    data = PersonDataModule(shards=str(shards), identity=identity, num_frames=shots, held_out_frames=held_out,
                            image_size=64, num_workers=0, remove_background=True)
    data.setup("fit")
    return data.person_frames()["references"][0], torch.cat([b["driving"] for b in data.val_dataloader()])


def test_fsth_few_shot_protocol_through_the_cli(tmp_path, people):
    out = tmp_path / "eval"
    result = run_evaluate("--checkpoint", FSTH, "--data", people, "--mode", "few-shot", "--out", out, "--people", 2,
                          "--shots", "1,2", "--held-out", 3, "--finetune-steps", 1, "--no-face-metrics")
    assert result.returncode == 0, result.stderr[-4000:]
    with open(out / "evaluation.csv") as stream:
        rows = {row["row"]: row for row in csv.DictReader(stream)}
    assert list(rows) == [f"T={t} {what}" for t in (1, 2)
                          for what in ("fine-tuned", "feed-forward", "mean of T frames", "copy first frame")]
    for row in rows.values():
        assert 0 < float(row["PSNR"]) < 60 and 0 < float(row["L1"]) < 1
        assert -1 <= float(row["judge cos"]) <= 1 and float(row["judge landmarks px"]) >= 0  # synthetic: judged
    # Fine-tuning ran (one G step moves the generator away from the meta-learned one).
    assert rows["T=1 fine-tuned"]["L1"] != rows["T=1 feed-forward"]["L1"]
    assert rows["T=1 mean of T frames"]["PSNR"] == rows["T=1 copy first frame"]["PSNR"]  # one frame: the same
    markdown = (out / "evaluation.md").read_text()
    assert "**few-shot**" in markdown and "2 held-out people, 6 held-out frames" in markdown
    assert "background removed" in markdown  # as the checkpoint's training data, which it records
    assert "tiny_finetune.yaml" in markdown and "fine-tuned 1 G steps" in markdown
    # The copy baseline, computed independently: the first of the T frames against the held-out frames, which
    # are the same frames for every T.
    psnr = PSNR()
    for identity in ("synth-400000", "synth-400001"):
        references, held = person(people, identity, 2, 3)
        assert torch.equal(held, person(people, identity, 1, 3)[1])
        psnr.update(references[:1].expand_as(held), held)
    assert float(rows["T=2 copy first frame"]["PSNR"]) == pytest.approx(psnr.compute().item(), rel=1e-3)


def test_lpd_feed_forward_rows_and_reenactment(people):
    settings = FewShotSettings(shots=(2,), finetune_steps=0, held_out=3, people=2, remove_background=True)
    rows = dict(evaluate_few_shot(load_model(LPD), LPD, str(people), settings, image_size=64, face_metrics=False))
    assert list(rows) == ["T=2 feed-forward", "T=2 mean of T frames", "T=2 copy first frame"]  # no fine-tuning
    references, held = person(people, "synth-400000", 2, 3)
    mean = (references.mean(0, keepdim=True) - held).abs().mean().item()
    other = person(people, "synth-400001", 2, 3)
    mean = (mean + (other[0].mean(0, keepdim=True) - other[1]).abs().mean().item()) / 2
    assert rows["T=2 mean of T frames"]["L1"] == pytest.approx(mean, rel=1e-3)

    for path in (FSTH, LPD):  # same- and cross-identity: the source as the one reference frame (T = 1)
        model = load_model(path)
        for mode in ("same-identity", "cross-identity"):
            scored = dict(evaluate(model, str(people), mode=mode, num_pairs=3, image_size=64, face_metrics=False,
                                   remove_background=True))
            assert set(scored) == {"model", BASELINE}
            if mode == "same-identity":
                assert 0 < scored["model"]["PSNR"] < 60
        with pytest.raises(ValueError, match="no free view"):
            evaluate(model, str(people), mode="free-view", num_pairs=2, image_size=64)


def test_finetune_steps_count_generator_steps_with_or_without_a_discriminator(tmp_path, people):
    """--finetune-steps N is N generator steps: with D steps between them (FSTH's 2 per G step), and with none
    when the fine-tuning config gives every term that reads D weight 0 (then D is neither run nor stepped)."""
    import yaml

    from talkinghead.few_shot_evaluation import default_finetune_config, finetuning_cli

    def config(kind, adversarial, feature_matching):
        settings = yaml.safe_load(default_finetune_config(kind, 64).read_text())
        settings["model"]["init_args"]["loss_weights"].update(adversarial=adversarial,
                                                              feature_matching=feature_matching)
        path = tmp_path / f"{kind}_{adversarial}.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    settings = FewShotSettings(shots=(2,), finetune_steps=3, held_out=3, remove_background=True)
    fsth = finetuning_cli(FSTH, config("fsth", 1.0, 10.0), str(people), "synth-400000", 2, settings, 64,
                          tmp_path / "fsth")
    assert fsth.model.uses_discriminator() and fsth.model.optimizer_steps_per_batch == 3
    assert fsth.trainer.fit_loop.epoch_loop.max_steps == 9

    lpd = finetuning_cli(LPD, config("lpd", 0.0, 0.0), str(people), "synth-400000", 2, settings, 64, tmp_path / "lpd")
    assert not lpd.model.uses_discriminator() and lpd.trainer.fit_loop.epoch_loop.max_steps == 3

    started = {}

    class AtStart(L.Callback):  # after the person's initialisation has written D's column
        def on_train_start(self, trainer, module):
            started.update({f"{side}.{k}": v.clone() for side in ("person_discriminator", "person_generator")
                            for k, v in getattr(module, side).state_dict().items()})

    lpd.trainer.callbacks.append(AtStart())
    lpd.trainer.fit(lpd.model, lpd.datamodule)
    assert lpd.trainer.global_step == 3  # three G steps, each one optimizer step
    now = {f"{side}.{k}": v for side in ("person_discriminator", "person_generator")
           for k, v in getattr(lpd.model, side).state_dict().items()}
    assert all(torch.equal(v, now[k]) for k, v in started.items() if k.startswith("person_discriminator"))
    assert any(not torch.equal(v, now[k]) for k, v in started.items() if k.startswith("person_generator"))


def test_bad_few_shot_input_exits_2_in_one_line_and_writes_nothing(tmp_path, people):
    out = tmp_path / "eval"
    for args, message in (
        (("--checkpoint", FSTH, "--shots", "1,8", "--held-out", 3), "fewer than num_frames=8 + held_out_frames=3"),
        (("--checkpoint", OSFV), "evaluates meta-learned FSTH or LPD checkpoints"),
        (("--checkpoint", FSTH, "--shots", "eight"), "--shots takes T values"),
        (("--checkpoint", FSTH, "--finetune-config", tmp_path / "absent.yaml"), "--finetune-config not found"),
    ):
        result = run_evaluate(*args, "--data", people, "--mode", "few-shot", "--out", out, "--people", 2,
                              "--finetune-steps", 0, "--no-face-metrics")
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()
    result = run_evaluate("--checkpoint", FSTH, "--data", people, "--mode", "free-view", "--out", out)
    assert result.returncode == 2 and "no free view" in result.stderr and not out.exists()


def test_fsth_on_frames_without_landmarks_is_refused(landmarkless_shards, run_talkinghead, tmp_path):
    settings = FewShotSettings(shots=(1,), finetune_steps=1, held_out=2, people=1)
    with pytest.raises(ValueError, match="FSTH draws from landmarks, and person 'person-0' has frames without them"):
        evaluate_few_shot(load_model(FSTH), FSTH, str(landmarkless_shards), settings, image_size=64,
                          face_metrics=False)
    # Fine-tuning itself (talkinghead fit) refuses them in one line too.
    config = str(resources.files("talkinghead.lightning_configs") / "fsth" / "tiny_finetune.yaml")
    result = run_talkinghead("fit", "--config", config, f"--model.init_args.init_from={FSTH}",
                             f"--data.init_args.shards={landmarkless_shards}", "--data.init_args.num_frames=4",
                             "--trainer.max_steps=3", "--trainer.enable_progress_bar=false",
                             f"--trainer.default_root_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "FSTH draws the person from landmarks, and 4 of the 4 frames of 'person-0' have none" in result.stderr
    assert "Traceback" not in result.stderr
