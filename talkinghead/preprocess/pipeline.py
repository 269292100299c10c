"""One video -> clips: decode, find shots, detect and track the face, cut, crop, landmarks, pose, write.

:class:`VideoPreprocessor` holds the models (MTCNN, dlib's landmark predictor, optionally Hopenet) and turns one
:class:`~talkinghead.preprocess.inputs.InputVideo` into clips handed to a writer, returning a :class:`FileResult`
that says what happened (kept clips and frames, frames dropped by reason, warnings, time per stage). It never
raises for a bad input: unreadable files, no face, tiny faces, short tracks all come back as a failed result with a
reason.

The video is streamed in chunks of ``batch_size x detect_every`` frames, so memory holds one chunk plus the open
clip (at most ``max_frames`` source frames), whatever the video's length. In a chunk:

1. every frame gets its shot-change test (:class:`~talkinghead.preprocess.tracking.ShotChangeDetector`);
2. MTCNN runs, in one batch, on the frames due for detection: every ``detect_every``-th frame of a shot, the first
   and last frame of every shot, and the last frame of the video (frames larger than ``detect_max_side`` are
   shrunk for detection only);
3. the tracker follows one face over the detection frames; the frames between two detections of the same track
   get linearly interpolated boxes, the frames between a detection and a loss of the face are dropped;
4. the cutter groups tracked frames into clips; each finished clip gets its crop boxes, 68 landmarks (dlib on the
   source frame at the face box, mapped into the crop), pose labels and is written.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from .crop import (
    CROP_MARGINS,
    CROP_MOTIONS,
    CROP_PLACEMENTS,
    PAD_MODES,
    crop_and_resize,
    crop_boxes,
    limit_padding,
    outside_fraction,
    to_crop_coordinates,
    whole_frame_boxes,
)
from .inputs import InputVideo, sample_key
from .tracking import DROP_REASONS, ClipCutter, FaceTracker, ShotChangeDetector, interpolate_boxes
from .video import VFR_TOLERANCE, DecodedFrame, VideoError, VideoReader

__all__ = [
    "FAILURE_REASONS",
    "PREPROCESSING_VERSION",
    "STAGES",
    "WARNINGS",
    "FileResult",
    "PreprocessOptions",
    "VideoPreprocessor",
    "load_pose_network",
]

# Written into every clip's meta.json ("preprocessing"); bump it when the clips a given input gives change.
PREPROCESSING_VERSION = "talkinghead.preprocess 2"  # 2: reflect padding, --max-pad, --crop none
# Why an input gave no clip.
FAILURE_REASONS = ("unreadable", "no-face", "tiny-face", "too-short", "heavy-padding", "error", "crashed")
# A clip counts as padded in the summary when more than this share of a crop lies outside the frame.
PADDED_SHARE = 0.01
# Things worth knowing about an input that still gave clips (or not).
WARNINGS = ("several-faces", "variable-frame-rate", "truncated", "rotated")
# Stages timed per input (seconds): decoding (with the shot test), MTCNN, dlib, the pose fit (or Hopenet),
# cropping and resizing, H.264 encoding and shard writing.
STAGES = ("decode", "detect", "landmarks", "pose", "crop", "encode_write")
# An input is reported with several faces when a second face of comparable size shows on this share of its
# detection frames (MTCNN's occasional false positive on a background stays below it).
SEVERAL_FACES_SHARE = 0.05


@dataclass
class PreprocessOptions:
    """What ``talkinghead preprocess`` does to each video (the command's options, same names)."""

    size: int = 256  # side S of the square output frames, even
    crop: str = "voxceleb"  # "voxceleb" (margin 1.6), "lpd" (square face box x 1.8), "none" (already cropped)
    crop_motion: str = "auto"  # "fixed" box per clip, "smooth" moving box, "auto": fixed for voxceleb, else smooth
    margin: float | None = None  # crop side / face side; None: the placement's default (CROP_MARGINS)
    smooth_window: int = 9  # frames of the moving average of the "smooth" crop box
    pad: str = "reflect"  # fill where the crop leaves the frame: "reflect" (mirror), "edge" (repeat) or "black"
    max_pad: float = 0.15  # largest share of a crop allowed outside the frame; more shrinks the box (1: off)
    over_pad: str = "shrink"  # a clip over --max-pad: "shrink" its boxes (dropped if even that fails) or "drop" it
    detect_every: int = 1  # run MTCNN on every N-th frame of a shot, interpolate the box in between
    detect_max_side: int = 640  # frames with a longer side are shrunk to it for detection only (0: never)
    min_face: int = 64  # smallest face side kept, source pixels; smaller faces are dropped as tiny-face
    min_frames: int = 16  # shortest clip kept
    max_frames: int = 256  # longest clip; longer runs are split
    shot_threshold: float = 0.3  # colour-histogram distance (0-1) between frames that starts a new shot
    track_iou: float = 0.3  # overlap with the previous box that still counts as the same face
    drift_iou: float = 0.25  # fixed crops: a clip ends when the face overlaps its first box by less than this
    max_video_frames: int | None = None  # decode at most this many frames of each video (None: all)
    pose_checkpoint: str | None = None  # Hopenet weights for yaw/pitch/roll; None: pose from the landmarks
    device: str = "cpu"  # where MTCNN (and Hopenet) run
    batch_size: int = 16  # frames per MTCNN batch

    @property
    def crop_margin(self) -> float | None:
        """Crop side / face side; None for ``crop="none"`` (the frame is the crop)."""
        if self.crop == "none":
            return None
        return CROP_MARGINS[self.crop] if self.margin is None else float(self.margin)

    @property
    def motion(self) -> str:
        return CROP_MOTIONS[self.crop] if self.crop_motion == "auto" else self.crop_motion

    def check(self) -> None:
        """Raises ValueError naming the first option out of range and what it accepts."""
        problems = [
            (self.size >= 16 and self.size % 2 == 0, f"size must be an even number >= 16 (H.264), got {self.size}"),
            (self.crop in CROP_PLACEMENTS, f"crop must be one of {', '.join(CROP_PLACEMENTS)}, got {self.crop!r}"),
            (self.crop != "none" or (self.margin is None and self.crop_motion in ("auto", "fixed")),
             "crop none takes the whole frame: --margin and --crop-motion smooth do not apply to it"),
            (self.crop_motion in ("auto", "fixed", "smooth"),
             f"crop motion must be auto, fixed or smooth, got {self.crop_motion!r}"),
            (self.margin is None or self.margin > 0, f"margin must be positive, got {self.margin}"),
            (self.smooth_window >= 1, f"smooth window must be at least 1 frame, got {self.smooth_window}"),
            (self.pad in PAD_MODES, f"pad must be one of {', '.join(PAD_MODES)}, got {self.pad!r}"),
            (0 <= self.max_pad <= 1, f"max-pad must be a share of the crop in [0, 1] (1: off), got {self.max_pad}"),
            (self.over_pad in ("shrink", "drop"), f"over-pad must be shrink or drop, got {self.over_pad!r}"),
            (self.detect_every >= 1, f"detect-every must be at least 1, got {self.detect_every}"),
            (self.detect_max_side == 0 or self.detect_max_side >= 64,
             f"detect-max-side must be 0 (off) or at least 64 pixels, got {self.detect_max_side}"),
            (self.min_face >= 1, f"min-face must be at least 1 pixel, got {self.min_face}"),
            (1 <= self.min_frames <= self.max_frames,
             f"need 1 <= min-frames <= max-frames, got {self.min_frames} and {self.max_frames}"),
            (0 < self.shot_threshold <= 1, f"shot-threshold must be in (0, 1], got {self.shot_threshold}"),
            (0 < self.track_iou <= 1, f"track-iou must be in (0, 1], got {self.track_iou}"),
            (0 <= self.drift_iou <= 1, f"drift-iou must be in [0, 1], got {self.drift_iou}"),
            (self.max_video_frames is None or self.max_video_frames >= 1,
             f"max-video-frames must be at least 1, got {self.max_video_frames}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(message)


@dataclass
class FileResult:
    """What preprocessing one input did (one line of the resume manifest)."""

    path: str  # the input file
    identity: str
    video: str
    status: str = "ok"  # "ok" (at least one clip) or "failed"
    reason: str | None = None  # for "failed": one of FAILURE_REASONS
    message: str = ""  # details for a person
    warnings: list[str] = field(default_factory=list)  # entries of WARNINGS
    frames: int = 0  # frames decoded
    frames_kept: int = 0  # frames in written clips
    dropped: dict[str, int] = field(default_factory=dict)  # frames left out, by DROP_REASONS entry
    clips: int = 0  # clips written
    keys: list[str] = field(default_factory=list)  # their sample keys
    padding: list[float] = field(default_factory=list)  # per written clip: largest share of a crop padded
    shrunk: int = 0  # clips whose crop boxes were shrunk to meet --max-pad
    shard: str | None = None  # the shard holding them (set by the writer's side)
    shard_offset: int | None = None  # where their samples end in that shard while it is still being written
    fps: float = 0.0  # nominal frame rate of the stream (average rate when variable)
    width: int = 0  # frame size after rotation
    height: int = 0
    rotation: int = 0  # display rotation applied, degrees counter-clockwise
    shot_changes: int = 0  # frames that started a new shot (the first frame not counted)
    detections: int = 0  # frames MTCNN ran on
    several_faces: int = 0  # detection frames with a second face of comparable size
    seconds: float = 0.0  # wall time of this input
    timings: dict[str, float] = field(default_factory=dict)  # seconds per STAGES entry

    def fail(self, reason: str, message: str) -> FileResult:
        self.status, self.reason, self.message = "failed", reason, message
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Timings:
    """Seconds spent per stage (a cheap context-manager stopwatch)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {stage: 0.0 for stage in STAGES}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


@dataclass
class _Pending:
    """A decoded frame waiting in the pipeline, with its place in its shot."""

    frame: DecodedFrame
    shot_start: bool  # the first frame of a shot (the video's first frame included)
    phase: int  # frames since its shot started


class _PoseNetwork:
    """Hopenet yaw/pitch/roll of the crops (loaded from --pose-checkpoint)."""

    def __init__(self, path: str, device: str) -> None:
        from talkinghead.losses.head_pose import load_hopenet

        self.device = device
        self.network = load_hopenet(path).to(device)
        self.name = f"hopenet:{Path(path).name}"

    def __call__(self, crops: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """crops (t, S, S, 3) uint8 -> (t, 3) float32 yaw, pitch, roll in degrees."""
        import torch

        angles = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                images = torch.from_numpy(crops[start : start + batch_size]).to(self.device)
                images = images.permute(0, 3, 1, 2).float() / 255.0
                angles.append(self.network(images)[:, :3].float().cpu())
        return torch.cat(angles).numpy().astype(np.float32)


def load_pose_network(path: str, device: str = "cpu") -> _PoseNetwork:
    """Hopenet from a local deep-head-pose weights file (talkinghead.losses.head_pose.load_hopenet).

    Raises:
        FileNotFoundError: the file does not exist (the message says where the weights come from).
        RuntimeError: the file is not a Hopenet state dict.
    """
    try:
        return _PoseNetwork(path, device)
    except (FileNotFoundError, ImportError):
        raise
    except Exception as error:  # a wrong file: say which and what is expected
        raise RuntimeError(f"--pose-checkpoint {path} does not load as Hopenet weights ({type(error).__name__}: "
                           f"{error}); pass a deep-head-pose file such as hopenet_robust_alpha1.pkl") from error


class VideoPreprocessor:
    """Turns videos into talking-head clips (see the module doc). Build one per process and reuse it.

    Args:
        options: what to do; checked here.
        pose_network: a loaded Hopenet (or any callable crops (t, S, S, 3) uint8 -> (t, 3) degrees) to use instead
            of loading ``options.pose_checkpoint``.

    Raises:
        ValueError: an option is out of range.
        ImportError: facenet-pytorch or dlib is missing (``pip install "talkinghead[face]"``).
        FileNotFoundError, RuntimeError: ``options.pose_checkpoint`` is missing or not Hopenet weights.
    """

    def __init__(self, options: PreprocessOptions, pose_network: Callable[[np.ndarray], np.ndarray] | None = None):
        from talkinghead.face import LandmarkPredictor

        options.check()
        self.options = options
        self.predictor = LandmarkPredictor()
        self._detectors: dict[int, Any] = {}
        if pose_network is None and options.pose_checkpoint:
            pose_network = load_pose_network(options.pose_checkpoint, options.device)
        self.pose_network = pose_network
        self.pose_source = getattr(pose_network, "name", "hopenet") if pose_network is not None else \
            "landmarks: weak-perspective fit (talkinghead.face.head_pose_from_landmarks)"

    # -- models --------------------------------------------------------------------------------------------------

    def _detector(self, scale: float) -> Any:
        """MTCNN looking for faces down to 0.6 x --min-face (in detection pixels): faces between that and
        --min-face are found, tracked and reported as tiny; smaller ones are not looked for (the pyramid's cost
        grows as the smallest face shrinks)."""
        from talkinghead.face import FaceDetector

        smallest = max(12, round(0.6 * self.options.min_face * scale))
        if smallest not in self._detectors:
            self._detectors[smallest] = FaceDetector(device=self.options.device, min_face_size=smallest,
                                                     batch_size=self.options.batch_size)
        return self._detectors[smallest]

    def _detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Face boxes (n, 4) of each frame, source pixels; equal-size frames go to MTCNN together."""
        from PIL import Image

        boxes: list[np.ndarray | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for shape, indices in by_shape.items():
            height, width = shape[:2]
            longest = max(height, width)
            scale = 1.0
            if self.options.detect_max_side and longest > self.options.detect_max_side:
                scale = self.options.detect_max_side / longest
            batch = [images[i] for i in indices]
            if scale != 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                batch = [np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
                         for image in batch]
                sx, sy = width / size[0], height / size[1]
            faces = self._detector(scale).detect(np.stack(batch))
            for i, found in zip(indices, faces):
                found_boxes = found.boxes.astype(np.float64)
                if scale != 1.0:  # pixel centres at integers: x_source = (x + 1/2) * s - 1/2
                    found_boxes = (found_boxes + 0.5) * np.array([sx, sy, sx, sy]) - 0.5
                boxes[i] = found_boxes
        return boxes  # type: ignore[return-value]

    # -- one video -----------------------------------------------------------------------------------------------

    def process(self, video: InputVideo, write: Callable[[Any, str], None]) -> FileResult:
        """Preprocesses one input; clips go to ``write(clip, key)``. Never raises for a bad input.

        Args:
            video: the input.
            write: stores one :class:`~talkinghead.datamodules.shard_format.Clip` under a sample key (e.g.
                ``ShardWriter.write``).

        Returns:
            What happened (status "ok" when at least one clip was written).
        """
        result = FileResult(path=video.path, identity=video.identity, video=video.video)
        timings = Timings()
        start = time.perf_counter()
        try:
            self._process(video, write, result, timings)
        except VideoError as error:
            result.fail(error.reason, str(error))
        except Exception as error:  # a bad input must not stop the run; the message names it
            result.fail("error", f"{type(error).__name__}: {error}")
        result.seconds = time.perf_counter() - start
        result.timings = {stage: round(seconds, 4) for stage, seconds in timings.seconds.items()}
        return result

    def _process(self, video: InputVideo, write: Callable[[Any, str], None], result: FileResult,
                 timings: Timings) -> None:
        options = self.options
        if not Path(video.path).is_file():
            raise VideoError(f"{video.path} does not exist")
        with timings("decode"):
            reader = VideoReader(video.path, max_frames=options.max_video_frames)
        with reader:
            result.fps = reader.fps
            run = _VideoRun(self, video, write, result, timings, reader)
            run.go()
        if reader.truncated:
            result.warnings.append("truncated")
            result.message = f"decoding stopped after frame {result.frames}: {reader.truncated}"
        if reader.rotation:
            result.warnings.append("rotated")
        if reader.variable_frame_rate:
            result.warnings.append("variable-frame-rate")
        if result.detections and result.several_faces >= SEVERAL_FACES_SHARE * result.detections:
            result.warnings.append("several-faces")
        if result.clips == 0:
            result.fail(*_failure(result, reader.truncated))


def _failure(result: FileResult, truncated: str | None) -> tuple[str, str]:
    """(reason, message) for an input that gave no clip."""
    dropped = result.dropped
    if result.frames == 0:
        return "unreadable", f"no frame could be decoded{': ' + truncated if truncated else ''}"
    faced = dropped.get("tiny-face", 0) + dropped.get("short-clip", 0) + dropped.get("heavy-padding", 0)
    if faced == 0:
        return "no-face", f"no face found in {result.frames} frames"
    if dropped.get("heavy-padding", 0) >= max(dropped.get("tiny-face", 0), dropped.get("short-clip", 0)):
        return "heavy-padding", (f"the crops of {dropped['heavy-padding']} frames would lie more than --max-pad "
                                 "outside the frame; the input may already be cropped (--crop none), or allow "
                                 "more padding (--max-pad, --pad reflect)")
    if dropped.get("tiny-face", 0) >= dropped.get("short-clip", 0):
        return "tiny-face", (f"faces on {dropped.get('tiny-face', 0)} of {result.frames} frames are smaller "
                             f"than --min-face; lower it to keep them")
    return "too-short", (f"face tracks cover {dropped.get('short-clip', 0)} frames, all in runs shorter than "
                         f"--min-frames")


class _VideoRun:
    """The state of one video in flight (see the module doc for the steps)."""

    def __init__(self, owner: VideoPreprocessor, video: InputVideo, write: Callable[[Any, str], None],
                 result: FileResult, timings: Timings, reader: VideoReader) -> None:
        options = owner.options
        self.owner, self.options, self.video, self.write = owner, options, video, write
        self.result, self.timings, self.reader = result, timings, reader
        self.shots = ShotChangeDetector(options.shot_threshold)
        self.tracker = FaceTracker(options.track_iou)
        drift = options.drift_iou if options.motion == "fixed" and options.drift_iou > 0 and options.crop != "none" \
            else None
        self.cutter = ClipCutter(options.min_frames, options.max_frames, options.min_face, drift)
        self.chunk_size = options.batch_size * options.detect_every
        self.pending: list[_Pending] = []  # decoded, not yet detected or resolved
        self.gap: list[_Pending] = []  # resolved up to the next detection (frames between two detections)
        self.last_box: np.ndarray | None = None  # the track's box at the last detection frame
        self.phase = 0
        self.padding_dropped = 0  # frames of clips dropped for heavy padding

    def go(self) -> None:
        frames = self.reader.frames()
        with self.timings("decode"):
            lookahead = next(frames, None)
        while lookahead is not None:
            with self.timings("decode"):
                chunk = [lookahead, *islice(frames, self.chunk_size - 1)]
                lookahead = next(frames, None)
                for frame in chunk:
                    self._add(frame)
            self._resolve(last=lookahead is None)
        self._finish(self.cutter.flush())
        self.result.dropped = {reason: self.cutter.dropped.get(reason, 0) for reason in DROP_REASONS}
        self.result.dropped["heavy-padding"] = self.padding_dropped

    def _add(self, frame: DecodedFrame) -> None:
        result = self.result
        if result.frames == 0:
            result.height, result.width = frame.image.shape[:2]
        result.frames += 1
        shot_start = self.shots(frame.image) or frame.index == 0
        if shot_start and frame.index > 0:
            result.shot_changes += 1
        self.phase = 0 if shot_start else self.phase + 1
        self.pending.append(_Pending(frame, shot_start, self.phase))

    def _resolve(self, last: bool) -> None:
        """Detects the due frames among the pending ones and pushes everything up to the last detection."""
        every = self.options.detect_every
        pending = self.pending
        due = [
            p.phase % every == 0
            or (i + 1 < len(pending) and pending[i + 1].shot_start)
            or (last and i == len(pending) - 1)
            for i, p in enumerate(pending)
        ]
        if not any(due):
            return
        with self.timings("detect"):
            detections = iter(self.owner._detect([p.frame.image for p, d in zip(pending, due) if d]))
        self.result.detections += sum(due)
        resolved_up_to = max(i for i, d in enumerate(due) if d)
        for i, p in enumerate(pending[: resolved_up_to + 1]):
            if due[i]:
                self._detected(p, next(detections))
            else:
                self.gap.append(p)
        self.pending = pending[resolved_up_to + 1 :]

    def _detected(self, p: _Pending, boxes: np.ndarray) -> None:
        if p.shot_start:
            self.tracker.reset()
        step = self.tracker.step(boxes, p.frame.image.shape[:2])
        self.result.several_faces += step.several_faces
        continues = step.box is not None and not step.new_track and self.last_box is not None
        if continues:
            between = interpolate_boxes(self.last_box, step.box, len(self.gap))
            for q, box in zip(self.gap, between):
                self._finish(self.cutter.push(q.frame, box))
        else:
            for q in self.gap:  # the face was lost somewhere in between: none of these frames is trusted
                self._finish(self.cutter.push(q.frame, None))
        self.gap = []
        self._finish(self.cutter.push(p.frame, step.box, new_track=step.new_track))
        self.last_box = step.box

    # -- finished clips ------------------------------------------------------------------------------------------

    def _finish(self, runs: list[list[tuple[DecodedFrame, np.ndarray]]]) -> None:
        for run in runs:
            self._write_clip([frame for frame, _ in run], np.stack([box for _, box in run]))

    def _write_clip(self, frames: list[DecodedFrame], face_boxes: np.ndarray) -> None:
        import torch

        from talkinghead.datamodules.shard_format import Clip, ClipMeta
        from talkinghead.face import fit_weak_perspective, head_pose_from_landmarks

        options, result, timings = self.options, self.result, self.timings
        size = options.size
        height, width = frames[0].image.shape[:2]
        if options.crop == "none":
            boxes = whole_frame_boxes(len(frames), width, height)
            scale = 1.0
        else:
            boxes = crop_boxes(face_boxes, options.crop_margin, options.motion, options.smooth_window)
            limited, scale = limit_padding(boxes, face_boxes, width, height,
                                           options.max_pad if options.over_pad == "shrink" else 1.0)
            if limited is None or (options.over_pad == "drop" and
                                   outside_fraction(boxes, width, height).max() > options.max_pad):
                self.padding_dropped += len(frames)
                return
            boxes = limited
        with timings("landmarks"):
            # dlib on the source frame (full resolution) at the face box, then into crop pixels.
            source_points = np.stack([self.owner.predictor.predict(f.image, b) for f, b in zip(frames, face_boxes)])
            landmarks = to_crop_coordinates(source_points, boxes, size)
        with timings("crop"):
            crops = np.stack([crop_and_resize(f.image, b, size, options.pad) for f, b in zip(frames, boxes)])
        with timings("pose"):
            points = torch.from_numpy(landmarks)
            pose = head_pose_from_landmarks(points, size).numpy().astype(np.float32)
            residual = fit_weak_perspective(points, size).residual.numpy()
            if self.owner.pose_network is not None:
                pose[:, :3] = self.owner.pose_network(crops)
        times = np.array([f.time for f in frames])
        steps = np.diff(times)
        variable = len(steps) > 1 and bool(np.abs(steps - np.median(steps)).max() > VFR_TOLERANCE * np.median(steps))
        fps = result.fps
        if (variable or not fps) and times[-1] > times[0]:
            fps = (len(frames) - 1) / (times[-1] - times[0])  # the clip's own average rate
        moving = bool((boxes != boxes[0]).any())
        padded = round(float(outside_fraction(boxes, width, height).max()), 4)
        extra: dict[str, Any] = {
            "source_video": self.video.source_video,
            "source_frames": [frames[0].index, frames[-1].index + 1],
            "start_time": round(float(times[0]), 4),
            "end_time": round(float(times[-1]), 4),
            "frame_size": [width, height],
            "rotation": self.reader.rotation,
            "variable_frame_rate": variable,
            "crop": options.crop,
            "crop_motion": options.motion,
            "crop_margin": options.crop_margin,
            "pad": options.pad,
            "outside_fraction": padded,
            "crop_shrink": round(scale, 4),
            "detect_every": options.detect_every,
            "pose_source": self.owner.pose_source,
            "pose_residual_px": round(float(np.nanmean(residual)), 3),
        }
        if moving:
            extra["crop_boxes"] = boxes.tolist()
        meta = ClipMeta(
            identity=self.video.identity,
            video=self.video.video,
            source=self.video.path,
            fps=round(float(fps), 6) if math.isfinite(fps) else 0.0,
            size=size,
            crop_box=[int(v) for v in boxes[0]],
            preprocessing=PREPROCESSING_VERSION,
            extra=extra,
        )
        key = sample_key(self.video.name, result.clips)
        with timings("encode_write"):
            self.write(Clip(frames=crops, landmarks=landmarks, meta=meta, pose=pose), key)
        result.clips += 1
        result.frames_kept += len(frames)
        result.keys.append(key)
        result.padding.append(padded)
        result.shrunk += scale < 1.0

