import json
import tarfile

import numpy as np
import pytest

from talkinghead.datamodules.shard_format import (
    ShardError,
    ShardWriter,
    decode_clip,
    encode_clip,
    expand_shards,
    iter_shard_samples,
    read_index,
)


def write(folder, clips, codec="npy", per_shard=2):
    with ShardWriter(folder, max_samples=per_shard, codec=codec) as writer:
        for i, clip in enumerate(clips):
            writer.write(clip, f"clip-{i:03d}")
    return writer.written


def test_round_trip_npy_is_exact(tmp_path, random_clip):
    clips = [random_clip(i) for i in range(5)]
    shards = write(tmp_path, clips)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    decoded = [decode_clip(s) for url in expand_shards(str(tmp_path)) for s in iter_shard_samples(url)]
    assert len(decoded) == 5
    for original, copy in zip(clips, decoded):
        np.testing.assert_array_equal(copy.frames, original.frames)
        np.testing.assert_array_equal(copy.landmarks, original.landmarks)
        np.testing.assert_array_equal(copy.pose, original.pose)
        np.testing.assert_array_equal(copy.mask, original.mask)
        assert copy.meta == original.meta


def test_round_trip_mp4_keeps_labels_and_approximates_frames(tmp_path, random_clip):
    clip = random_clip(0, num_frames=5, size=32, pose=False, mask=False)
    # Smooth grey ramps, brighter each frame: H.264 (yuv420p) is lossy, random noise would not survive it,
    # and the per-frame brightness shows that frames come back in order.
    ramp = np.linspace(0, 160, 32)[None, :, None] + np.linspace(0, 40, 32)[:, None, None]
    clip.frames[:] = (ramp[None] + 12 * np.arange(5)[:, None, None, None]).repeat(3, -1).astype(np.uint8)
    write(tmp_path, [clip], codec="mp4")
    sample = next(iter_shard_samples(str(tmp_path / "shard-000000.tar")))
    assert "frames.mp4" in sample and "pose.npy" not in sample and "mask.npz" not in sample
    copy = decode_clip(sample)
    assert copy.frames.shape == clip.frames.shape
    assert np.abs(copy.frames.astype(int) - clip.frames).mean() < 2
    np.testing.assert_allclose(copy.frames.mean((1, 2, 3)), clip.frames.mean((1, 2, 3)), atol=1.5)
    np.testing.assert_array_equal(copy.landmarks, clip.landmarks)
    assert copy.pose is None and copy.mask is None
    subset = decode_clip(sample, [4, 1])
    np.testing.assert_array_equal(subset.landmarks, clip.landmarks[[4, 1]])
    assert subset.frames.shape == (2, 32, 32, 3)


def test_decode_subset_of_frames(tmp_path, random_clip):
    clip = random_clip(3, num_frames=8)
    write(tmp_path, [clip])
    sample = next(iter_shard_samples(str(tmp_path / "shard-000000.tar")))
    subset = decode_clip(sample, [6, 2, 2])
    np.testing.assert_array_equal(subset.frames, clip.frames[[6, 2, 2]])
    np.testing.assert_array_equal(subset.pose, clip.pose[[6, 2, 2]])
    with pytest.raises(ShardError, match="outside 0..7"):
        decode_clip(sample, [8])


def test_index_sidecar_matches_a_scan(tmp_path, random_clip):
    write(tmp_path, [random_clip(i) for i in range(3)])
    url = str(tmp_path / "shard-000000.tar")
    from_sidecar = read_index(url)
    (tmp_path / "shard-000000.json").unlink()
    assert read_index(url) == from_sidecar
    assert [(e.key, e.identity, e.video, e.num_frames) for e in from_sidecar] == [
        ("clip-000", "person-0", "video-0", 6),
        ("clip-001", "person-0", "video-1", 6),
    ]


def test_writer_leaves_no_partial_shard_on_error(tmp_path, random_clip):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, max_samples=4) as writer:
            writer.write(random_clip(0), "a")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_leaves_no_partial_shard_and_says_so(tmp_path, random_clip, monkeypatch):
    """ENOSPC while a shard closes (on abort too): no .tar.partial, no index without a shard, one clear error."""
    import errno

    from talkinghead.datamodules import shard_format

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ShardError, match="No space left on device.*disk full"):
        with ShardWriter(tmp_path, max_samples=2, codec="npy") as writer:
            writer.write(random_clip(0), "a")
            monkeypatch.setattr(shard_format._TarStream, "close", full)
            writer.write(random_clip(1), "b")  # fills the shard: it closes here
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="interrupted"):
        with ShardWriter(tmp_path / "abort", max_samples=4, codec="npy") as writer:
            writer.write(random_clip(0), "a")
            monkeypatch.setattr(shard_format._TarStream, "discard", full)
            raise RuntimeError("interrupted")
    assert list((tmp_path / "abort").iterdir()) == []


def test_an_exception_after_a_checkpoint_keeps_the_samples_before_it(tmp_path, random_clip):
    with pytest.raises(RuntimeError, match="interrupted"):
        with ShardWriter(tmp_path, max_samples=10, codec="npy") as writer:
            writer.write(random_clip(0), "a")
            writer.write(random_clip(1), "b")
            assert writer.checkpoint() > 0
            writer.write(random_clip(2), "c")  # not made durable: dropped
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.json", "shard-000000.tar"]
    url = str(tmp_path / "shard-000000.tar")
    assert [s["__key__"] for s in iter_shard_samples(url)] == ["a", "b"]
    assert [e.key for e in read_index(url)] == ["a", "b"]
    np.testing.assert_array_equal(decode_clip(next(iter_shard_samples(url))).frames, random_clip(0).frames)


def test_a_killed_writers_partial_shard_is_completed_at_its_checkpoint(tmp_path, random_clip):
    from talkinghead.datamodules.shard_format import complete_partial_shard

    writer = ShardWriter(tmp_path, codec="npy", lock=False)
    writer.write(random_clip(0), "a")
    offset = writer.checkpoint()
    writer.write(random_clip(1), "b")
    writer._tar.file.flush()  # then the process is killed: the shard is never closed
    (partial,) = tmp_path.glob("*.tar.partial")
    with pytest.raises(ShardError, match="shorter than"):
        complete_partial_shard(partial, partial.stat().st_size + 512)
    path = complete_partial_shard(partial, offset)  # the index is read back from the samples
    assert not partial.exists() and path == tmp_path / "shard-000000.tar"
    assert [(e.key, e.identity, e.num_frames) for e in read_index(str(path))] == \
        [("a", random_clip(0).meta.identity, random_clip(0).num_frames)]
    assert len(list(iter_shard_samples(str(path)))) == 1


def test_infinite_labels_are_refused_nan_stays_unknown(tmp_path, random_clip):
    clip = random_clip(0)
    pose = clip.pose.copy()
    pose[2, 0] = np.inf
    with pytest.raises(ShardError, match=r"pose hold \+-inf at frames \[2\]"):
        type(clip)(frames=clip.frames, landmarks=clip.landmarks, meta=clip.meta, pose=pose)
    landmarks = clip.landmarks.copy()
    landmarks[4, 7, 1] = -np.inf
    with pytest.raises(ShardError, match=r"landmarks hold \+-inf at frames \[4\]"):
        type(clip)(frames=clip.frames, landmarks=landmarks, meta=clip.meta)
    pose[2, 0] = np.nan  # unknown: allowed
    write(tmp_path, [type(clip)(frames=clip.frames, landmarks=clip.landmarks, meta=clip.meta, pose=pose)])
    # A shard written by another tool with inf in it is refused by the reader, naming the sample.
    sample = next(iter_shard_samples(str(tmp_path / "shard-000000.tar")))
    bad = dict(sample)
    buffer = __import__("io").BytesIO()
    np.save(buffer, np.where(np.isnan(pose), np.inf, pose).astype(np.float32))
    bad["pose.npy"] = buffer.getvalue()
    with pytest.raises(ShardError, match="clip-000.*inf"):
        decode_clip(bad)


def test_writer_never_overwrites(tmp_path, random_clip):
    write(tmp_path, [random_clip(0)])
    before = (tmp_path / "shard-000000.tar").read_bytes()
    with pytest.raises(ShardError, match="already exists"):
        write(tmp_path, [random_clip(1)])
    assert (tmp_path / "shard-000000.tar").read_bytes() == before


def test_bad_keys_and_shapes_are_refused(random_clip):
    with pytest.raises(ShardError, match="may only hold"):
        encode_clip(random_clip(0), "has.dot")
    clip = random_clip(0)
    with pytest.raises(ShardError, match=r"landmarks must have shape \(T, 68, 2\)"):
        type(clip)(frames=clip.frames, landmarks=clip.landmarks[:, :5], meta=clip.meta)
    with pytest.raises(ShardError, match="6 frames but 3 landmark sets"):
        type(clip)(frames=clip.frames, landmarks=clip.landmarks[:3], meta=clip.meta)


def test_expand_shards_patterns(tmp_path, random_clip):
    write(tmp_path, [random_clip(i) for i in range(6)])
    every = [str(tmp_path / f"shard-00000{i}.tar") for i in range(3)]
    assert expand_shards(str(tmp_path)) == every
    assert expand_shards(str(tmp_path / "*.tar")) == every
    assert expand_shards(str(tmp_path / "shard-{000000..000001}.tar")) == every[:2]
    assert expand_shards(f"file://{tmp_path}/shard-000002.tar") == every[2:]
    assert expand_shards([every[0], every[2]]) == [every[0], every[2]]


@pytest.mark.parametrize("spec, message", [("nothing-here/*.tar", "matched no .tar files"), ("", "empty"),
                                           ("missing/shard.tar", "does not exist")])
def test_expand_shards_errors_say_what_to_do(tmp_path, spec, message):
    with pytest.raises(ShardError, match=message) as error:
        expand_shards(str(tmp_path / spec) if spec else spec)
    assert "--data.init_args.shards" in str(error.value)


def test_truncated_and_garbage_shards_name_the_file(tmp_path, random_clip):
    write(tmp_path, [random_clip(0), random_clip(1)], per_shard=4)
    good = (tmp_path / "shard-000000.tar").read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good[: len(good) // 2 + 100])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    for path in (truncated, garbage):
        with pytest.raises(ShardError, match=f"shard {path} is unreadable"):
            list(iter_shard_samples(str(path)))


def test_samples_missing_members_or_with_another_version_are_refused(tmp_path):
    path = tmp_path / "foreign.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("x.txt")
        info.size = 2
        import io

        tar.addfile(info, io.BytesIO(b"hi"))
    sample = next(iter_shard_samples(str(path)))
    with pytest.raises(ShardError, match="lacks landmarks.npy, meta.json, frames.mp4 or frames.npy"):
        decode_clip(sample)


def test_format_version_is_checked(tmp_path, random_clip):
    sample = encode_clip(random_clip(0), "a", codec="npy")
    meta = json.loads(sample["meta.json"])
    meta["format_version"] = 99
    sample["meta.json"] = json.dumps(meta).encode()
    with pytest.raises(ShardError, match="format_version 99"):
        decode_clip(sample)


def test_one_writer_per_folder(tmp_path, random_clip):
    """A second process writing into a folder another live process writes is refused, naming the holder; a dead
    run's lock file does not block; the lock file goes when the writer closes."""
    import os
    import subprocess
    import sys

    from talkinghead.datamodules.shard_format import LOCK_NAME

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom talkinghead.datamodules.shard_format import ShardWriter\n"
         f"w = ShardWriter({str(tmp_path)!r}, prefix='other')\nprint('locked', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ShardError, match=rf"being written by pid {holder.pid} on .*lock file .*{LOCK_NAME}"):
            write(tmp_path, [random_clip(0)])
        assert not list(tmp_path.glob("*.tar*"))  # nothing written, nothing of the holder's removed
    finally:
        holder.kill()
        holder.wait()
    write(tmp_path, [random_clip(0)])  # the holder died without releasing: the kernel dropped its lock
    assert (tmp_path / "shard-000000.tar").exists() and not (tmp_path / LOCK_NAME).exists()
    with ShardWriter(tmp_path / "nested", prefix="a") as outer, ShardWriter(tmp_path / "nested", prefix="b"):
        assert (tmp_path / "nested" / LOCK_NAME).exists()  # re-entrant within a process
        outer.write(random_clip(1), "x")
    assert not (tmp_path / "nested" / LOCK_NAME).exists()
    assert os.listdir(tmp_path / "nested") == ["a-000000.tar", "a-000000.json"] or sorted(
        os.listdir(tmp_path / "nested")) == ["a-000000.json", "a-000000.tar"]
