"""OSFVModule: free-view maths, the CLI fit with checkpoint reload, and a 2-process CPU DDP fit."""

import subprocess
import sys
from importlib import resources

import pytest
import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.flows import transform_keypoints
from talkinghead.geometry import rotation_matrix
from talkinghead.lightning.osfv import OSFVModule, compose_driving_pose
from talkinghead.networks.discriminators import MultiScalePatchDiscriminator

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")
PAPER = str(resources.files("talkinghead.lightning_configs") / "osfv" / "vox256.yaml")


CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.precision=32-true",
       "--trainer.sync_batchnorm=false", "--trainer.logger=false"]


def tiny_cli(shards, *extra):
    return TalkingHeadCLI(args=["--config", TINY, f"--data.init_args.shards={shards}", *extra], run=False)


def random_pose(b, k, seed):
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(b, 3, generator=g) - 0.5) * 60
    return {
        "rotation": rotation_matrix(*angles.unbind(-1)),
        "translation": torch.randn(b, 3, generator=g) * 0.1,
        "expression": torch.randn(b, k, 3, generator=g) * 0.05,
    }


def test_user_rotation_moves_driving_keypoints_exactly_by_r_u():
    canonical = torch.rand(3, 5, 3) * 2 - 1
    driving = random_pose(3, 5, seed=0)
    user = rotation_matrix(torch.tensor(25.0), torch.tensor(-10.0), torch.tensor(5.0))
    zero = torch.zeros(3)
    plain = transform_keypoints(canonical, *compose_driving_pose({}, driving, None, torch.eye(3), zero))
    rotated = transform_keypoints(canonical, *compose_driving_pose({}, driving, None, user, zero))
    # x_d = R_d x_c + t_d + δ_d becomes R_u R_d x_c + t_d + δ_d: the rigid part turns by exactly R_u.
    rigid = plain - driving["translation"][:, None] - driving["expression"]
    torch.testing.assert_close(rotated - driving["translation"][:, None] - driving["expression"],
                               rigid @ user.T)
    shift = torch.tensor([0.1, -0.05, 0.0])
    moved = transform_keypoints(canonical, *compose_driving_pose({}, driving, None, torch.eye(3), shift))
    torch.testing.assert_close(moved, plain + shift)


def test_relative_motion_starts_from_the_source_pose():
    source, driving = random_pose(1, 4, seed=1), random_pose(2, 4, seed=2)
    reference = {k: v[:1] for k, v in driving.items()}
    rotation, translation, expression = compose_driving_pose(source, reference, reference, torch.eye(3), torch.zeros(3))
    torch.testing.assert_close(rotation, source["rotation"])
    torch.testing.assert_close(translation, source["translation"])
    torch.testing.assert_close(expression, source["expression"])


def test_paper_config_builds_the_paper_networks(synthetic_shards):
    # The paper config targets GPUs (DDP, SyncBatchNorm, bf16-mixed); here it is only instantiated on the CPU.
    cli = TalkingHeadCLI(args=["--config", PAPER, f"--data.init_args.shards={synthetic_shards}", *CPU], run=False)
    counts = {name: sum(p.numel() for p in net.parameters()) / 1e6 for name, net in cli.model.networks.named_children()}
    assert counts["appearance"] == pytest.approx(0.84, rel=0.1)
    assert counts["canonical_keypoints"] == pytest.approx(42, rel=0.1)
    assert counts["head_pose"] == pytest.approx(30, rel=0.1)
    assert counts["motion"] == pytest.approx(44, rel=0.1)
    assert cli.model.loss_weights["perceptual"] == 10 and cli.model.loss_weights["head_pose"] == 20
    assert isinstance(cli.model.patch_discriminator, MultiScalePatchDiscriminator)


def test_free_view_changes_the_output(synthetic_shards):
    cli = tiny_cli(synthetic_shards)
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    model = cli.model
    source, driving = batch["source"][0], batch["driving"][:2]
    straight = model.animate(source, driving, relative=False)
    turned = model.animate(source, driving, relative=False, yaw=30.0)
    assert straight.shape == turned.shape == driving.shape
    assert (straight - turned).abs().mean() > 1e-4


def test_fit_through_the_cli_then_reload_the_checkpoint(tmp_path, synthetic_shards):
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "fit", "--config", TINY,
         f"--data.init_args.shards={synthetic_shards}", f"--data.init_args.val_shards={synthetic_shards}",
         "--trainer.max_steps=4", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    checkpoint = next(tmp_path.glob("**/last.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4  # 2 batches x (G step + D step)
    cli = tiny_cli(synthetic_shards)
    cli.model.load_state_dict(state["state_dict"])
    # A downstream app needs no config: the checkpoint says how to rebuild every network.
    reloaded = OSFVModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert type(reloaded.networks["generator"]) is type(cli.model.networks["generator"])
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    torch.testing.assert_close(cli.model.reconstruct(batch["source"], batch["driving"]),
                               reloaded.reconstruct(batch["source"], batch["driving"]))
    assert not torch.equal(tiny_cli(synthetic_shards).model.reconstruct(batch["source"], batch["driving"]),
                           reloaded.reconstruct(batch["source"], batch["driving"]))  # the weights were restored
    # The CLI resumes from it as well.
    resumed = subprocess.run(
        [sys.executable, "-m", "talkinghead", "validate", "--config", TINY,
         f"--data.init_args.shards={synthetic_shards}", f"--data.init_args.val_shards={synthetic_shards}",
         f"--ckpt_path={checkpoint}", "--trainer.enable_progress_bar=false",
         f"--trainer.default_root_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "val/psnr" in resumed.stdout


@pytest.mark.slow
def test_two_process_cpu_ddp_fit_through_the_cli(tmp_path, synthetic_shards):
    """`talkinghead fit` with strategy ddp on 2 CPU processes, as on GPUs (Lightning re-launches the command).

    Plain ddp rather than ddp_spawn: spawn pickles the model, and parametrized (spectral-norm) modules refuse to be
    pickled; multi-GPU training uses ddp anyway.
    """
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "fit", "--config", TINY,
         f"--data.init_args.shards={synthetic_shards}", "--data.init_args.num_workers=0",
         "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true", "--trainer.max_steps=4",
         "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    state = torch.load(next(tmp_path.glob("**/last.ckpt")), map_location="cpu", weights_only=False)
    assert state["global_step"] == 4


def test_ema_of_the_generator_side_is_used_for_inference(tmp_path, synthetic_shards):
    cli = tiny_cli(synthetic_shards, "--model.init_args.ema_decay=0.5", "--trainer.max_steps=4",
                   "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false",
                   f"--trainer.default_root_dir={tmp_path}")
    cli.trainer.fit(cli.model, cli.datamodule)
    model = cli.model
    assert model.inference_networks() is model.generator_ema.module
    trained = dict(model.networks.named_parameters())
    averaged = dict(model.generator_ema.module.named_parameters())
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(trained[name], averaged[name]) for name in trained)
    assert model.generator_ema.n_averaged.item() == 2  # one update per generator step
    # A checkpoint with an EMA reloads without its config, the average included.
    from talkinghead.lightning.osfv import OSFVModule

    reloaded = OSFVModule.load_from_checkpoint(next(tmp_path.glob("**/last.ckpt")), map_location="cpu")
    for name, value in reloaded.generator_ema.module.state_dict().items():
        torch.testing.assert_close(value, model.generator_ema.module.state_dict()[name])
