"""Many videos -> shards: worker processes, shard writing, the resume manifest and the run summary.

Shards. Each worker writes its own sequence ``PREFIX-TOKEN-NNNNNN.tar`` (TOKEN: 8 random hex digits drawn when
the worker starts), so parallel workers and later runs never collide. A shard only ever ends between two inputs:
the clips of one input always sit in one shard, and a shard is closed once it holds ``clips_per_shard`` clips or
``shard_bytes`` bytes (so an input with many clips can make a shard larger than that).

Resuming. ``OUT/preprocess_manifest.jsonl`` gets one line per finished input (its :class:`FileResult`, failures
included), written only once the shard holding its clips is complete under its real name. A rerun skips the
inputs listed there. Anything a crash leaves behind is removed when the next run starts: ``.tar.partial`` files
(:class:`~talkinghead.datamodules.shard_format.ShardWriter` never renames an unfinished shard) and complete shards
of this prefix that no manifest line names (closed just before the crash, their inputs not yet recorded); those
inputs are then done again, so no clip is written twice. One run at a time per output folder.

Workers. ``workers <= 1`` runs in this process (with one torch thread while it runs); more start that many
processes (spawn context), each building its own MTCNN, dlib predictor and Hopenet once, with one torch thread. A worker that dies (a crash inside a decoder,
out of memory) costs only the input it was on, recorded as failed with reason "crashed"; the inputs whose clips
were in its unfinished shard go back to the queue, and a new worker takes its place.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import re
import secrets
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .inputs import InputVideo
from .pipeline import (
    PREPROCESSING_VERSION,
    STAGES,
    WARNINGS,
    FileResult,
    PreprocessOptions,
    VideoPreprocessor,
    load_pose_network,
)
from .tracking import DROP_REASONS

__all__ = ["MANIFEST_NAME", "OPTIONS_NAME", "SUMMARY_NAME", "ShardSink", "preprocess_videos", "read_manifest"]

MANIFEST_NAME = "preprocess_manifest.jsonl"
SUMMARY_NAME = "preprocess_summary.json"
OPTIONS_NAME = "preprocess_options.json"


@dataclass
class ShardLimits:
    """When a worker closes its shard (checked between inputs)."""

    prefix: str = "clips"  # shard names start PREFIX-TOKEN-
    clips_per_shard: int = 1000  # close once the shard holds this many clips
    shard_bytes: int = 500 << 20  # ... or this many bytes


class ShardSink:
    """One worker's shard sequence; tells which inputs are safely stored (see the module doc).

    Use as a context manager: leaving it by an exception drops the unfinished shard (``.tar.partial``).

    Args:
        out_dir: the output folder.
        limits: shard prefix and size limits.
    """

    def __init__(self, out_dir: str | os.PathLike, limits: ShardLimits) -> None:
        from talkinghead.datamodules.shard_format import ShardWriter

        self.limits = limits
        self.prefix = f"{limits.prefix}-{secrets.token_hex(4)}"
        # The writer's own limits are out of reach: shards close here, between inputs only.
        # lock=False: preprocess_videos holds the folder's lock for the whole run, workers included.
        self.writer = ShardWriter(out_dir, prefix=self.prefix, max_samples=sys.maxsize, max_bytes=sys.maxsize,
                                  lock=False)
        self.clips = 0  # clips in the open shard
        self.waiting: list[FileResult] = []  # inputs whose clips are in the open shard

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.writer.__exit__(exc_type, exc, tb)

    @property
    def open_shard(self) -> Path:
        return self.writer.out_dir / f"{self.prefix}-{self.writer.next_index:06d}.tar"

    def write(self, clip: Any, key: str) -> None:
        """Adds one clip to the open shard."""
        self.writer.write(clip, key)
        self.clips += 1

    def finished(self, result: FileResult) -> list[FileResult]:
        """Records that an input is done; returns the inputs now safely stored (this one when it wrote no clip,
        or all the open shard's when the shard is full and closed here)."""
        if result.clips == 0:
            return [result]
        result.shard = self.open_shard.name
        self.waiting.append(result)
        partial = self.open_shard.with_suffix(".tar.partial")
        size = partial.stat().st_size if partial.exists() else 0
        if self.clips >= self.limits.clips_per_shard or size >= self.limits.shard_bytes:
            return self.close()
        return []

    def close(self) -> list[FileResult]:
        """Completes the open shard; returns the inputs it holds."""
        self.writer.close()
        stored, self.waiting, self.clips = self.waiting, [], 0
        return stored


# ----------------------------------------------------------------------------------------------------------------
# Manifest and clean-up


def read_manifest(out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The finished inputs of an output folder: input path -> its manifest entry (the last one wins). A line cut
    short by a crash is ignored (that input is done again)."""
    path = Path(out_dir) / MANIFEST_NAME
    entries: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                entries[entry["path"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return entries


class _Manifest:
    """Appends entries, each flushed to disk before the next (a crash loses at most the line being written)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MANIFEST_NAME
        self.entries = read_manifest(out_dir)
        if self.path.exists() and self.path.read_bytes()[-1:] not in (b"", b"\n"):
            with open(self.path, "a") as handle:  # a line cut short by a crash: start afresh on the next line
                handle.write("\n")

    def add(self, result: FileResult) -> None:
        entry = {**result.to_json(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries[result.path] = entry


def _clean(out_dir: Path, prefix: str, entries: dict[str, dict[str, Any]], log: Callable[[str], None]) -> None:
    """Removes what a crashed run left: unfinished shards and finished ones no manifest entry names."""
    named = {entry.get("shard") for entry in entries.values()}
    ours = re.compile(rf"^{re.escape(prefix)}-[0-9a-f]{{8}}-\d{{6}}\.tar(\.partial)?$")
    for path in sorted(out_dir.iterdir()):
        if ours.match(path.name) and (path.name.endswith(".partial") or path.name not in named):
            log(f"removing {path.name}: left unfinished or unrecorded by an earlier run; its inputs are redone")
            path.unlink()
            path.with_name(path.name.removesuffix(".partial")).with_suffix(".json").unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# Workers


class _Worker:
    """The models and the shard sink of one process."""

    def __init__(self, out_dir: str, options: PreprocessOptions, limits: ShardLimits) -> None:
        self.processor = VideoPreprocessor(options)
        self.sink = ShardSink(out_dir, limits)

    def process(self, video: InputVideo) -> tuple[FileResult, list[FileResult]]:
        result = self.processor.process(video, self.sink.write)
        return result, self.sink.finished(result)


def _worker_main(worker_id: int, out_dir: str, options: PreprocessOptions, limits: ShardLimits,
                 inbox: Any, outbox: Any) -> None:
    """A worker process: takes inputs from its inbox until None, reports on the shared outbox."""
    import torch

    torch.set_num_threads(1)  # one worker per core; intra-op threads would only fight each other
    try:
        worker = _Worker(out_dir, options, limits)
    except Exception as error:  # the models cannot be built (a missing package): every worker would fail alike
        outbox.put(("fatal", worker_id, f"{type(error).__name__}: {error}"))
        return
    with worker.sink:
        outbox.put(("ready", worker_id, None))
        while (video := inbox.get()) is not None:
            result, stored = worker.process(video)
            outbox.put(("processed", worker_id, result))
            if stored:
                outbox.put(("stored", worker_id, stored))
        stored = worker.sink.close()
        if stored:
            outbox.put(("stored", worker_id, stored))
    outbox.put(("exit", worker_id, None))


@dataclass
class _Handle:
    process: Any
    inbox: Any
    current: InputVideo | None = None
    unstored: dict[str, InputVideo] = field(default_factory=dict)  # processed, clips in its unfinished shard
    ready: bool = False  # its models are built
    exited: bool = False


# ----------------------------------------------------------------------------------------------------------------
# The run


def preprocess_videos(
    inputs: Sequence[InputVideo],
    out_dir: str | os.PathLike,
    options: PreprocessOptions,
    workers: int = 1,
    clips_per_shard: int = 1000,
    shard_size_mb: float = 500.0,
    shard_prefix: str = "clips",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Preprocesses videos into shards in ``out_dir``, skipping those a previous run finished (module doc).

    Args:
        inputs: the videos (:func:`~talkinghead.preprocess.inputs.find_inputs`).
        out_dir: output folder for shards, manifest and summary (created if missing).
        options: what to do to each video.
        workers: processes; 0 or 1 runs in this process.
        clips_per_shard: a shard closes once it holds this many clips.
        shard_size_mb: ... or this many megabytes (checked between inputs).
        shard_prefix: shard names start with it (letters, digits, '_' and '-').
        progress: show a progress bar over the videos.
        log: where messages go.

    Returns:
        The summary (also written to ``OUT/preprocess_summary.json``), see :func:`summarise`.

    Raises:
        ValueError: an option is out of range.
        FileNotFoundError, RuntimeError: ``options.pose_checkpoint`` is missing or not Hopenet weights.
        ShardError: another run is writing into ``out_dir`` (its lock file names it).
    """
    options.check()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", shard_prefix):
        raise ValueError(f"shard prefix {shard_prefix!r} may only hold letters, digits, '_' and '-'")
    if clips_per_shard < 1 or shard_size_mb <= 0:
        raise ValueError(f"need clips per shard >= 1 and shard size > 0, got {clips_per_shard} and {shard_size_mb}")
    if options.pose_checkpoint:
        load_pose_network(options.pose_checkpoint)  # refuse now, not once per file in every worker
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from talkinghead.datamodules.shard_format import FolderLock

    with FolderLock(out):  # one run per folder: the clean-up below then only ever meets a dead run's leftovers
        return _preprocess_locked(inputs, out, options, workers, clips_per_shard, shard_size_mb, shard_prefix,
                                  progress, log)


def _preprocess_locked(inputs: Sequence[InputVideo], out: Path, options: PreprocessOptions, workers: int,
                       clips_per_shard: int, shard_size_mb: float, shard_prefix: str, progress: bool,
                       log: Callable[[str], None]) -> dict[str, Any]:
    _check_options(out, options, log)
    manifest = _Manifest(out)
    _clean(out, shard_prefix, manifest.entries, log)
    limits = ShardLimits(shard_prefix, clips_per_shard, int(shard_size_mb * (1 << 20)))

    todo = [video for video in inputs if video.path not in manifest.entries]
    skipped = len(inputs) - len(todo)
    if skipped:
        log(f"skipping {skipped} of {len(inputs)} videos finished by an earlier run ({out / MANIFEST_NAME})")
    start = time.perf_counter()
    results: list[FileResult] = []
    bar = _progress(len(todo), progress)

    def processed(result: FileResult) -> None:
        results.append(result)
        bar.update(1)
        bar.set_postfix(clips=sum(r.clips for r in results), failed=sum(r.status != "ok" for r in results))

    try:
        if todo and workers <= 1:
            _run_here(todo, str(out), options, limits, manifest, processed)
        elif todo:
            _run_pool(todo, str(out), options, limits, manifest, processed, workers, log)
    finally:
        bar.close()
        seconds = time.perf_counter() - start
        summary = summarise(list(manifest.entries.values()), options, inputs=len(inputs), skipped=skipped,
                            this_run=results, seconds=seconds)
        (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    log(format_summary(summary, out))
    return summary


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="preprocess", disable=not enabled, dynamic_ncols=True)


def _check_options(out: Path, options: PreprocessOptions, log: Callable[[str], None]) -> None:
    """Keeps the options of the first run; says so when a rerun differs (its clips would be made differently)."""
    path = out / OPTIONS_NAME
    current = {**asdict(options), "preprocessing": PREPROCESSING_VERSION}
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(previous) | set(current)
                         if previous.get(k) != current.get(k) and k not in ("device", "batch_size"))
        if changed:
            log(f"warning: {', '.join(changed)} differ from the run that started {out} ({path}); the clips of this "
                "folder will not all be made alike")
    else:
        path.write_text(json.dumps(current, indent=1))


def _run_here(todo: list[InputVideo], out: str, options: PreprocessOptions, limits: ShardLimits,
              manifest: _Manifest, processed: Callable[[FileResult], None]) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker process: the per-core speed, no oversubscription
    try:
        _run_worker_here(todo, out, options, limits, manifest, processed)
    finally:
        torch.set_num_threads(threads)


def _run_worker_here(todo: list[InputVideo], out: str, options: PreprocessOptions, limits: ShardLimits,
                     manifest: _Manifest, processed: Callable[[FileResult], None]) -> None:
    worker = _Worker(out, options, limits)
    with worker.sink:
        for video in todo:
            result, stored = worker.process(video)
            processed(result)
            for entry in stored:
                manifest.add(entry)
        for entry in worker.sink.close():
            manifest.add(entry)


def _run_pool(todo: list[InputVideo], out: str, options: PreprocessOptions, limits: ShardLimits,
              manifest: _Manifest, processed: Callable[[FileResult], None], workers: int,
              log: Callable[[str], None]) -> None:
    context = multiprocessing.get_context("spawn")  # fork would copy torch's threads and locks mid-flight
    outbox = context.Queue()
    queue_ = deque(todo)
    handles: dict[int, _Handle] = {}
    next_id = 0

    def start() -> None:
        nonlocal next_id
        inbox = context.Queue()
        process = context.Process(target=_worker_main, args=(next_id, out, options, limits, inbox, outbox),
                                  daemon=True, name=f"preprocess-{next_id}")
        process.start()
        handles[next_id] = _Handle(process, inbox)
        next_id += 1

    def feed(handle: _Handle) -> None:
        handle.current = queue_.popleft() if queue_ else None
        handle.inbox.put(handle.current)

    for _ in range(min(workers, len(todo))):
        start()

    def handle_message(kind: str, worker_id: int, payload: Any) -> None:
        handle = handles[worker_id]
        if kind == "fatal":
            raise RuntimeError(f"a preprocessing worker could not start: {payload}")
        if kind == "ready":
            handle.ready = True
            feed(handle)
        elif kind == "processed":
            handle.unstored[payload.path] = handle.current
            processed(payload)
            feed(handle)
        elif kind == "stored":
            for entry in payload:
                handle.unstored.pop(entry.path, None)
                manifest.add(entry)
        elif kind == "exit":
            handle.exited = True
            handle.process.join()

    try:
        while any(not h.exited for h in handles.values()):
            try:
                handle_message(*outbox.get(timeout=1.0))
                continue
            except queue.Empty:
                pass
            dead = [h for h in handles.values() if not h.exited and not h.process.is_alive()]
            if not dead:
                continue
            # A worker that exited normally may have its last messages still in the pipe: read them first.
            with contextlib.suppress(queue.Empty):
                while True:
                    handle_message(*outbox.get(timeout=0.5))
            for handle in dead:
                if handle.exited:
                    continue
                if not handle.ready:
                    raise RuntimeError(f"a preprocessing worker died while starting (exit code "
                                       f"{handle.process.exitcode}); run with --workers 1 to see why")
                _crashed(handle, queue_, manifest, processed, log)
                if queue_:
                    start()
    finally:
        for handle in handles.values():
            if handle.process.is_alive():
                handle.process.terminate()
                handle.process.join(timeout=10)


def _crashed(handle: _Handle, queue_: deque, manifest: _Manifest, processed: Callable[[FileResult], None],
             log: Callable[[str], None]) -> None:
    """A worker died: its input is recorded as failed, the inputs of its lost shard go back to the queue."""
    handle.exited = True
    code = handle.process.exitcode
    if handle.current is not None:
        video = handle.current
        result = FileResult(video.path, video.identity, video.video).fail(
            "crashed", f"the worker process died on this input (exit code {code})")
        processed(result)
        manifest.add(result)
        log(f"worker crashed (exit code {code}) on {video.path}; recorded as failed, carrying on")
    queue_.extendleft(reversed(list(handle.unstored.values())))


# ----------------------------------------------------------------------------------------------------------------
# Summary


def summarise(entries: list[dict[str, Any]], options: PreprocessOptions, inputs: int, skipped: int,
              this_run: list[FileResult], seconds: float) -> dict[str, Any]:
    """The run summary: totals over every finished input of the output folder, and this run's share.

    Args:
        entries: the manifest entries (every input finished so far, this run's included).
        options: the options of this run.
        inputs: inputs listed for this run.
        skipped: of those, finished by an earlier run.
        this_run: results of the inputs processed now (stored or not).
        seconds: wall time of this run.
    """
    ok = [e for e in entries if e["status"] == "ok"]
    failed = [e for e in entries if e["status"] != "ok"]
    dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
    warnings: dict[str, list[str]] = {warning: [] for warning in WARNINGS}
    timings: Counter[str] = Counter({stage: 0.0 for stage in STAGES})
    for entry in entries:
        dropped.update(entry.get("dropped", {}))
        for warning in entry.get("warnings", []):
            warnings.setdefault(warning, []).append(entry["path"])
    for result in this_run:
        timings.update(result.timings)
    frames_now = sum(r.frames for r in this_run)
    return {
        "preprocessing": PREPROCESSING_VERSION,
        "videos": {"finished": len(entries), "ok": len(ok), "failed": len(failed)},
        "failed_by_reason": dict(Counter(e["reason"] for e in failed)),
        "warnings": {warning: len(paths) for warning, paths in warnings.items()},
        "clips": sum(e["clips"] for e in entries),
        "frames": {
            "decoded": sum(e["frames"] for e in entries),
            "kept": sum(e["frames_kept"] for e in entries),
            "dropped": dict(dropped),
        },
        "shards": sorted({e["shard"] for e in entries if e.get("shard")}),
        "failed_files": [{"path": e["path"], "reason": e["reason"], "message": e["message"]} for e in failed],
        "warned_files": {warning: paths for warning, paths in warnings.items() if paths},
        "this_run": {
            "inputs": inputs,
            "skipped_as_finished": skipped,
            "processed": len(this_run),
            "seconds": round(seconds, 2),
            "frames_decoded": frames_now,
            "frames_per_second": round(frames_now / seconds, 2) if seconds > 0 else None,
            "stage_seconds": {stage: round(value, 2) for stage, value in timings.items()},
        },
        "options": asdict(options),
    }


def format_summary(summary: dict[str, Any], out: Path) -> str:
    """A few lines for the terminal."""
    videos, frames, run = summary["videos"], summary["frames"], summary["this_run"]
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(summary["failed_by_reason"].items()))
    dropped = ", ".join(f"{reason} {n}" for reason, n in frames["dropped"].items())
    warnings = ", ".join(f"{warning} {n}" for warning, n in summary["warnings"].items() if n) or "none"
    lines = [
        f"videos: {videos['ok']} ok, {videos['failed']} failed{f' ({reasons})' if reasons else ''}; "
        f"this run processed {run['processed']} in {run['seconds']:.1f} s, skipped {run['skipped_as_finished']} "
        "finished earlier",
        f"clips: {summary['clips']} in {len(summary['shards'])} shards; frames kept {frames['kept']} of "
        f"{frames['decoded']} (dropped: {dropped})",
        f"warnings: {warnings}",
    ]
    for failure in summary["failed_files"][:10]:
        lines.append(f"  failed {failure['reason']}: {failure['path']}: {failure['message']}")
    if len(summary["failed_files"]) > 10:
        lines.append(f"  ... {len(summary['failed_files']) - 10} more in {out / SUMMARY_NAME}")
    lines.append(f"summary: {out / SUMMARY_NAME}")
    return "\n".join(lines)
