"""bf16-mixed on the CPU: each tiny model's G+D step runs under autocast and its losses stay near fp32's."""

from importlib import resources

import pytest
import torch

from talkinghead.cli import TalkingHeadCLI
from talkinghead.losses.perceptual import image_pyramid

CONFIGS = resources.files("talkinghead.lightning_configs")


def test_image_pyramid_of_a_bfloat16_image_on_the_cpu():
    """PyTorch's CPU antialiased resize has no bfloat16 kernel: the pyramid resizes in float32 and hands back bf16."""
    image = torch.rand(2, 3, 64, 64)
    levels = image_pyramid(image.bfloat16(), (1.0, 0.5, 0.25))
    assert [level.dtype for level in levels] == [torch.bfloat16] * 3
    assert [level.shape[-1] for level in levels] == [64, 32, 16]
    for level, exact in zip(levels, image_pyramid(image, (1.0, 0.5, 0.25))):
        torch.testing.assert_close(level.float(), exact, atol=1e-2, rtol=0)


@pytest.mark.parametrize("config", ["osfv/tiny.yaml", "fsth/tiny_meta.yaml", "lpd/tiny_meta.yaml"])
def test_bf16_mixed_step_gives_the_fp32_losses_to_bf16_precision(config, synthetic_shards, tmp_path):
    def one_step(precision: str) -> dict[str, float]:
        cli = TalkingHeadCLI(args=["--config", str(CONFIGS / config), f"--data.init_args.shards={synthetic_shards}",
                                   "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false",
                                   "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path / precision}",
                                   f"--trainer.precision={precision}", "--trainer.max_steps=1",
                                   "--trainer.limit_val_batches=0"], run=False)
        torch.manual_seed(1)
        cli.trainer.fit(cli.model, cli.datamodule)
        return {k: v.item() for k, v in cli.trainer.callback_metrics.items() if k.startswith("train/g/")}

    exact, mixed = one_step("32-true"), one_step("bf16-mixed")
    assert exact.keys() == mixed.keys() and len(exact) >= 3
    for name, value in exact.items():
        assert mixed[name] == pytest.approx(value, rel=0.05, abs=1e-3), name
