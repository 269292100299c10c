"""The CPU learning recipe, inference-only checkpoints and the embedded default model (issue 13)."""

from importlib import resources

import pytest
import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.lightning.osfv import OSFVModule
from talkinghead.lightning.slim import INFERENCE_ONLY, write_inference_checkpoint
from talkinghead.networks.osfv import HeadPoseExpressionEstimator

CONFIGS = resources.files("talkinghead.lightning_configs") / "osfv"
TINY, RECIPE = str(CONFIGS / "tiny.yaml"), str(CONFIGS / "cpu_recipe.yaml")


def recipe_cli(shards, *extra):
    return TalkingHeadCLI(args=["--config", TINY, "--config", RECIPE, f"--data.init_args.shards={shards}",
                                "--data.init_args.image_size=32", "--data.init_args.batch_size=2",
                                "--data.init_args.num_workers=0", "--data.init_args.samples_per_epoch=4",
                                "--trainer.enable_progress_bar=false", *extra], run=False)


def test_motion_path_starts_at_the_rigid_flow():
    """t and δ are exactly 0 at initialisation, in training mode too (batch statistics)."""
    estimator = HeadPoseExpressionEstimator(num_keypoints=4, block_expansion=8, stage_channels=(8, 16),
                                            stage_blocks=(1, 1)).train()
    out = estimator(torch.rand(3, 3, 32, 32))
    assert torch.equal(out["translation"], torch.zeros(3, 3))
    assert torch.equal(out["expression"], torch.zeros(3, 4, 3))
    out["translation"].sum().backward()  # the heads still learn
    assert estimator.translation.weight.grad.abs().sum() > 0


def test_layered_recipe_keeps_the_pixel_l1_term(synthetic_shards):
    """A layered config's loss_weights replaces the earlier dict as a whole: the recipe must name l1 itself (it once
    lost tiny.yaml's l1 = 10 this way and trained on the random-VGG perceptual term alone)."""
    weights = recipe_cli(synthetic_shards).model.loss_weights
    assert weights["l1"] == 10.0 and weights["perceptual"] == 10.0
    assert weights["gan"] == 0.0 and weights["feature_matching"] == 0.0


def test_recipe_without_adversarial_terms_never_runs_the_discriminator(tmp_path, synthetic_shards):
    cli = recipe_cli(synthetic_shards, "--trainer.max_steps=2", f"--trainer.default_root_dir={tmp_path}")
    model = cli.model
    assert model.loss_weights["gan"] == 0 and model.loss_weights["feature_matching"] == 0
    assert not model.uses_discriminator()
    before = {k: v.clone() for k, v in model.patch_discriminator.state_dict().items()}
    calls = []
    model.patch_discriminator.register_forward_hook(lambda *_: calls.append(1))
    cli.trainer.fit(model, cli.datamodule)
    assert cli.trainer.global_step == 2  # one optimizer step per batch: G only
    assert not calls
    for key, value in model.patch_discriminator.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_inference_checkpoint_is_small_and_reloads_to_the_same_outputs(tmp_path, synthetic_shards):
    cli = recipe_cli(synthetic_shards, "--trainer.max_steps=2", "--model.init_args.ema_decay=0.5",
                     f"--trainer.default_root_dir={tmp_path}")
    cli.trainer.fit(cli.model, cli.datamodule)
    full = tmp_path / "full.ckpt"
    cli.trainer.save_checkpoint(full)
    slim = write_inference_checkpoint(cli.model, tmp_path / "slim.ckpt", cli.trainer.global_step, {"image_size": 32})
    assert slim.stat().st_size < full.stat().st_size / 4  # no VGG19, no discriminator, no optimizer state
    state = torch.load(slim, map_location="cpu", weights_only=True)  # plain tensors and types only
    assert state[INFERENCE_ONLY] == "networks." and state["datamodule_hyper_parameters"]["image_size"] == 32
    assert not any("discriminator" in k or "perceptual" in k for k in state["state_dict"])

    from talkinghead.evaluation import checkpoint_image_size, load_model

    reloaded = load_model(slim)
    assert isinstance(reloaded, OSFVModule) and checkpoint_image_size(slim) == 32
    source, driving = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    # The file holds the EMA weights; the reloaded module infers with exactly those.
    torch.testing.assert_close(reloaded.reconstruct(source, driving), cli.model.reconstruct(source, driving))
    fresh = recipe_cli(synthetic_shards).model
    assert not torch.allclose(fresh.reconstruct(source, driving), reloaded.reconstruct(source, driving))


def test_embedded_default_is_small_and_loads_as_shipped():
    from talkinghead.commands.demo import default_checkpoint
    from talkinghead.evaluation import checkpoint_image_size, load_model

    path = default_checkpoint()
    assert path.stat().st_size < 16 * 2**20
    assert torch.load(path, map_location="cpu", weights_only=True)[INFERENCE_ONLY]
    model = load_model(path)
    assert isinstance(model, OSFVModule) and checkpoint_image_size(path) == 64
    out = model.animate(torch.rand(3, 64, 64), torch.rand(2, 3, 64, 64), yaw=20.0)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()


@pytest.mark.slow
def test_embedded_default_reconstructs_and_turns_new_people(tmp_path):
    """The shipped model, on synthetic people outside every range used to train, tune or report it: a trained
    reconstruction (an untrained one scores about 13 dB), and a free view that really turns the head (better than
    the model's own unturned output and than the unturned source, on the person)."""
    from talkinghead.commands.demo import default_checkpoint
    from talkinghead.datamodules.shard_format import decode_clip, expand_shards, iter_shard_samples
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards
    from talkinghead.datamodules.transforms import clip_to_frames
    from talkinghead.evaluation import load_model
    from talkinghead.freeview import MODEL, MODEL_NO_TURN, NO_TURN, score_free_view, score_reconstruction

    write_synthetic_shards(tmp_path, identities=4, first_identity=500_000, clips_per_identity=1, frames=24, size=64,
                           seed=3, clips_per_shard=1)
    model = load_model(default_checkpoint())
    frames = [clip_to_frames(decode_clip(s), 64) for url in expand_shards(str(tmp_path))
              for s in iter_shard_samples(url)]
    batches = [{"source": torch.stack([f["image"][0] for f in frames]),
                "driving": torch.stack([f["image"][i] for f in frames]),
                "source_pose": torch.stack([f["pose"][0] for f in frames]),
                "driving_pose": torch.stack([f["pose"][i] for f in frames]),
                "driving_mask": torch.stack([f["mask"][i] for f in frames])} for i in (8, 16, 23)]
    assert score_reconstruction(model, batches)["all pairs"][MODEL]["PSNR"] > 20
    turned = score_free_view(model, str(tmp_path), yaws=(-20.0, 20.0), num_clips=4)["all yaws"]
    assert turned[MODEL]["PSNR fg"] > turned[MODEL_NO_TURN]["PSNR fg"] + 0.5
    assert turned[MODEL]["PSNR fg"] > turned[NO_TURN]["PSNR fg"]


def test_ema_decay_warms_up_so_a_short_run_does_not_remember_the_untrained_weights():
    from torch.optim.swa_utils import AveragedModel

    from talkinghead.lightning.adversarial import ema_with_warmup

    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = AveragedModel(net, multi_avg_fn=ema_with_warmup(0.998), use_buffers=True)
    ema.update_parameters(net)  # the first update copies
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net(torch.randn(4, 3))  # BatchNorm buffers move too
    ema.update_parameters(net)  # n = 1: decay (1 + 1) / (10 + 1)
    torch.testing.assert_close(ema.module[0].weight, start + 9 / 11)
    for _ in range(200):
        ema.update_parameters(net)
    # A fixed 0.998 would still hold 0.998^201 = 67% of the start; with the warm-up it is below 1e-6.
    assert (ema.module[0].weight - net[0].weight).abs().max() < 1e-5
    assert ema.module[1].num_batches_tracked == net[1].num_batches_tracked


def test_exponential_moving_average_updates_as_averaged_model_and_follows_replaced_buffers():
    """ExponentialMovingAverage finds the tensors once; its averages equal torch's AveragedModel's step by step, and
    a buffer replaced after the first update (as .to() or a new assignment does) is still the one averaged."""
    import copy

    from torch.optim.swa_utils import AveragedModel

    from talkinghead.lightning.adversarial import ExponentialMovingAverage, ema_with_warmup

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    twin = copy.deepcopy(net)
    fast = ExponentialMovingAverage(net, multi_avg_fn=ema_with_warmup(0.9), use_buffers=True)
    reference = AveragedModel(twin, multi_avg_fn=ema_with_warmup(0.9), use_buffers=True)
    for step in range(5):
        x = torch.randn(4, 3)
        for model in (net, twin):
            with torch.no_grad():
                model[0].weight.add_(0.1 * (step + 1))
            model(x)  # BatchNorm statistics and its integer count move too
        if step == 2:
            for model in (net, twin):
                model[1].running_mean = model[1].running_mean + 1.0  # a new tensor object
        fast.update_parameters(net)
        reference.update_parameters(twin)
        for (name, mine), theirs in zip(fast.module.state_dict().items(), reference.module.state_dict().values()):
            torch.testing.assert_close(mine, theirs, msg=f"step {step}: {name}")
    assert int(fast.n_averaged) == 5


def test_flows_take_the_labelled_rotation_in_training_only_and_where_labels_exist():
    from talkinghead.geometry import rotation_matrix
    from talkinghead.lightning.osfv import with_labelled_rotation

    estimated = {"yaw": torch.tensor([1.0, 2.0]), "rotation": torch.eye(3).expand(2, 3, 3).clone()}
    labels = torch.tensor([[30.0, -10.0, 5.0, 0.0, 0.0, 0.0], [float("nan")] * 6])
    pose = with_labelled_rotation(estimated, labels)
    torch.testing.assert_close(pose["rotation"][0], rotation_matrix(*torch.tensor([30.0, -10.0, 5.0]).unbind()))
    torch.testing.assert_close(pose["rotation"][1], torch.eye(3))  # no label: H's rotation stays
    assert torch.equal(pose["yaw"], estimated["yaw"])  # the head-pose loss still reads H's angles
    assert with_labelled_rotation(estimated, None) is estimated


def test_recipe_flows_use_the_labels_in_training_and_h_at_inference(synthetic_shards):
    cli = recipe_cli(synthetic_shards)
    model = cli.model
    assert model.flow_rotation_from_labels
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    seen = []
    model.networks["motion"].register_forward_hook(lambda _m, args, _o: seen.append(args[3].detach().clone()))
    model.train()
    model.run_generator(batch)
    from talkinghead.geometry import rotation_matrix

    torch.testing.assert_close(seen[-1], rotation_matrix(*batch["source_pose"][:, :3].unbind(-1)))
    model.reconstruct(batch["source"], batch["driving"])
    assert not torch.allclose(seen[-1], seen[0])  # inference: H's estimate, not the label
