"""LPD: pose augmentation wiring, meta-learning and fine-tuning through the real CLI, frozen encoders, predict, DDP."""

import logging
import shutil
from importlib import resources

import pytest
import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.lightning.lpd import LPDFineTuneModule, LPDModule

from spectral_norms import converge_spectral_norms  # tests/

CONFIGS = resources.files("talkinghead.lightning_configs") / "lpd"
TINY_META, TINY_FINETUNE = str(CONFIGS / "tiny_meta.yaml"), str(CONFIGS / "tiny_finetune.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--data.init_args.num_workers=0"]


def meta_cli(shards, *extra):
    return TalkingHeadCLI(args=["--config", TINY_META, f"--data.init_args.shards={shards}", *QUIET, *extra],
                          run=False)


def finetune_cli(meta_checkpoint, shards, *extra):
    return TalkingHeadCLI(args=["--config", TINY_FINETUNE, f"--model.init_args.init_from={meta_checkpoint}",
                                f"--data.init_args.shards={shards}", *QUIET, *extra], run=False)


def first_batch(cli):
    cli.datamodule.setup("fit")
    return next(iter(cli.datamodule.train_dataloader()))


def encoder_inputs(model, networks, batch):
    """(identity encoder input, pose encoder input, outputs) of one run_generator call."""
    seen = {}

    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left as it is
            seen[name] = inputs[0].detach().clone()
        return hook

    handles = [networks[name].register_forward_hook(record(name)) for name in ("identity_encoder", "pose_encoder")]
    try:
        outputs = model.run_generator(batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen["identity_encoder"], seen["pose_encoder"], outputs


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory, synthetic_shards):
    """Two batches of tiny meta-learning through the CLI: (cli, checkpoint path)."""
    root = tmp_path_factory.mktemp("lpd_meta")
    cli = meta_cli(synthetic_shards, "--trainer.max_steps=4", f"--trainer.default_root_dir={root}")
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli, next(root.glob("**/last.ckpt"))


def test_pose_augmentation_touches_only_the_pose_branch(synthetic_shards):
    cli = meta_cli(synthetic_shards)
    model, batch = cli.model, first_batch(cli)
    model.projection_discriminator.set_num_videos(cli.datamodule.num_videos)
    assert batch["driving_mask"].isfinite().all()  # synthetic shards carry masks: the target mask is warped too
    model.train()

    torch.manual_seed(5)
    identity_input, pose_input, outputs = encoder_inputs(model, model.networks, batch)
    torch.manual_seed(5)
    pose_frame, target, target_mask = model.pose_augmentation(batch["driving"], batch["driving"],
                                                              batch["driving_mask"])
    # The identity frames reach the identity encoder untouched.
    assert torch.equal(identity_input, batch["references"])
    # The pose encoder sees the augmented frame; the target and mask carry only the shared geometry.
    assert torch.equal(pose_input, pose_frame) and not torch.equal(pose_input, batch["driving"])
    assert torch.equal(outputs["target"], target) and torch.equal(outputs["target_mask"], target_mask)
    assert not torch.equal(outputs["target"], pose_input)  # pixel changes stayed on the pose frame
    torch.manual_seed(5)
    geometry_only = model.pose_augmentation.__class__(blur_probability=0, sharpen_probability=0, noise_probability=0,
                                                      colour_probability=0, jpeg_probability=0)
    assert torch.equal(geometry_only(batch["driving"], batch["driving"], batch["driving_mask"])[1], target)

    # Evaluation (and augment_pose false) feed the driving frame itself.
    model.eval()
    _, pose_input, outputs = encoder_inputs(model, model.networks, batch)
    assert torch.equal(pose_input, batch["driving"]) and torch.equal(outputs["target"], batch["driving"])
    unaugmented = meta_cli(synthetic_shards, "--model.init_args.augment_pose=false").model
    unaugmented.projection_discriminator.set_num_videos(cli.datamodule.num_videos)
    assert unaugmented.pose_augmentation is None
    _, pose_input, _ = encoder_inputs(unaugmented.train(), unaugmented.networks, batch)
    assert torch.equal(pose_input, batch["driving"])


def test_generator_step_moves_w_only_through_the_identity_match(synthetic_shards):
    cli = meta_cli(synthetic_shards, "--model.init_args.video_columns_init=random")  # else W_i = e_i: no gradient
    model, batch = cli.model, first_batch(cli)
    model.projection_discriminator.set_num_videos(cli.datamodule.num_videos)
    weight = model.projection_discriminator.video_embeddings.weight
    assert any(parameter is weight for parameter in model.generator_parameters())
    terms = model.generator_losses(batch, model.run_generator(batch))
    assert {"perceptual", "l1", "adversarial", "feature_matching", "dice", "identity_match"} <= set(terms)
    (total,) = torch.autograd.grad(model.weighted_sum(terms), weight, retain_graph=True)
    (match,) = torch.autograd.grad(model.loss_weights["identity_match"] * terms["identity_match"], weight)
    assert match.abs().sum() > 0
    torch.testing.assert_close(total, match)


def test_one_real_discriminator_pass_per_batch_gives_the_same_losses(synthetic_shards, tmp_path):
    """judge_real: feature matching and the D step share D(target) (3 D passes per batch instead of 4) and the
    pose augmentation is drawn once per batch; the losses are those of the step that judges the target twice."""
    def one_step(share: bool) -> tuple[dict[str, float], list[str]]:
        cli = meta_cli(synthetic_shards, "--trainer.max_steps=2", "--trainer.logger=false",
                       f"--trainer.default_root_dir={tmp_path}")
        model, passes = cli.model, []
        converge_spectral_norms(model.projection_discriminator)  # one power iteration fewer is then no change
        model.projection_discriminator.register_forward_hook(lambda *_: passes.append("D"))
        draw = model.pose_augmentation.forward
        model.pose_augmentation.forward = lambda *a, **k: passes.append("augment") or draw(*a, **k)
        if not share:
            model.judge_real = lambda batch: None
        torch.manual_seed(1)
        cli.trainer.fit(model, cli.datamodule)
        skip = ("train/d/total", "train/g/total", "train/skipped_nonfinite")
        return {k: v.item() for k, v in cli.trainer.callback_metrics.items() if k not in skip}, passes

    terms, passes = one_step(share=True)
    old_terms, old_passes = one_step(share=False)
    assert passes == ["augment", "D", "D", "D"] and old_passes == ["augment", "D", "D", "D", "D"]
    assert terms.keys() == old_terms.keys() and {"train/g/feature_matching", "train/d/discriminator"} <= set(terms)
    for name, value in old_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_pose_augmentation_is_drawn_anew_each_step_even_for_a_batch_seen_again(synthetic_shards, tmp_path):
    """The per-step cache that lets judge_real and run_generator share one augmentation never outlives the step:
    training twice on the very same batch tensors draws two different augmentations, and so does calling
    pose_inputs twice outside a step."""
    import lightning as L

    cli = meta_cli(synthetic_shards)
    batch = first_batch(cli)

    class SameBatchTwice(L.LightningDataModule):
        num_videos = cli.datamodule.num_videos

        def train_dataloader(self):
            return torch.utils.data.DataLoader([batch, batch], batch_size=None)

    model, targets = cli.model, []
    draw = model.pose_augmentation.forward
    model.pose_augmentation.forward = lambda *a, **k: targets.append(draw(*a, **k)) or targets[-1]
    trainer = L.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=SameBatchTwice())
    assert len(targets) == 2 and not torch.equal(targets[0][1], targets[1][1])
    model.train()
    assert not torch.equal(model.pose_inputs(batch)[1], model.pose_inputs(batch)[1])


def test_video_columns_start_from_the_first_identity_embedding(synthetic_shards):
    cli = meta_cli(synthetic_shards)
    model, batch = cli.model, first_batch(cli)
    model.projection_discriminator.set_num_videos(cli.datamodule.num_videos)
    outputs = model.run_generator(batch)
    terms = model.generator_losses(batch, outputs)
    index = batch["video_index"]
    assert model.projection_discriminator.video_columns_set[index].all()
    torch.testing.assert_close(terms["identity_match"], torch.zeros(()))
    torch.testing.assert_close(model.projection_discriminator.video_embeddings.weight[index[-1]],
                               outputs["identity"][(index == index[-1]).nonzero()[0, 0]].detach())


def test_dice_is_skipped_and_said_once_when_the_shards_have_no_masks(synthetic_shards, caplog):
    cli = meta_cli(synthetic_shards)
    model, batch = cli.model, first_batch(cli)
    model.projection_discriminator.set_num_videos(cli.datamodule.num_videos)
    maskless = {**batch, "driving_mask": torch.full_like(batch["driving_mask"], float("nan"))}
    with caplog.at_level(logging.WARNING, logger="talkinghead.lightning.lpd"):
        for _ in range(2):
            terms = model.generator_losses(maskless, model.run_generator(maskless))
            assert "dice" not in terms and "l1" in terms
    assert sum("no foreground masks" in record.message for record in caplog.records) == 1
    # A batch where only some rows have masks scores those rows.
    partial = {**batch, "driving_mask": batch["driving_mask"].clone()}
    partial["driving_mask"][1:] = float("nan")
    model.eval()  # no augmentation: the dice term is then exactly that of row 0
    outputs = model.run_generator(partial)
    expected = model.dice(outputs["mask"][:1], batch["driving_mask"][:1])
    torch.testing.assert_close(model.generator_losses(partial, outputs)["dice"], expected)


def test_meta_learning_sizes_w_and_reloads_with_its_ema(meta_run, synthetic_shards):
    cli, checkpoint = meta_run
    assert cli.model.projection_discriminator.num_videos == cli.datamodule.num_videos == 12
    assert cli.trainer.global_step == 4  # two batches: a G step and a D step each
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["num_videos"] == 12
    assert any(name.startswith("generator_ema.module.identity_encoder.") for name in state["state_dict"])
    reloaded = LPDModule.load_from_checkpoint(checkpoint, map_location="cpu")
    batch = first_batch(cli)
    torch.testing.assert_close(cli.model.reconstruct_batch(batch), reloaded.reconstruct_batch(batch))
    fresh = meta_cli(synthetic_shards).model
    assert not torch.equal(fresh.reconstruct_batch(batch), reloaded.reconstruct_batch(batch))
    # Cross-person feed-forward reenactment: one person's references, another clip's frames.
    output = reloaded.reenact(batch["references"][0], batch["driving"])
    assert output.shape == batch["driving"].shape and 0 <= output.min() and output.max() <= 1


def test_networks_with_mismatched_embedding_sizes_are_refused(synthetic_shards):
    with pytest.raises(ValueError, match="one identity embedding size"):
        meta_cli(synthetic_shards, "--model.init_args.discriminator.init_args.embedding_dim=32")
    with pytest.raises(ValueError, match="pose_encoder.embedding_dim 16 differs from generator.pose_dim 32"):
        meta_cli(synthetic_shards, "--model.init_args.pose_encoder.init_args.embedding_dim=16")


def test_finetuning_initialises_the_identity_from_the_person_mean(meta_run, synthetic_shards):
    _, checkpoint = meta_run
    cli = finetune_cli(checkpoint, synthetic_shards, "--data.init_args.num_frames=3")
    frames = cli.datamodule.person_frames()["references"]
    assert frames.shape[:2] == (1, 3)
    identity = cli.model.initialise_person(frames)
    meta = LPDModule.load_from_checkpoint(checkpoint, map_location="cpu")
    encoder = meta.generator_ema.module["identity_encoder"].eval()  # fine-tuning starts from the EMA weights
    expected = encoder.embed_frames(frames[0]).mean(0, keepdim=True)
    torch.testing.assert_close(identity, expected)
    assert torch.equal(cli.model.person_generator.identity, identity)
    assert torch.equal(cli.model.person_discriminator.column, meta.projection_discriminator.shared_column + identity)


def test_finetuning_freezes_the_encoders_reloads_alone_and_predicts_an_mp4(meta_run, synthetic_shards, tmp_path,
        run_talkinghead, read_mp4):
    _, meta_checkpoint = meta_run
    meta_copy = tmp_path / "meta.ckpt"
    shutil.copy(meta_checkpoint, meta_copy)
    # The paper's adversarial terms (tiny_finetune.yaml drops them): 3 batches of a G step and a D step.
    cli = finetune_cli(meta_copy, synthetic_shards, "--trainer.max_steps=6", f"--trainer.default_root_dir={tmp_path}",
                       "--model.init_args.loss_weights.adversarial=1",
                       "--model.init_args.loss_weights.feature_matching=10")
    model = cli.model
    assert model.uses_discriminator() and model.optimizer_steps_per_batch == 2
    encoders = {"identity": model.identity_encoder, "pose": model.pose_encoder}
    before = {role: {k: v.clone() for k, v in encoder.state_dict().items()} for role, encoder in encoders.items()}
    assert any("running_mean" in name for name in before["pose"])
    generator_before = {k: v.clone() for k, v in model.person_generator.state_dict().items()}
    # Lightning keeps each submodule's mode at fit start; model.train(), as any caller may do, must not wake the
    # encoders' batch norm.
    model.train()
    cli.trainer.fit(model, cli.datamodule)
    assert cli.trainer.global_step == 6 and bool(model.initialised)
    for role, encoder in encoders.items():  # weights and batch-norm statistics alike
        assert not encoder.training
        for name, value in encoder.state_dict().items():
            assert torch.equal(value, before[role][name]), f"{role} encoder: {name}"
    changed = [name for name, value in model.person_generator.state_dict().items()
               if not torch.equal(value, generator_before[name])]
    assert "identity" in changed and any(name.startswith("generator.") for name in changed)
    assert not model.person_discriminator.discriminator.shared_column.requires_grad
    assert isinstance(model.optimizers()[0].optimizer, torch.optim.RAdam)

    # The fine-tuned checkpoint carries the meta architecture: it reloads with the meta checkpoint gone.
    checkpoint = next(tmp_path.glob("**/last.ckpt"))
    meta_copy.unlink()
    reloaded = LPDFineTuneModule.load_from_checkpoint(checkpoint, map_location="cpu")
    driving = cli.datamodule.person_frames()["references"][0]
    torch.testing.assert_close(model.reenact(driving), reloaded.reenact(driving))

    # predict: the fine-tuned person (the first identity) driven by another person's clip, driving | output mp4.
    out = tmp_path / "predict"
    result = run_talkinghead(
        "predict", "--config", TINY_FINETUNE, f"--ckpt_path={checkpoint}",
        f"--data.init_args.shards={synthetic_shards}", f"--data.init_args.driving={synthetic_shards}",
        "--data.init_args.driving_clip=synth-00003-v001", f"--trainer.default_root_dir={out}", *QUIET)
    assert result.returncode == 0, result.stderr[-4000:]
    (video,) = (out / "predictions").glob("*.mp4")
    assert video.stem == "synth-00003-v001"
    decoded = read_mp4(video)
    assert len(decoded) == 12 and decoded[0].shape == (64, 128, 3)


def test_finetuning_refuses_a_missing_or_foreign_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_from checkpoint not found"):
        LPDFineTuneModule(init_from=str(tmp_path / "missing.ckpt"))
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "talkinghead.lightning.fsth.FSTHModule"}},
               tmp_path / "fsth.ckpt")
    with pytest.raises(ValueError, match="fine-tuning needs a LPDModule"):
        LPDFineTuneModule(init_from=str(tmp_path / "fsth.ckpt"))


def test_paper_scale_configs_instantiate(meta_run, synthetic_shards):
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
           "--trainer.precision=32-true", "--trainer.logger=false", "--trainer.sync_batchnorm=false"]
    cli = TalkingHeadCLI(args=["--config", str(CONFIGS / "meta_vox256.yaml"),
                               f"--data.init_args.shards={synthetic_shards}", *cpu], run=False)
    model = cli.model
    assert isinstance(model, LPDModule) and model.loss_weights["identity_match"] == 1e-2
    assert model.loss_weights["perceptual"] == 3e-2 and model.loss_weights["face_perceptual"] == 6e-3
    assert model.ema_decay == 0.999 and model.pose_augmentation is not None
    assert model.networks["identity_encoder"].trunk.layer1[0].conv2.groups == 32
    assert model.networks["generator"].constant.shape == (1, 512, 4, 4)
    assert model.projection_discriminator.in_channels == 3
    _, checkpoint = meta_run
    cli = TalkingHeadCLI(args=["--config", str(CONFIGS / "finetune_vox256.yaml"),
                               f"--model.init_args.init_from={checkpoint}",
                               f"--data.init_args.shards={synthetic_shards}", *cpu], run=False)
    assert isinstance(cli.model, LPDFineTuneModule) and "identity_match" not in cli.model.loss_weights


@pytest.mark.slow
def test_two_process_cpu_ddp_meta_learning_through_the_cli(tmp_path, synthetic_shards, run_talkinghead):
    """`talkinghead fit` with strategy ddp on 2 CPU processes: both ranks size W alike and train in step."""
    result = run_talkinghead("fit", "--config", TINY_META, f"--data.init_args.shards={synthetic_shards}",
                             "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true",
                             "--trainer.max_steps=4", f"--trainer.default_root_dir={tmp_path}", *QUIET)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    state = torch.load(next(tmp_path.glob("**/last.ckpt")), map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and state["hyper_parameters"]["num_videos"] == 12
