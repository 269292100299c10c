"""The talking-head shard format: the one module that writes and reads it (spec: docs/SHARD_FORMAT.md).

A shard is a WebDataset tar file; each sample is one clip (a short run of frames of one person) stored as
members sharing a key::

    <key>.frames.mp4 | <key>.frames.npy   frames, (T, H, W, 3) uint8 RGB
    <key>.landmarks.npy                    (T, 68, 2) float32, iBUG-68 points in crop pixels
    <key>.pose.npy            (optional)   (T, 6) float32: yaw, pitch, roll (degrees), tx, ty, tz (normalised)
    <key>.mask.npz            (optional)   (T, H, W) uint8 foreground mask in {0, 1}, array name "mask"
    <key>.meta.json                        identity, video, source, fps, size, format_version, ...

Next to each ``NAME.tar`` the writer puts ``NAME.json``, an index of the shard's samples (key, identity, video,
number of frames) so that readers can find identities and videos without streaming the tar.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import socket
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import braceexpand
import fsspec
import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "NUM_LANDMARKS",
    "Clip",
    "ClipMeta",
    "FolderLock",
    "IndexEntry",
    "ShardError",
    "ShardWriter",
    "complete_partial_shard",
    "decode_clip",
    "decode_frames",
    "encode_clip",
    "expand_shards",
    "iter_shard_samples",
    "read_index",
    "sample_num_frames",
]

FORMAT_VERSION = 1
NUM_LANDMARKS = 68
FRAME_CODECS = ("mp4", "npy")
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-/]+$")
_REQUIRED_MEMBERS = ("landmarks.npy", "meta.json")


class ShardError(ValueError):
    """A shard, a shard pattern or a sample inside a shard is unusable; the message says which and what to do."""


@dataclass
class ClipMeta:
    """Metadata of one clip (``meta.json``)."""

    identity: str  # person id, e.g. VoxCeleb2 "id00012" or "synth-00003"
    video: str  # video id, unique across the data set (identity-prefixed by the writers)
    source: str  # where the frames came from: an input file path or "synthetic"
    fps: float  # frames per second of the clip
    size: int  # side of the square crop in pixels
    crop_box: list[float] | None = None  # (x0, y0, x1, y1) of the crop in source pixels, when cropped from a video
    preprocessing: str = ""  # name and version of the tool that wrote the clip
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # anything else a writer wants to keep


@dataclass
class Clip:
    """One sample of a shard, decoded."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (T, 68, 2) float32 crop pixels
    meta: ClipMeta
    pose: np.ndarray | None = None  # (T, 6) float32, or None when unknown
    mask: np.ndarray | None = None  # (T, H, W) uint8 in {0, 1}, or None when unknown

    def __post_init__(self) -> None:
        _check_clip_arrays(self.frames, self.landmarks, self.pose, self.mask, where="clip")

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])


@dataclass(frozen=True)
class IndexEntry:
    """One line of a shard index: where a clip lives and whose it is."""

    shard: str  # the shard URL or path
    key: str  # the sample key inside the shard
    identity: str
    video: str
    num_frames: int


def _check_clip_arrays(
    frames: np.ndarray | None,
    landmarks: np.ndarray,
    pose: np.ndarray | None,
    mask: np.ndarray | None,
    where: str,
) -> None:
    def fail(problem: str) -> None:
        raise ShardError(f"{where}: {problem}")

    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2):
        fail(f"landmarks must have shape (T, 68, 2), got {tuple(landmarks.shape)}")
    num_frames = landmarks.shape[0]
    if num_frames < 1:
        fail("a clip needs at least one frame")
    if frames is not None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            fail(f"frames must be uint8 (T, H, W, 3) RGB, got {frames.dtype} {tuple(frames.shape)}")
        if frames.shape[0] != num_frames:
            fail(f"{frames.shape[0]} frames but {num_frames} landmark sets")
    if pose is not None and pose.shape != (num_frames, 6):
        fail(f"pose must have shape (T, 6) = ({num_frames}, 6), got {tuple(pose.shape)}")
    for name, values in (("landmarks", landmarks), ("pose", pose)):
        if values is not None and np.isinf(values).any():
            frames_bad = sorted({int(i) for i in np.nonzero(np.isinf(values).reshape(num_frames, -1).any(1))[0]})
            fail(f"{name} hold +-inf at frames {frames_bad[:10]}: NaN marks an unknown value, inf is never valid")
    if mask is not None:
        if mask.ndim != 3 or mask.shape[0] != num_frames:
            fail(f"mask must have shape (T, H, W) with T = {num_frames}, got {tuple(mask.shape)}")
        if frames is not None and mask.shape[1:] != frames.shape[1:3]:
            fail(f"mask size {tuple(mask.shape[1:])} differs from frame size {tuple(frames.shape[1:3])}")


# ----------------------------------------------------------------------------------------------------------------
# Encoding


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode_frames_mp4(frames: np.ndarray, fps: float, crf: int = 18) -> bytes:
    """H.264 mp4 bytes of (T, H, W, 3) uint8 RGB frames (H and W must be even)."""
    import av

    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ShardError(f"H.264 needs even frame sizes, got {height}x{width}: use codec 'npy' or an even size")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def encode_clip(clip: Clip, key: str, codec: str = "mp4", crf: int = 18) -> dict[str, Any]:
    """A WebDataset sample dict (member name -> bytes) for one clip.

    Args:
        clip: the clip to store.
        key: sample key, letters, digits, '_', '-' and '/' only (a '.' would split the key).
        codec: "mp4" (H.264, lossy, compact; real data) or "npy" (raw, lossless; small synthetic data).
        crf: H.264 constant rate factor for codec "mp4" (lower is better quality).
    """
    if not _KEY_PATTERN.match(key):
        raise ShardError(f"sample key {key!r} may only hold letters, digits, '_', '-' and '/'")
    if codec not in FRAME_CODECS:
        raise ShardError(f"unknown frame codec {codec!r}: choose one of {FRAME_CODECS}")
    meta = asdict(clip.meta)
    meta["size"] = int(clip.frames.shape[1])
    meta["num_frames"] = clip.num_frames
    sample: dict[str, Any] = {
        "__key__": key,
        "landmarks.npy": _npy_bytes(clip.landmarks.astype(np.float32)),
        "meta.json": json.dumps(meta).encode(),
    }
    if codec == "mp4":
        sample["frames.mp4"] = encode_frames_mp4(clip.frames, clip.meta.fps, crf=crf)
    else:
        sample["frames.npy"] = _npy_bytes(clip.frames)
    if clip.pose is not None:
        sample["pose.npy"] = _npy_bytes(clip.pose.astype(np.float32))
    if clip.mask is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, mask=(clip.mask > 0).astype(np.uint8))
        sample["mask.npz"] = buffer.getvalue()
    return sample


LOCK_NAME = ".talkinghead-writer.lock"
_HELD: dict[Path, tuple[int, int]] = {}  # folders this process holds: (holders, the locked file descriptor)


class FolderLock:
    """One writing run per output folder: an exclusive ``flock`` on the lock file ``LOCK_NAME``, which names the
    holder's pid, host, start time and command.

    The kernel drops the lock when its holder dies, so a crashed run never blocks the next one, and of two runs
    starting together exactly one wins; the other gets a :class:`ShardError` naming the holder. Re-entrant within a
    process (a command holds it and its ShardWriters nest inside); worker processes of a holder pass
    ``ShardWriter(lock=False)``. The file is removed on release.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_NAME
        self._held = False

    def acquire(self) -> FolderLock:
        import fcntl

        if self._held:
            return self
        if _HELD.get(self.folder):
            _HELD[self.folder] = (_HELD[self.folder][0] + 1, _HELD[self.folder][1])
            self._held = True
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(handle)
                os.close(handle)
                raise ShardError(self._busy_message(holder)) from None
            try:  # the holder before us may have removed the file between our open and our lock: retry
                same = os.fstat(handle).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(handle)
                continue
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
            os.ftruncate(handle, 0)
            os.write(handle, json.dumps(record).encode())
            _HELD[self.folder] = (1, handle)
            self._held = True
            return self
        raise ShardError(f"could not lock {self.path}: it keeps being replaced by other runs")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        count, handle = _HELD[self.folder]
        if count > 1:
            _HELD[self.folder] = (count - 1, handle)
            return
        del _HELD[self.folder]
        self.path.unlink(missing_ok=True)  # before unlocking: a waiter that opened this file then sees it is gone
        os.close(handle)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @staticmethod
    def _holder(handle: int) -> dict[str, Any] | None:
        try:
            os.lseek(handle, 0, os.SEEK_SET)
            return json.loads(os.read(handle, 4096).decode())
        except (OSError, ValueError):
            return None  # being written this instant

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        who = ("another run" if holder is None else
               f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
               f"({holder.get('command', '?')})")
        return (f"{self.folder} is being written by {who}: wait for it to finish or choose another output folder "
                f"(lock file {self.path})")


class _TarStream:
    """A tar file written member by member straight to disk (WebDataset's member naming: KEY.SUFFIX, sorted by
    suffix), so that the offset after a sample is a valid place to end the archive (:meth:`ShardWriter.checkpoint`;
    WebDataset's own TarWriter buffers inside a stream-mode tarfile)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        for suffix in sorted(k for k in sample if not k.startswith("_")):
            data = sample[suffix]
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), time.time(), 0o444
            info.uname = info.gname = "talkinghead"
            self.tar.addfile(info, io.BytesIO(data))

    def sync(self) -> int:
        """Flushes to disk; returns the offset where the samples so far end."""
        self.file.flush()
        os.fsync(self.file.fileno())
        return self.tar.offset

    def close(self) -> None:
        try:
            self.tar.close()
        finally:
            self.file.close()

    def discard(self) -> None:
        """Closes the file without ending the archive (what follows the last checkpoint is cut off anyway)."""
        self.file.close()


class ShardWriter:
    """Writes clips into numbered shards ``PREFIX-000000.tar`` with an index ``PREFIX-000000.json`` beside each.

    A shard is written under a temporary name and renamed when complete, so an interrupted run never leaves a
    truncated shard under a real name, and shards that already exist are never overwritten. :meth:`checkpoint`
    makes the samples written so far durable: a writer left by an exception then completes its shard with them
    (dropping only what came after), and a killed run's ``.tar.partial`` can be completed later at the returned
    offset with :func:`complete_partial_shard`.

    Args:
        out_dir: folder for the shards (created if missing).
        prefix: shard file name prefix.
        max_samples: clips per shard.
        max_bytes: start a new shard once this many bytes are written.
        codec: frame codec, see :func:`encode_clip`.
        start_index: number of the first shard.
        lock: hold the folder's :class:`FolderLock` while writing (False only in workers of a run that holds it).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        prefix: str = "shard",
        max_samples: int = 1000,
        max_bytes: int = 1 << 30,
        codec: str = "mp4",
        start_index: int = 0,
        lock: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FolderLock(self.out_dir).acquire() if lock else None
        self.prefix, self.max_samples, self.max_bytes, self.codec = prefix, max_samples, max_bytes, codec
        self.next_index = start_index
        self.written: list[Path] = []  # completed shards, in order
        self._tar = None
        self._mark: tuple[int, int] = (0, 0)  # (bytes, samples) of the open shard made durable by checkpoint()
        self._entries: list[dict[str, Any]] = []
        self._bytes = 0
        self._keys: set[str] = set()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def _path(self, index: int) -> Path:
        return self.out_dir / f"{self.prefix}-{index:06d}.tar"

    def _open(self) -> None:
        path = self._path(self.next_index)
        if path.exists():
            raise ShardError(f"{path} already exists: write into an empty folder or pass a higher start_index")
        self._tmp = path.with_suffix(".tar.partial")
        self._tar = _TarStream(self._tmp)
        self._entries, self._bytes = [], 0
        self._mark = (0, 0)

    @property
    def open_path(self) -> Path:
        """The real name of the shard being written (or to be written next)."""
        return self._path(self.next_index)

    def checkpoint(self) -> int:
        """Flushes and syncs the open shard; returns the byte offset at which its samples so far end (0 when no
        shard is open). An exception leaving the writer then keeps those samples (see the class doc)."""
        if self._tar is None:
            return 0
        self._mark = (self._tar.sync(), len(self._entries))
        return self._mark[0]

    def write(self, clip: Clip, key: str) -> None:
        """Adds one clip under ``key`` (unique across the writer)."""
        if key in self._keys:
            raise ShardError(f"duplicate sample key {key!r}")
        sample = encode_clip(clip, key, codec=self.codec)
        if self._tar is None:
            self._open()
        self._tar.write(sample)
        self._keys.add(key)
        self._bytes += sum(len(v) for k, v in sample.items() if k != "__key__")
        self._entries.append(
            {"key": key, "identity": clip.meta.identity, "video": clip.meta.video, "num_frames": clip.num_frames}
        )
        if len(self._entries) >= self.max_samples or self._bytes >= self.max_bytes:
            self._finish()

    def _finish(self) -> None:
        path = self._path(self.next_index)
        index = {"format_version": FORMAT_VERSION, "shard": path.name, "samples": self._entries}
        try:
            self._tar.close()
            path.with_suffix(".json").write_text(json.dumps(index, indent=1))
            os.replace(self._tmp, path)  # last: a shard under its real name always has its index beside it
        except OSError as error:
            self._tar = None
            self._tmp.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            raise ShardError(f"cannot finish {path}: {error.strerror or error} (is the disk full?); the incomplete "
                             f"shard was removed, the {len(self.written)} shards before it are complete") from None
        self.written.append(path)
        self.next_index += 1
        self._tar = None

    def _abort(self) -> None:
        if self._tar is not None:
            tar, self._tar = self._tar, None
            offset, samples = self._mark
            try:
                tar.discard()  # may fail (ENOSPC)
            except OSError:
                pass
            try:
                if samples:
                    complete_partial_shard(self._tmp, offset, self._entries[:samples])
                    self.written.append(self._path(self.next_index))
                    self.next_index += 1
            except (OSError, ShardError):
                pass  # nothing durable to keep after all: the partial file goes
            finally:
                self._tmp.unlink(missing_ok=True)
        self._release()

    def close(self) -> list[Path]:
        """Completes the open shard; returns every shard written."""
        try:
            if self._tar is not None:
                self._finish()
        finally:
            self._release()
        return self.written

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def complete_partial_shard(partial: str | os.PathLike, offset: int,
                           entries: list[dict[str, Any]] | None = None) -> Path:
    """Completes an unfinished ``NAME.tar.partial`` with the samples before ``offset`` (a value returned by
    :meth:`ShardWriter.checkpoint`): cuts it there, ends the archive, writes the index ``NAME.json`` (from
    ``entries`` or read back from the samples) and renames it ``NAME.tar``.

    Raises:
        ShardError: the file is shorter than ``offset`` or its samples do not read back.
    """
    partial = Path(partial)
    path = partial.with_suffix("")  # NAME.tar.partial -> NAME.tar
    with open(partial, "r+b") as handle:
        if os.fstat(handle.fileno()).st_size < offset:
            raise ShardError(f"{partial} is shorter than the {offset} bytes recorded as written")
        handle.truncate(offset)
        handle.seek(offset)
        handle.write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
        handle.flush()
        os.fsync(handle.fileno())
    if entries is None:
        entries = [{"key": e.key, "identity": e.identity, "video": e.video, "num_frames": e.num_frames}
                   for e in _index_from_samples(str(partial))]
    index = {"format_version": FORMAT_VERSION, "shard": path.name, "samples": entries}
    path.with_suffix(".json").write_text(json.dumps(index, indent=1))
    os.replace(partial, path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Reading

_FIX = (
    "check the path; --data.init_args.shards takes a folder of .tar shards, a glob ('data/*.tar'), a brace "
    "pattern ('data/shard-{000000..000009}.tar') or an fsspec URL ('s3://bucket/shards/*.tar')"
)


def _is_url(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard URLs or paths from a folder, glob, brace pattern, fsspec URL, or a list of those.

    Raises:
        ShardError: when the specification matches no shard.
    """
    if not isinstance(spec, str):
        return [url for part in spec for url in expand_shards(part)]
    if not spec:
        raise ShardError(f"empty shard specification: {_FIX}")
    urls: list[str] = []
    for pattern in braceexpand.braceexpand(spec):
        if pattern.startswith("file://"):
            pattern = pattern[len("file://") :]
        if _is_url(pattern):
            fs, _, _ = fsspec.get_fs_token_paths(pattern)
            protocol = pattern.split("://", 1)[0]
            if glob.has_magic(pattern):
                urls += sorted(f"{protocol}://{p}" for p in fs.glob(pattern))
            else:
                urls.append(pattern)
        elif os.path.isdir(pattern):
            urls += sorted(glob.glob(os.path.join(pattern, "*.tar")))
        elif glob.has_magic(pattern):
            urls += sorted(p for p in glob.glob(pattern) if p.endswith(".tar"))
        elif os.path.isfile(pattern):
            urls.append(pattern)
        else:
            raise ShardError(f"shard {pattern!r} does not exist: {_FIX}")
    if not urls:
        raise ShardError(f"shard specification {spec!r} matched no .tar files: {_FIX}")
    return urls


def iter_shard_samples(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples (member name -> bytes, plus ``__key__`` and ``__url__``) of one shard, in stored order.

    Raises:
        ShardError: naming the shard when it cannot be opened or is not a complete tar file.
    """
    current: dict[str, Any] | None = None
    try:
        with fsspec.open(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, name = os.path.split(member.name)
                key, dot, suffix = name.partition(".")
                if not dot:
                    continue
                key = f"{directory}/{key}" if directory else key
                data = tar.extractfile(member).read()
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__url__": url}
                current[suffix] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise ShardError(
            f"shard {url} is unreadable ({type(error).__name__}: {error}); it is truncated or not a tar file: "
            "rewrite it with `talkinghead synth` / `talkinghead preprocess`, or remove it from the shard list"
        ) from error
    if current is not None:
        yield current


def _npy(sample: dict[str, Any], name: str) -> np.ndarray:
    return np.load(io.BytesIO(sample[name]), allow_pickle=False)


def sample_num_frames(sample: dict[str, Any]) -> int:
    """Frame count of a raw sample, from its (small) landmarks array, without decoding any frame."""
    return int(_npy(sample, "landmarks.npy").shape[0])


def decode_frames(data: bytes, codec: str, indices: Sequence[int] | None = None) -> np.ndarray:
    """Frames (N, H, W, 3) uint8 from stored bytes; all of them, or those at ``indices`` (in that order)."""
    if codec == "npy":
        frames = np.load(io.BytesIO(data), allow_pickle=False)
        return frames if indices is None else frames[np.asarray(indices, dtype=np.int64)]
    import av

    wanted = None if indices is None else set(int(i) for i in indices)
    last = None if indices is None else max(wanted)
    decoded: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(data), mode="r") as container:
        for i, frame in enumerate(container.decode(video=0)):
            if wanted is None or i in wanted:
                decoded[i] = frame.to_ndarray(format="rgb24")
            if last is not None and i >= last:
                break
    order = sorted(decoded) if indices is None else [int(i) for i in indices]
    missing = [i for i in order if i not in decoded]
    if missing:
        raise ShardError(f"frames {missing} are past the end of the stored video ({len(decoded)} decoded)")
    return np.stack([decoded[i] for i in order])


def decode_clip(sample: dict[str, Any], frame_indices: Sequence[int] | None = None) -> Clip:
    """A :class:`Clip` from a raw sample; with ``frame_indices`` only those frames (and their labels) are kept.

    Raises:
        ShardError: naming the shard and key when members are missing or malformed.
    """
    where = f"sample {sample.get('__key__')!r} of shard {sample.get('__url__', '?')}"
    missing = [name for name in _REQUIRED_MEMBERS if name not in sample]
    codecs = [codec for codec in FRAME_CODECS if f"frames.{codec}" in sample]
    if not codecs:
        missing.append("frames.mp4 or frames.npy")
    if missing:
        raise ShardError(f"{where} lacks {', '.join(missing)}: the shard was not written in the talkinghead format")
    try:
        meta_dict = json.loads(sample["meta.json"])
        version = meta_dict.get("format_version")
        if version != FORMAT_VERSION:
            raise ShardError(f"{where} has format_version {version}; this reader reads version {FORMAT_VERSION}")
        meta_dict.pop("num_frames", None)
        meta = ClipMeta(**meta_dict)
        landmarks = _npy(sample, "landmarks.npy")
        pose = _npy(sample, "pose.npy") if "pose.npy" in sample else None
        mask = None
        if "mask.npz" in sample:
            with np.load(io.BytesIO(sample["mask.npz"]), allow_pickle=False) as archive:
                mask = archive["mask"]
        _check_clip_arrays(None, landmarks, pose, mask, where=where)
        if frame_indices is not None:
            frame_indices = [int(i) for i in frame_indices]
            if min(frame_indices) < 0 or max(frame_indices) >= landmarks.shape[0]:
                raise ShardError(f"{where}: frame indices {frame_indices} outside 0..{landmarks.shape[0] - 1}")
            picks = np.asarray(frame_indices)
            landmarks = landmarks[picks]
            pose = None if pose is None else pose[picks]
            mask = None if mask is None else mask[picks]
        frames = decode_frames(sample[f"frames.{codecs[0]}"], codecs[0], frame_indices)
        return Clip(frames=frames, landmarks=landmarks, meta=meta, pose=pose, mask=mask)
    except ShardError as error:
        if where in str(error):
            raise
        raise ShardError(f"{where}: {error}") from error
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise ShardError(f"{where} is corrupt ({type(error).__name__}: {error}); rewrite the shard") from error


def read_index(url: str) -> list[IndexEntry]:
    """The index of one shard: from its ``.json`` sidecar when present, otherwise by streaming the shard."""
    sidecar = re.sub(r"\.tar$", ".json", url)
    try:
        with fsspec.open(sidecar, "rt") as handle:
            index = json.load(handle)
        return [
            IndexEntry(url, s["key"], s["identity"], s["video"], int(s["num_frames"])) for s in index["samples"]
        ]
    except FileNotFoundError:
        pass
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ShardError(f"shard index {sidecar} is corrupt ({error}): delete it and it is rebuilt from the shard")
    return _index_from_samples(url)


def _index_from_samples(url: str) -> list[IndexEntry]:
    """The index of one shard by streaming its samples."""
    entries = []
    for sample in iter_shard_samples(url):
        if "meta.json" not in sample:
            raise ShardError(f"sample {sample['__key__']!r} of shard {url} lacks meta.json")
        meta = json.loads(sample["meta.json"])
        num_frames = int(meta.get("num_frames") or sample_num_frames(sample))
        entries.append(IndexEntry(url, sample["__key__"], meta["identity"], meta["video"], num_frames))
    return entries
