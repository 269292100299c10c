"""Video decoding with PyAV: RGB frames with their timestamps, display rotation applied, frame rate checked.

Frame rate: clips keep the source's frames (no resampling). A stream whose frame-to-frame timestamp steps vary by
more than :data:`VFR_TOLERANCE` of the typical step is reported as variable frame rate; its clips then carry
their own average rate ((T - 1) / duration) instead of the stream's nominal one, and their start and end times.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

__all__ = ["VFR_TOLERANCE", "DecodedFrame", "VideoError", "VideoReader"]

# Timestamp steps further than this fraction from the median step make a stream "variable frame rate".
VFR_TOLERANCE = 0.2


class VideoError(Exception):
    """A video cannot be read at all. ``reason`` is the short code reported per file ("unreadable")."""

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DecodedFrame:
    """One decoded frame."""

    index: int  # position in the stream, from 0
    time: float  # presentation time in seconds
    image: np.ndarray  # (h, w, 3) uint8 RGB, rotated for display


@dataclass
class FrameRate:
    """Running statistics of a stream's timestamp steps (for the variable-frame-rate check)."""

    steps: list[float] = field(default_factory=list)

    def add(self, step: float) -> None:
        self.steps.append(step)

    @property
    def variable(self) -> bool:
        if len(self.steps) < 2:
            return False
        steps = np.asarray(self.steps)
        median = float(np.median(steps))
        return median <= 0 or bool(np.abs(steps - median).max() > VFR_TOLERANCE * median)


class VideoReader:
    """Decodes one video file, frame by frame, with PyAV (single-threaded: one worker per core does the rest).

    Args:
        path: the video file.
        max_frames: stop after this many frames (None: the whole stream).

    Raises:
        VideoError: the file cannot be opened or holds no video stream.

    Attributes (after opening):
        fps: the stream's nominal (average) frame rate, frames per second.
        rotation: display rotation in degrees counter-clockwise applied to every frame (0, 90, 180 or 270).
        frame_count: the container's frame count, 0 when it does not say.
        truncated: after iterating, the decoder's error message when the stream ended in an error (the frames
            before it were delivered), else None.
    """

    def __init__(self, path: str, max_frames: int | None = None) -> None:
        import av

        self.path, self.max_frames = path, max_frames
        try:
            self._container = av.open(path, mode="r")
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
            raise VideoError(f"cannot open {path}: {error}") from error
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{path} holds no video stream", reason="unreadable")
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = 1
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps = float(rate) if rate else 0.0
        self.frame_count = int(self._stream.frames or 0)
        self.rotation = 0
        self.truncated: str | None = None
        self.frame_rate = FrameRate()

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def variable_frame_rate(self) -> bool:
        """Whether the timestamp steps seen so far vary (see the module doc)."""
        return self.frame_rate.variable

    def frames(self) -> Iterator[DecodedFrame]:
        """The frames in presentation order; a decoding error ends the stream (recorded in ``truncated``)."""
        import av

        time_base = self._stream.time_base or Fraction(1, 1)
        previous_time = None
        index = 0
        decoder = self._container.decode(self._stream)
        while self.max_frames is None or index < self.max_frames:
            try:
                frame = next(decoder)
                image = frame.to_ndarray(format="rgb24")
            except StopIteration:
                return
            except (av.FFmpegError, ValueError, OSError) as error:
                self.truncated = f"{type(error).__name__}: {error}"
                return
            if frame.pts is not None:
                time = float(frame.pts * time_base)
            elif self.fps > 0:
                time = index / self.fps
            else:
                time = float(index)
            if previous_time is not None:
                self.frame_rate.add(time - previous_time)
            previous_time = time
            rotation = _rotation(frame)
            if index == 0:
                self.rotation = rotation
            if rotation:
                # The display matrix rotates the coded picture counter-clockwise by `rotation` degrees; so does
                # np.rot90 (k quarter turns) on an image array with y down.
                image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
            yield DecodedFrame(index=index, time=time, image=image)
            index += 1
        if self.fps <= 0 and self.frame_rate.steps:
            self.fps = 1.0 / max(float(np.median(self.frame_rate.steps)), 1e-6)


def _rotation(frame: object) -> int:
    """The frame's display rotation in degrees, snapped to a quarter turn (PyAV >= 13 reads the display matrix)."""
    rotation = getattr(frame, "rotation", 0) or 0
    if not math.isfinite(rotation):
        return 0
    return int(round(rotation / 90.0)) * 90 % 360 if rotation else 0
