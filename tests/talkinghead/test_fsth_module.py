"""FSTH: meta-learning and fine-tuning through the real CLI, the fine-tuning initialisation, predict, and DDP."""

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch

import talkinghead.lightning.fsth as fsth
from talkinghead.cli import TalkingHeadCLI
from talkinghead.lightning.fsth import FSTHFineTuneModule, FSTHModule
from talkinghead.lightning.slim import write_inference_checkpoint
from talkinghead.sketch import draw_sketch

from spectral_norms import converge_spectral_norms  # tests/

CONFIGS = resources.files("talkinghead.lightning_configs") / "fsth"
TINY_META, TINY_FINETUNE = str(CONFIGS / "tiny_meta.yaml"), str(CONFIGS / "tiny_finetune.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--data.init_args.num_workers=0"]


def meta_cli(shards, *extra):
    return TalkingHeadCLI(args=["--config", TINY_META, f"--data.init_args.shards={shards}", *QUIET, *extra],
                          run=False)


def finetune_cli(meta_checkpoint, shards, *extra):
    return TalkingHeadCLI(args=["--config", TINY_FINETUNE, f"--model.init_args.init_from={meta_checkpoint}",
                                f"--data.init_args.shards={shards}", *QUIET, *extra], run=False)


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory, synthetic_shards):
    """One batch of tiny meta-learning through the CLI: (cli, checkpoint path)."""
    root = tmp_path_factory.mktemp("fsth_meta")
    cli = meta_cli(synthetic_shards, "--trainer.max_steps=3", f"--trainer.default_root_dir={root}")
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli, next(root.glob("**/last.ckpt"))


def test_target_frame_never_reaches_the_embedder(synthetic_shards):
    cli = meta_cli(synthetic_shards)
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    seen = []
    embedder = cli.model.networks["embedder"]
    handle = embedder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    cli.model.run_generator(batch)
    handle.remove()
    (frames,) = seen
    assert frames.shape[1] == cli.datamodule.num_references
    # No embedder frame is the target image: the target is only ever drawn from its landmarks.
    differences = (frames - batch["driving"][:, None]).abs().flatten(2).amax(-1)  # (b, k)
    assert (differences > 0).all()
    references, target = batch["frame_index"][:, :-1], batch["frame_index"][:, -1:]
    assert not (references == target).any()


def test_generator_step_moves_w_only_through_the_embedding_match(synthetic_shards):
    """L_MCH(phi, W) trains W_i towards e_i in the generator step; the adversarial terms there leave W alone."""
    cli = meta_cli(synthetic_shards, "--model.init_args.video_columns_init=random")  # else W_i = e_i: no gradient
    model, data = cli.model, cli.datamodule
    data.setup("fit")
    model.projection_discriminator.set_num_videos(data.num_videos)
    weight = model.projection_discriminator.video_embeddings.weight
    assert any(parameter is weight for parameter in model.generator_parameters())
    batch = next(iter(data.train_dataloader()))
    terms = model.generator_losses(batch, model.run_generator(batch))
    assert {"adversarial", "feature_matching", "embedding_match"} <= set(terms)
    (total,) = torch.autograd.grad(model.weighted_sum(terms), weight, retain_graph=True)
    (match,) = torch.autograd.grad(model.loss_weights["embedding_match"] * terms["embedding_match"], weight)
    assert match.abs().sum() > 0
    torch.testing.assert_close(total, match)


def test_video_columns_start_from_the_first_embedding_and_the_embedder_stays_alive(synthetic_shards):
    """W_i = e_i the first time video i is seen, so L_MCH does not drag e towards W's small random rows; with the
    paper's random rows e shrinks in the very first steps (benchmarks/fsth_embedder.py follows it to 0)."""
    cli = meta_cli(synthetic_shards)
    model, data = cli.model, cli.datamodule
    data.setup("fit")
    model.projection_discriminator.set_num_videos(data.num_videos)
    batch = next(iter(data.train_dataloader()))
    outputs = model.run_generator(batch)
    terms = model.generator_losses(batch, outputs)
    index = batch["video_index"]
    discriminator = model.projection_discriminator
    assert discriminator.video_columns_set[index].all()
    assert discriminator.video_columns_set.sum() == len(set(index.tolist()))
    torch.testing.assert_close(terms["embedding_match"], torch.zeros(()))
    torch.testing.assert_close(discriminator.video_embeddings.weight[index[0]], outputs["embedding"][0].detach())
    with pytest.raises(ValueError, match="video_columns_init must be one of embedding, random"):
        meta_cli(synthetic_shards, "--model.init_args.video_columns_init=zeros")


def test_one_real_discriminator_pass_per_batch(tmp_path, synthetic_shards, monkeypatch):
    """judge_real: the generator step's feature matching and the first D step share D(real) (and one sketch)."""
    cli = meta_cli(synthetic_shards, "--trainer.max_steps=3", f"--trainer.default_root_dir={tmp_path}")
    calls, sketches = [], []
    cli.model.projection_discriminator.register_forward_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(fsth, "draw_sketch", lambda *a, **k: sketches.append(1) or draw_sketch(*a, **k))
    cli.trainer.fit(cli.model, cli.datamodule)
    # real once + fake in the G step + fake in D step 1 + real and fake in D step 2 = 5 (was 6: real again in D step 1)
    assert len(calls) == 5
    assert len(sketches) == 2  # the driving sketch once; the references' sketches once


def test_shared_real_pass_gives_the_losses_of_judging_the_real_frames_in_each_step(tmp_path, synthetic_shards):
    """The first D step reads judge_real's D(real) with its logits projected on W as the generator step left it
    (the step initialises W_i from e_i and the match moves it): the losses are those of the step without sharing."""
    def one_step(share: bool) -> dict[str, float]:
        cli = meta_cli(synthetic_shards, "--trainer.max_steps=3", "--trainer.logger=false",
                       f"--trainer.default_root_dir={tmp_path}")
        converge_spectral_norms(cli.model.projection_discriminator)  # one power iteration fewer is then no change
        if not share:
            cli.model.judge_real = lambda batch: None
        torch.manual_seed(1)
        cli.trainer.fit(cli.model, cli.datamodule)
        skip = ("train/d/total", "train/g/total", "train/skipped_nonfinite")
        return {k: v.item() for k, v in cli.trainer.callback_metrics.items() if k not in skip}

    terms, old_terms = one_step(share=True), one_step(share=False)
    assert terms.keys() == old_terms.keys() and {"train/g/feature_matching", "train/d/discriminator"} <= set(terms)
    for name, value in old_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_meta_learning_sizes_w_from_the_data_and_reloads_without_config(meta_run, synthetic_shards):
    cli, checkpoint = meta_run
    videos = cli.datamodule.num_videos
    assert videos == 12 and cli.model.projection_discriminator.num_videos == videos
    assert cli.trainer.global_step == 3  # one batch: a G step and two D steps
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["num_videos"] == videos
    reloaded = FSTHModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert reloaded.projection_discriminator.num_videos == videos
    batch = next(iter(cli.datamodule.train_dataloader()))
    torch.testing.assert_close(cli.model.reconstruct_batch(batch), reloaded.reconstruct_batch(batch))
    fresh = meta_cli(synthetic_shards).model
    assert not torch.equal(fresh.reconstruct_batch(batch), reloaded.reconstruct_batch(batch))  # weights restored


def test_small_meta_checkpoint_keeps_the_discriminator_and_starts_fine_tuning(meta_run, synthetic_shards, tmp_path):
    """The shipped form of a meta-learned model: no VGG, no optimizer state, but D, which fine-tuning starts from."""
    cli, checkpoint = meta_run
    small = write_inference_checkpoint(cli.model, tmp_path / "fsth_meta.ckpt", cli.trainer.global_step,
                                       {"image_size": 64}, keep=("projection_discriminator",))
    stored = torch.load(small, map_location="cpu", weights_only=True)["state_dict"]
    assert not any(key.startswith("content_vgg19.") for key in stored)
    assert small.stat().st_size < checkpoint.stat().st_size / 2
    from_small = finetune_cli(small, synthetic_shards).model
    from_full = finetune_cli(checkpoint, synthetic_shards).model
    small_state = from_small.state_dict()
    networks = [key for key in from_full.state_dict() if not key.startswith(("content_vgg19.", "content_vggface."))]
    assert any(key.startswith("person_discriminator.") for key in networks)
    for key in networks:  # the loss networks are built afresh (random-init features without VGG weights)
        torch.testing.assert_close(small_state[key], from_full.state_dict()[key], msg=key)


def test_meta_learning_refuses_data_without_video_columns(tmp_path, synthetic_shards):
    cli = meta_cli(synthetic_shards, "--trainer.max_steps=3", f"--trainer.default_root_dir={tmp_path}",
                   "--model.init_args.num_videos=5")
    with pytest.raises(ValueError, match="5 video columns but the training data has 12 videos"):
        cli.trainer.fit(cli.model, cli.datamodule)


def test_finetuning_initialisation_is_p_e_new_and_w0_plus_e_new_exactly(meta_run, synthetic_shards):
    _, checkpoint = meta_run
    cli = finetune_cli(checkpoint, synthetic_shards, "--data.init_args.num_frames=3")
    person = cli.datamodule.person_frames()
    frames, landmarks = person["references"], person["references_landmarks"]
    assert frames.shape[:2] == (1, 3)
    e_new = cli.model.initialise_person(frames, landmarks)

    meta = FSTHModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    expected = meta.networks["embedder"](frames, draw_sketch(landmarks, frames.shape[-1]))
    assert torch.equal(e_new, expected)
    assert torch.equal(cli.model.person_generator.adain, meta.networks["generator"].projection(expected))
    assert torch.equal(cli.model.person_discriminator.column,
                       meta.projection_discriminator.shared_column + expected)
    assert bool(cli.model.initialised)


def test_finetuning_fit_freezes_e_reloads_alone_and_predicts_an_mp4(meta_run, synthetic_shards, tmp_path,
        run_talkinghead, read_mp4):
    _, meta_checkpoint = meta_run
    meta_copy = tmp_path / "meta.ckpt"
    shutil.copy(meta_checkpoint, meta_copy)
    # The paper's adversarial terms (tiny_finetune.yaml drops them): one batch of a G step and 2 D steps.
    cli = finetune_cli(meta_copy, synthetic_shards, "--trainer.max_steps=3", f"--trainer.default_root_dir={tmp_path}",
                       "--model.init_args.loss_weights.adversarial=1",
                       "--model.init_args.loss_weights.feature_matching=10")
    assert cli.model.uses_discriminator() and cli.model.optimizer_steps_per_batch == 3
    embedder_before = {k: v.clone() for k, v in cli.model.embedder.state_dict().items()}
    generator_before = {k: v.clone() for k, v in cli.model.person_generator.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)
    model = cli.model
    assert bool(model.initialised)
    for name, value in model.embedder.state_dict().items():  # E only initialises the person
        assert torch.equal(value, embedder_before[name]), name
    changed = [name for name, value in model.person_generator.state_dict().items()
               if not torch.equal(value, generator_before[name])]
    assert "adain" in changed and any(name.startswith("generator.") for name in changed)
    assert not model.discriminator().discriminator.shared_column.requires_grad

    # The fine-tuned checkpoint carries the meta architecture: it reloads with the meta checkpoint gone.
    checkpoint = next(tmp_path.glob("**/last.ckpt"))
    meta_copy.unlink()
    reloaded = FSTHFineTuneModule.load_from_checkpoint(checkpoint, map_location="cpu")
    landmarks = cli.datamodule.person_frames()["references_landmarks"][0]
    torch.testing.assert_close(model.reenact(landmarks, 64), reloaded.reenact(landmarks, 64))

    # predict reenacts the person with another person's clip and writes driving | output as an mp4.
    out = tmp_path / "predict"
    result = run_talkinghead(
        "predict", "--config", TINY_FINETUNE, f"--ckpt_path={checkpoint}",
        f"--data.init_args.shards={synthetic_shards}", f"--data.init_args.driving={synthetic_shards}",
        "--data.init_args.driving_clip=synth-00003-v001", f"--trainer.default_root_dir={out}", *QUIET)
    assert result.returncode == 0, result.stderr[-4000:]
    (video,) = (out / "predictions").glob("*.mp4")
    decoded = read_mp4(video)
    assert len(decoded) == 12 and decoded[0].shape == (64, 128, 3)


def test_finetuning_refuses_a_missing_or_foreign_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_from checkpoint not found"):
        FSTHFineTuneModule(init_from=str(tmp_path / "missing.ckpt"))
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "talkinghead.lightning.osfv.OSFVModule"}},
               tmp_path / "osfv.ckpt")
    with pytest.raises(ValueError, match="fine-tuning needs a FSTHModule"):
        FSTHFineTuneModule(init_from=str(tmp_path / "osfv.ckpt"))
    with pytest.raises(ValueError, match="init_from META.ckpt"):
        FSTHFineTuneModule()


def test_paper_scale_configs_instantiate(meta_run, synthetic_shards):
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
           "--trainer.precision=32-true", "--trainer.logger=false"]
    cli = TalkingHeadCLI(args=["--config", str(CONFIGS / "meta_vox256.yaml"), f"--data.init_args.shards={synthetic_shards}",
                               *cpu], run=False)
    assert isinstance(cli.model, FSTHModule) and cli.model.loss_weights["embedding_match"] == 80
    assert cli.model.networks["generator"].num_adain_parameters == 13120
    _, checkpoint = meta_run
    cli = TalkingHeadCLI(args=["--config", str(CONFIGS / "finetune_vox256.yaml"), f"--model.init_args.init_from={checkpoint}",
                               f"--data.init_args.shards={synthetic_shards}", *cpu], run=False)
    assert isinstance(cli.model, FSTHFineTuneModule) and "embedding_match" not in cli.model.loss_weights


@pytest.mark.slow
def test_two_process_cpu_ddp_meta_learning_through_the_cli(tmp_path, synthetic_shards):
    """`talkinghead fit` with strategy ddp on 2 CPU processes: both ranks size W alike and train in step, and the
    rows of W set from the embeddings (video_columns_init: embedding) are the same on both ranks (gathered before
    they are written)."""
    record = tmp_path / "record"
    record.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "fit", "--config", TINY_META,
         f"--data.init_args.shards={synthetic_shards}",
         "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true", "--trainer.max_steps=6",
         f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks+=probe_module.VideoColumnsRecorder",
         f"--trainer.callbacks.record_dir={record}", *QUIET],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    state = torch.load(next(tmp_path.glob("**/last.ckpt")), map_location="cpu", weights_only=False)
    assert state["global_step"] == 6 and state["hyper_parameters"]["num_videos"] == 12
    ranks = [torch.load(record / f"columns-rank-{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ranks[0]["set"].sum() >= 2  # 2 batches of 4 on each rank (fewer rows when videos repeat)
    torch.testing.assert_close(ranks[0]["set"], ranks[1]["set"])
    torch.testing.assert_close(ranks[0]["W"], ranks[1]["W"])
