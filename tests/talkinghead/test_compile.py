"""compile: true (talkinghead fit --compile true): the generator side's networks go through torch.compile at fit
start, the discriminator and the EMA copy stay eager, and the outputs do not change."""

from importlib import resources

import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.lightning.adversarial import AdversarialModule

CONFIGS = resources.files("talkinghead.lightning_configs")


def compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_compile_networks_compiles_the_networks_of_the_step_and_keeps_their_outputs():
    cli = TalkingHeadCLI(args=["--config", str(CONFIGS / "osfv" / "tiny.yaml"), "--data.init_args.shards=unused",
                               "--trainer.logger=false"], run=False)
    model = cli.model.eval()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    expected = model.networks.reconstruct(source, driving)
    names = model.compile_networks(backend="eager")  # dynamo's tracing without code generation: seconds, not minutes
    assert names == ["generator side.appearance", "generator side.canonical_keypoints", "generator side.head_pose",
                     "generator side.motion", "generator side.generator", "perceptual.features"]
    assert all(compiled(module) for module in model.networks.children())
    assert not compiled(model.patch_discriminator)  # eager: its spectral norms update in place (see the docstring)
    torch.testing.assert_close(model.networks.reconstruct(source, driving), expected)


def test_fit_with_compile_true_compiles_after_setup(synthetic_shards, tmp_path, monkeypatch):
    seen = []

    def record(self, **options):
        seen.append((type(self).__name__, self.generator_ema is not None, self.trainer.state.fn))
        return []

    monkeypatch.setattr(AdversarialModule, "compile_networks", record)
    TalkingHeadCLI(args=["fit", "--config", str(CONFIGS / "lpd" / "tiny_meta.yaml"), "--compile=true",
                         f"--data.init_args.shards={synthetic_shards}", "--data.init_args.num_workers=0",
                         "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.max_steps=2",
                         "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}"])
    assert seen == [("LPDModule", True, "fit")]  # once, with the EMA copy already made (it stays eager)
    seen.clear()
    TalkingHeadCLI(args=["fit", "--config", str(CONFIGS / "lpd" / "tiny_meta.yaml"),
                         f"--data.init_args.shards={synthetic_shards}", "--data.init_args.num_workers=0",
                         "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.max_steps=2",
                         "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}"])
    assert seen == []  # off by default
