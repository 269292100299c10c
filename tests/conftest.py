"""Shared fixtures: small clips and shards made in tmp folders (tests never read ../shared or the network)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

# Keep every test on CPU with a predictable thread count; wandb never phones home from tests.
os.environ.setdefault("WANDB_MODE", "offline")


def make_random_clip(index: int = 0, num_frames: int = 6, size: int = 16, pose: bool = True, mask: bool = True):
    """A clip with random content, person index // 2 and video index (for tests that need no faces)."""
    from talkinghead.datamodules.shard_format import Clip, ClipMeta

    rng = np.random.default_rng(index)
    return Clip(
        frames=rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8),
        landmarks=(rng.random((num_frames, 68, 2)) * size).astype(np.float32),
        meta=ClipMeta(identity=f"person-{index // 2}", video=f"video-{index}", source="test", fps=25.0, size=size),
        pose=rng.normal(size=(num_frames, 6)).astype(np.float32) if pose else None,
        mask=(rng.random((num_frames, size, size)) > 0.5).astype(np.uint8) if mask else None,
    )


@pytest.fixture
def random_clip():
    """The factory make_random_clip."""
    return make_random_clip


@pytest.fixture(scope="session")
def random_shards(tmp_path_factory):
    """12 random clips (6 people x 2 videos) of 10 frames at 16 px, 2 clips per shard: 6 shards, npy frames."""
    from talkinghead.datamodules.shard_format import ShardWriter

    out = tmp_path_factory.mktemp("random_shards")
    with ShardWriter(out, max_samples=2, codec="npy") as writer:
        for i in range(12):
            writer.write(make_random_clip(i, num_frames=10), f"clip-{i:03d}")
    return out


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory):
    """Synthetic talking-head shards: 6 people x 2 clips x 12 frames at 32 px, 2 clips per shard (6 shards)."""
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards

    out = tmp_path_factory.mktemp("synthetic_shards")
    write_synthetic_shards(out, identities=6, clips_per_identity=2, frames=12, size=32, seed=1, clips_per_shard=2)
    return out


@pytest.fixture(scope="session")
def landmarkless_shards(tmp_path_factory):
    """2 people x 1 clip of 6 random 64-px frames whose landmarks are all missing (NaN: no face found)."""
    from talkinghead.datamodules.shard_format import ShardWriter

    out = tmp_path_factory.mktemp("landmarkless_shards")
    with ShardWriter(out, max_samples=2, codec="npy") as writer:
        for i in range(2):
            clip = make_random_clip(2 * i, num_frames=6, size=64, pose=False, mask=False)
            clip.landmarks[:] = np.nan
            writer.write(clip, f"clip-{i}")
    return out


@pytest.fixture
def run_talkinghead():
    """Runs ``python -m talkinghead ARGS...`` in a fresh process, as a user would; returns the CompletedProcess."""

    def run(*args, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "talkinghead", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture
def read_mp4():
    """Decodes an mp4 into a list of (h, w, 3) uint8 RGB frames."""

    def read(path) -> list[np.ndarray]:
        import av

        with av.open(str(path)) as container:
            return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]

    return read
