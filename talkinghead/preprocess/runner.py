"""Many videos -> shards: worker processes, shard writing, the resume manifest and the run summary.

Shards. Each worker writes its own sequence ``PREFIX-TOKEN-NNNNNN.tar`` (TOKEN: 8 random hex digits drawn when
the worker starts), so parallel workers and later runs never collide. A shard only ever ends between two inputs:
the clips of one input always sit in one shard, and a shard is closed once it holds ``clips_per_shard`` clips or
``shard_bytes`` bytes (so an input with many clips can make a shard larger than that).

Resuming. ``OUT/preprocess_manifest.jsonl`` gets one line per finished input (its :class:`FileResult`, failures
included) as soon as the input is done: its clips are synced to disk first and the line records the shard and the
byte offset where they end (``shard_offset``). A rerun skips the inputs listed there. An interrupted run (Ctrl-C,
an error) completes its open shard with the recorded inputs' clips on the way out; after a hard kill the next run
does it: a ``.tar.partial`` that manifest lines name is cut at their largest offset and completed
(:func:`~talkinghead.datamodules.shard_format.complete_partial_shard`), any other ``.tar.partial`` and any complete
shard of this prefix that no line names is removed, and inputs whose shard is gone are done again, so finished
inputs are never redone and no clip is written twice. One run at a time per output folder (a lock file).

Workers. ``workers <= 1`` runs in this process (with one torch thread while it runs); more start that many
processes (spawn context), each building its own MTCNN, dlib predictor and Hopenet once, with one torch thread. A worker that dies (a crash inside a decoder,
out of memory) costs only the input it was on, recorded as failed with reason "crashed"; its unfinished shard is
completed with the inputs it had recorded, and a new worker takes its place.
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
    PADDED_SHARE,
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

    def finished(self, result: FileResult, record: Callable[[FileResult], None]) -> None:
        """An input is done: its clips are synced to disk, ``record`` is called with its result (naming the shard
        and the offset where its clips end), and then the shard is closed if it is full."""
        if result.clips:
            result.shard = self.open_shard.name
            result.shard_offset = self.writer.checkpoint()
        record(result)
        if result.clips and (self.clips >= self.limits.clips_per_shard or
                             result.shard_offset >= self.limits.shard_bytes):
            self.close()

    def close(self) -> None:
        """Completes the open shard."""
        self.writer.close()
        self.clips = 0


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

    def forget(self, paths: set[str]) -> None:
        """Drops the entries of these inputs (their clips are lost: they are done again); rewrites the file."""
        self.entries = {path: entry for path, entry in self.entries.items() if path not in paths}
        partial = self.path.with_suffix(".jsonl.partial")
        partial.write_text("".join(json.dumps(entry) + "\n" for entry in self.entries.values()))
        os.replace(partial, self.path)


def _complete_partials(out_dir: Path, pattern: str, manifest: _Manifest, log: Callable[[str], None]) -> set[str]:
    """Completes the unfinished shards whose names match ``pattern`` (a regex for the .tar name) with the clips of
    the inputs the manifest records in them, removes those no entry names, and forgets the inputs whose shard is
    lost (returned: the input paths to do again)."""
    from talkinghead.datamodules.shard_format import ShardError, complete_partial_shard

    ends: dict[str, int] = {}
    for entry in manifest.entries.values():
        if entry.get("shard") and entry.get("shard_offset"):
            ends[entry["shard"]] = max(ends.get(entry["shard"], 0), int(entry["shard_offset"]))
    for partial in sorted(out_dir.glob("*.tar.partial")):
        name = partial.name.removesuffix(".partial")
        if not re.fullmatch(pattern, name):
            continue
        if name in ends:
            try:
                complete_partial_shard(partial, ends[name])
                log(f"completed {name}, left unfinished by an interrupted run, with the clips of its recorded inputs")
                continue
            except (OSError, ShardError) as error:
                log(f"cannot complete {name} ({error}); its inputs are done again")
        else:
            log(f"removing {partial.name}: left unfinished by an earlier run before any input was recorded in it")
        partial.unlink(missing_ok=True)
    lost = {path for path, entry in manifest.entries.items()
            if entry.get("shard") and re.fullmatch(pattern, entry["shard"]) and not (out_dir / entry["shard"]).exists()}
    if lost:
        manifest.forget(lost)
    return lost


def _clean(out_dir: Path, prefix: str, manifest: _Manifest, log: Callable[[str], None]) -> None:
    """Puts right what a killed run left (see the module doc)."""
    pattern = rf"{re.escape(prefix)}-[0-9a-f]{{8}}-\d{{6}}\.tar"
    _complete_partials(out_dir, pattern, manifest, log)
    named = {entry.get("shard") for entry in manifest.entries.values()}
    for path in sorted(out_dir.glob("*.tar")):
        if re.fullmatch(pattern, path.name) and path.name not in named:
            log(f"removing {path.name}: an earlier run closed it but recorded none of its inputs; they are redone")
            path.unlink()
            path.with_suffix(".json").unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# Workers


class _Worker:
    """The models and the shard sink of one process."""

    def __init__(self, out_dir: str, options: PreprocessOptions, limits: ShardLimits) -> None:
        self.processor = VideoPreprocessor(options)
        self.sink = ShardSink(out_dir, limits)

    def process(self, video: InputVideo, record: Callable[[FileResult], None]) -> FileResult:
        result = self.processor.process(video, self.sink.write)
        self.sink.finished(result, record)
        return result


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
        outbox.put(("ready", worker_id, worker.sink.prefix))
        while (video := inbox.get()) is not None:
            worker.process(video, lambda result: outbox.put(("processed", worker_id, result)))
        worker.sink.close()
    outbox.put(("exit", worker_id, None))


@dataclass
class _Handle:
    process: Any
    inbox: Any
    current: InputVideo | None = None
    prefix: str = ""  # its shards' names start with this
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
    _clean(out, shard_prefix, manifest, log)
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
            processed(worker.process(video, manifest.add))
        worker.sink.close()


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
            handle.ready, handle.prefix = True, payload
            feed(handle)
        elif kind == "processed":
            manifest.add(payload)
            processed(payload)
            feed(handle)
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
                lost = _crashed(handle, Path(out), manifest, processed, log)
                queue_.extend(video for video in todo if video.path in lost)
                if queue_:
                    start()
    finally:
        for handle in handles.values():
            if handle.process.is_alive():
                handle.process.terminate()
                handle.process.join(timeout=10)


def _crashed(handle: _Handle, out: Path, manifest: _Manifest, processed: Callable[[FileResult], None],
             log: Callable[[str], None]) -> set[str]:
    """A worker died: its input is recorded as failed, its unfinished shard completed with its recorded inputs;
    returns the inputs to do again (recorded in a shard that could not be completed)."""
    handle.exited = True
    code = handle.process.exitcode
    if handle.current is not None:
        video = handle.current
        result = FileResult(video.path, video.identity, video.video).fail(
            "crashed", f"the worker process died on this input (exit code {code})")
        processed(result)
        manifest.add(result)
        log(f"worker crashed (exit code {code}) on {video.path}; recorded as failed, carrying on")
    return _complete_partials(out, rf"{re.escape(handle.prefix)}-\d{{6}}\.tar", manifest, log)


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
    padding = [share for entry in entries for share in entry.get("padding", [])]
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
        "padding": {  # share of each clip's crop outside the source frame (its largest over the clip's frames)
            "clips_padded": sum(share > PADDED_SHARE for share in padding),
            "clips_recorded": len(padding),
            "mean": round(sum(padding) / len(padding), 4) if padding else 0.0,
            "max": max(padding, default=0.0),
            "clips_shrunk": sum(e.get("shrunk", 0) for e in entries),
            "frames_dropped": int(dropped.get("heavy-padding", 0)),
            "pad": options.pad,
            "max_pad": options.max_pad,
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


def _padding_line(padding: dict[str, Any]) -> str:
    line = (f"padding ({padding['pad']}): {padding['clips_padded']} of {padding['clips_recorded']} clips padded "
            f"(mean {100 * padding['mean']:.1f}% of a crop, max {100 * padding['max']:.1f}%); "
            f"{padding['clips_shrunk']} shrunk to --max-pad {padding['max_pad']:g}, "
            f"{padding['frames_dropped']} frames dropped for heavier padding")
    if padding["clips_recorded"] and padding["clips_shrunk"] + padding["clips_padded"] > padding["clips_recorded"] / 2:
        line += ("\n  most crops reach past the frame: if the inputs are already aligned face crops, "
                 "use --crop none")
    return line


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
        _padding_line(summary["padding"]),
    ]
    for failure in summary["failed_files"][:10]:
        lines.append(f"  failed {failure['reason']}: {failure['path']}: {failure['message']}")
    if len(summary["failed_files"]) > 10:
        lines.append(f"  ... {len(summary['failed_files']) - 10} more in {out / SUMMARY_NAME}")
    lines.append(f"summary: {out / SUMMARY_NAME}")
    return "\n".join(lines)
