"""The videos to preprocess and whose they are: the VoxCeleb2, plain-folder and CSV-list layouts.

Every layout gives a list of :class:`InputVideo` (a file, a person id, a video id and a sample-key stem):

- ``voxceleb2``: ``ROOT/idXXXXX/VIDEO_ID/CLIP.mp4`` (VoxCeleb2's ``dev/mp4`` and ``test/mp4`` trees). Identity
  ``idXXXXX``; video ``idXXXXX/VIDEO_ID``, prefixed by the identity because one YouTube video can hold several
  people (VoxCeleb2 lists some videos under two identities) and the few-shot data modules count a video as one
  person. The bare YouTube id stays in the clip metadata (``extra.source_video``).
- ``folder``: every video file directly inside a folder (TalkingHead-1KH's cropped clips, a folder of your own),
  one person per file: identity = video = the file name without its extension.
- ``csv``: a list file with a header row and columns ``path``, ``identity`` and optionally ``video``; relative
  paths are relative to the CSV file's folder. Without a ``video`` column (or with an empty cell) the video id is
  the path (relative to the CSV folder) without its extension.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LAYOUTS", "VIDEO_EXTENSIONS", "InputError", "InputVideo", "find_inputs", "infer_layout", "sample_key"]

LAYOUTS = ("voxceleb2", "folder", "csv")
# Container extensions the folder scans pick up (case-insensitive); anything FFmpeg reads works in a CSV list.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".ts")
_IDENTITY_FOLDER = re.compile(r"^id\d+$")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/]")


class InputError(ValueError):
    """The input folder or list cannot be read as the layout asked for; the message says what to change."""


@dataclass(frozen=True)
class InputVideo:
    """One video file to preprocess.

    Attributes:
        path: absolute path of the file (also its key in the resume manifest).
        identity: person id written into every clip's metadata.
        video: video id, unique across the data set (clips of one video share it).
        name: the file's path relative to the input root without its extension, e.g. ``id00012/abc/00001``; the
            stem of its clips' sample keys.
        source_video: the video id as the layout spells it (VoxCeleb2's bare YouTube id), for the metadata.
    """

    path: str
    identity: str
    video: str
    name: str
    source_video: str


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def infer_layout(root: str | os.PathLike) -> str:
    """The layout of an input: ``csv`` for a .csv file, ``voxceleb2`` for a folder of ``id\\d+`` folders, else
    ``folder``.

    Raises:
        InputError: the input does not exist, or is a file that is not a .csv list.
    """
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise InputError(f"--input {root} is a file but not a .csv list: pass a folder of videos or a LIST.csv")
    if not root.is_dir():
        raise InputError(f"--input {root} does not exist: pass a folder of videos or a LIST.csv")
    subfolders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if subfolders and all(_IDENTITY_FOLDER.match(name) for name in subfolders):
        return "voxceleb2"
    return "folder"


def find_inputs(root: str | os.PathLike, layout: str | None = None) -> list[InputVideo]:
    """The videos of an input folder or list, sorted by path.

    Args:
        root: a folder of videos (layouts ``voxceleb2`` and ``folder``) or a .csv list (layout ``csv``).
        layout: one of :data:`LAYOUTS`; None infers it (:func:`infer_layout`).

    Raises:
        InputError: unknown layout, unreadable or malformed list, or no video found.
    """
    root = Path(root).expanduser()
    layout = infer_layout(root) if layout is None else layout
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout == "csv":
        videos = _csv_inputs(root)
    else:
        if not root.is_dir():
            raise InputError(f"--input {root} is not a folder; layout {layout} needs a folder of videos")
        videos = _voxceleb2_inputs(root) if layout == "voxceleb2" else _folder_inputs(root)
    if not videos:
        hint = {
            "voxceleb2": "expected ROOT/idXXXXX/VIDEO_ID/CLIP.mp4",
            "folder": f"expected video files ({', '.join(VIDEO_EXTENSIONS)}) directly inside the folder",
            "csv": "the list has no rows",
        }[layout]
        raise InputError(f"no videos found in {root} (layout {layout}): {hint}")
    videos.sort(key=lambda video: video.path)
    return videos


def _voxceleb2_inputs(root: Path) -> list[InputVideo]:
    videos = []
    for identity_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for video_dir in sorted(p for p in identity_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for file in sorted(p for p in video_dir.iterdir() if _is_video(p)):
                videos.append(InputVideo(
                    path=str(file.resolve()),
                    identity=identity_dir.name,
                    video=f"{identity_dir.name}/{video_dir.name}",
                    name=f"{identity_dir.name}/{video_dir.name}/{file.stem}",
                    source_video=video_dir.name,
                ))
    return videos


def _folder_inputs(root: Path) -> list[InputVideo]:
    files = sorted(p for p in root.iterdir() if _is_video(p))
    stems = [p.stem for p in files]
    videos = []
    for file in files:
        # Two files that differ only by extension would share a person and a video id: keep the extension then.
        stem = file.stem if stems.count(file.stem) == 1 else file.name
        videos.append(InputVideo(str(file.resolve()), identity=stem, video=stem, name=stem, source_video=stem))
    return videos


def _csv_inputs(list_file: Path) -> list[InputVideo]:
    if not list_file.is_file():
        raise InputError(f"list file {list_file} does not exist")
    base = list_file.parent
    videos = []
    with open(list_file, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "identity") if c not in columns]
        if missing:
            raise InputError(f"{list_file} lacks the column(s) {', '.join(missing)}: the first row must name the "
                             f"columns path, identity and optionally video (found {columns or 'no header'})")
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row["path"] or not row["identity"]:
                raise InputError(f"{list_file} line {line}: every row needs a path and an identity, got {row}")
            relative = Path(row["path"])
            path = relative if relative.is_absolute() else base / relative
            name = str(relative.with_suffix("")) if not relative.is_absolute() else relative.stem
            video = row.get("video") or name
            # resolve() without strict: a missing file is a per-file failure later, not a reason to stop here.
            videos.append(InputVideo(str(path.resolve()), identity=row["identity"], video=video, name=name,
                                     source_video=video))
    return videos


def sample_key(name: str, clip_index: int) -> str:
    """The sample key of clip ``clip_index`` of an input: its name made key-safe, plus the clip number.

    Sample keys may hold only letters, digits, '_', '-' and '/' (docs/SHARD_FORMAT.md); other characters become
    '_' and, since two names could then collide, a short hash of the original name is appended.
    """
    safe = _KEY_UNSAFE.sub("_", name.replace(os.sep, "/")).strip("/") or "video"
    if safe != name:
        safe = f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"{safe}-c{clip_index:03d}"
