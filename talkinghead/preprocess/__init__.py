"""Real talking-head videos -> shards (``talkinghead preprocess``): face tracking, stable square crops, landmarks,
pose labels, resumable and parallel over files.

The parts, each usable on its own:

- :mod:`~talkinghead.preprocess.inputs`: which files, whose (layouts ``voxceleb2``, ``folder``, ``csv``);
- :mod:`~talkinghead.preprocess.video`: PyAV decoding with timestamps, rotation, a variable-frame-rate check;
- :mod:`~talkinghead.preprocess.tracking`: shot changes, one tracked face, cutting into clips (numpy only);
- :mod:`~talkinghead.preprocess.crop`: crop boxes (VoxCeleb-style fixed, LPD-style smoothed), cropping,
  coordinates;
- :mod:`~talkinghead.preprocess.pipeline`: one video -> clips (:class:`VideoPreprocessor`), with MTCNN and dlib
  from :mod:`talkinghead.face`;
- :mod:`~talkinghead.preprocess.runner`: many videos -> shards (:func:`preprocess_videos`): workers, the resume
  manifest, the summary.

Face detection and landmarks need the ``face`` extra (``pip install "talkinghead[face]"``); importing this package
does not.
"""

from talkinghead.preprocess.crop import crop_and_resize, crop_boxes, from_crop_coordinates, to_crop_coordinates
from talkinghead.preprocess.inputs import LAYOUTS, InputError, InputVideo, find_inputs, infer_layout
from talkinghead.preprocess.pipeline import (
    PREPROCESSING_VERSION,
    FileResult,
    PreprocessOptions,
    VideoPreprocessor,
)
from talkinghead.preprocess.runner import MANIFEST_NAME, SUMMARY_NAME, preprocess_videos, read_manifest

__all__ = [
    "LAYOUTS",
    "MANIFEST_NAME",
    "PREPROCESSING_VERSION",
    "SUMMARY_NAME",
    "FileResult",
    "InputError",
    "InputVideo",
    "PreprocessOptions",
    "VideoPreprocessor",
    "crop_and_resize",
    "crop_boxes",
    "find_inputs",
    "from_crop_coordinates",
    "infer_layout",
    "preprocess_videos",
    "read_manifest",
    "to_crop_coordinates",
]
