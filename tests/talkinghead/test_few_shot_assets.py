"""The shipped meta-learned tiny FSTH and LPD checkpoints: small, loadable without a config and as fine-tuning's
init_from, and fine-tuning starts from their meta-learned discriminator."""

from importlib import resources

import pytest
import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.evaluation import load_model
from talkinghead.lightning.fsth import FSTHFineTuneModule, FSTHModule
from talkinghead.lightning.lpd import LPDFineTuneModule, LPDModule
from talkinghead.lightning.slim import INFERENCE_ONLY

ASSETS = resources.files("talkinghead.assets")
CONFIGS = resources.files("talkinghead.lightning_configs")
KINDS = {
    "fsth": ("fsth_tiny_meta.ckpt", FSTHModule, FSTHFineTuneModule),
    "lpd": ("lpd_tiny_meta.ckpt", LPDModule, LPDFineTuneModule),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_shipped_meta_checkpoint_is_small_and_starts_fine_tuning(kind, synthetic_shards):
    name, meta_class, finetune_class = KINDS[kind]
    path = str(ASSETS / name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state[INFERENCE_ONLY] and "optimizer_states" not in state
    stored = state["state_dict"]
    assert not any(key.startswith(("content_vgg19.", "perceptual.")) for key in stored)
    discriminator = {k: v for k, v in stored.items() if k.startswith("projection_discriminator.")}
    assert discriminator and state["hyper_parameters"]["num_videos"] > 0
    assert state["talkinghead_image_size"] == 64

    meta = load_model(path)  # how `talkinghead evaluate` loads checkpoints
    assert isinstance(meta, meta_class) and not meta.training

    cli = TalkingHeadCLI(args=["--config", str(CONFIGS / kind / "tiny_finetune.yaml"),
                               f"--model.init_args.init_from={path}", f"--data.init_args.shards={synthetic_shards}",
                               "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false"], run=False)
    assert isinstance(cli.model, finetune_class)
    tuned = cli.model.person_discriminator.discriminator.state_dict()
    shared = [k for k in discriminator if not k.startswith("projection_discriminator.video_")]  # W: per video
    assert any(k.endswith("shared_column") for k in shared)
    for key in shared:  # the meta-learned D, not a fresh one
        torch.testing.assert_close(tuned[key.removeprefix("projection_discriminator.")], discriminator[key], msg=key)
