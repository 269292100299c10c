"""`talkinghead animate`: a photo (or a video's first frame) driven by a video, written as an H.264 mp4.

The face of the source and of the driving video is found with MTCNN and cropped as `talkinghead preprocess` crops
training clips (VoxCeleb-style square box of 1.6 face sides, one box for the whole driving video, reflect padding
limited to 15% of the crop), then resized to the size the model was trained at. OSFV bundles animate the source
(relative motion by default, free view with --yaw/--pitch/--roll); fine-tuned FSTH bundles draw their person with
the driving video's landmarks (dlib 68) and fine-tuned LPD bundles take its pose from the frames.

    talkinghead animate --model bundle/ --source photo.jpg --driving video.mp4 --out out.mp4 --side-by-side
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ANIMATABLE = ("osfv", "fsth-person", "lpd-person")
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg"}
MARGIN = 1.6  # the VoxCeleb-style crop of `talkinghead preprocess` (CROP_MARGINS["voxceleb"])


class AnimateError(ValueError):
    """Bad input: reported in one line with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead animate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a bundle folder (talkinghead export) or a fit checkpoint")
    parser.add_argument("--source", help="the photo (or video: its first frame) to animate (OSFV)")
    parser.add_argument("--driving", required=True, help="the driving video")
    parser.add_argument("--out", required=True, help="the mp4 to write")
    motion = parser.add_mutually_exclusive_group()
    motion.add_argument("--relative", dest="relative", action="store_true", default=True,
                        help="carry the driving motion since its first frame over to the source's pose (default)")
    motion.add_argument("--absolute", dest="relative", action="store_false",
                        help="use the driving frames' head poses and expressions as they are")
    parser.add_argument("--yaw", type=float, default=0.0, help="free view: extra yaw in degrees (OSFV)")
    parser.add_argument("--pitch", type=float, default=0.0, help="free view: extra pitch in degrees (OSFV)")
    parser.add_argument("--roll", type=float, default=0.0, help="free view: extra roll in degrees (OSFV)")
    parser.add_argument("--size", type=int, default=None,
                        help="side of the output video's frames (default: the model's image size); the model "
                             "always runs at the size it was trained at")
    parser.add_argument("--side-by-side", action="store_true", help="write driving | output side by side")
    parser.add_argument("--crop", choices=("face", "none"), default="face",
                        help="face: find and crop faces as in training (default); none: the inputs are crops already")
    parser.add_argument("--max-frames", type=int, default=None, help="animate at most this many driving frames")
    parser.add_argument("--detect-every", type=int, default=5,
                        help="run the face detector on every N-th driving frame (boxes in between are interpolated)")
    parser.add_argument("--device", default="cpu", help="torch device of the model and the face detector")
    parser.add_argument("--batch", type=int, default=8, help="frames synthesised per forward pass")
    return parser


# -- inputs ------------------------------------------------------------------------------------------------------


def read_source(path: Path) -> np.ndarray:
    """(h, w, 3) uint8 RGB of a photo, or of a video's first frame."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames, _ = read_video(path, 1)
        return frames[0]
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise AnimateError(f"cannot read the source image {path}: {error}") from error


def read_video(path: Path, max_frames: int | None) -> tuple[np.ndarray, float]:
    """(t, h, w, 3) uint8 RGB frames and the frame rate."""
    from talkinghead.preprocess.video import VideoError, VideoReader

    try:
        with VideoReader(str(path), max_frames=max_frames) as reader:
            frames = [frame.image for frame in reader.frames()]
            fps = reader.fps
    except VideoError as error:
        raise AnimateError(f"cannot read the video {path}: {error}") from error
    if not frames:
        raise AnimateError(f"the video {path} holds no decodable frame")
    return np.stack(frames), fps or 25.0


def largest_face(faces: Any, what: str, warn: bool) -> np.ndarray | None:
    """The box of the largest face (warning when there are several), or None."""
    if not len(faces):
        return None
    areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    if warn and len(faces) > 1:
        print(f"talkinghead animate: {len(faces)} faces in {what}; taking the largest", file=sys.stderr)
    return faces.boxes[int(np.argmax(areas))].astype(np.float64)


class Cropper:
    """Finds faces and crops them as `talkinghead preprocess` does (VoxCeleb-style box, reflect padding)."""

    def __init__(self, size: int, device: str, enabled: bool) -> None:
        self.size, self.device, self.enabled = size, device, enabled
        self._detector = None

    def detect(self, frames: np.ndarray) -> list[Any]:
        if self._detector is None:
            from talkinghead.face import FaceDetector

            self._detector = FaceDetector(device=self.device, min_face_size=20)
        return self._detector.detect(frames)

    def boxes(self, face_boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        from talkinghead.preprocess.crop import crop_boxes, limit_padding, whole_frame_boxes

        if not self.enabled:
            return whole_frame_boxes(len(face_boxes), width, height)
        boxes = crop_boxes(face_boxes, MARGIN, "fixed")
        limited, _ = limit_padding(boxes, face_boxes, width, height, 0.15)
        return boxes if limited is None else limited

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        from talkinghead.preprocess.crop import crop_and_resize

        return np.stack([crop_and_resize(frame, box, self.size, "reflect") for frame, box in zip(frames, boxes)])

    def source(self, image: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The crop (s, s, 3) and the face box of a source image."""
        height, width = image.shape[:2]
        if not self.enabled:
            box = np.array([0, 0, width - 1, height - 1], dtype=np.float64)
        else:
            box = largest_face(self.detect(image[None])[0], f"the source {name}", warn=True)
            if box is None:
                raise AnimateError(f"no face found in SOURCE: {name} (use a photo with a visible face, at least "
                                   f"~40 px high, or --crop none if it is already a face crop)")
        return self.crop(image[None], self.boxes(box[None], width, height))[0], box

    def driving(self, frames: np.ndarray, name: str, every: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crops (t, s, s, 3), the per-frame face boxes (t, 4) and the crop boxes (t, 4) of a driving video (one
        crop box for all)."""
        t, height, width = frames.shape[:3]
        if not self.enabled:
            face = np.tile(np.array([0, 0, width - 1, height - 1], dtype=np.float64), (t, 1))
            boxes = self.boxes(face, width, height)
            return self.crop(frames, boxes), face, boxes
        picked = list(range(0, t, every)) + ([t - 1] if (t - 1) % every else [])
        found = {i: largest_face(faces, f"frame {i} of {name}", warn=False)
                 for i, faces in zip(picked, self.detect(frames[picked]))}
        known = [i for i in picked if found[i] is not None]
        if not known:
            raise AnimateError(f"no face found in the driving video {name} (checked {len(picked)} of {t} frames)")
        face = np.stack([np.interp(np.arange(t), known, [found[i][k] for i in known]) for k in range(4)], axis=1)
        boxes = self.boxes(face, width, height)
        return self.crop(frames, boxes), face, boxes


# -- the model ---------------------------------------------------------------------------------------------------


def load_any(path: Path, device: str) -> tuple[Any, str, int]:
    """(inference model in eval mode, kind, image size) of a bundle folder or a fit checkpoint; refuses a kind
    that cannot animate before building it."""
    if path.is_dir():
        from talkinghead.inference import load, read_manifest

        check_kind(read_manifest(path)["kind"], path)  # before building anything
        model = load(path, device=device)
        return model, model.manifest["kind"], int(model.manifest["image_size"])
    if not path.is_file():
        raise AnimateError(f"--model {path}: no such bundle folder or checkpoint")
    from talkinghead.evaluation import checkpoint_image_size, load_model
    from talkinghead.export import module_kind

    module = load_model(path, device=device)
    kind = module_kind(module)
    check_kind(kind, path)
    return module.inference_model().eval(), kind, checkpoint_image_size(path)


def check_kind(kind: str, model: Any) -> None:
    if kind not in ANIMATABLE:
        raise AnimateError(f"--model {model} holds a model of kind {kind}; animate takes OSFV or a fine-tuned FSTH/LPD "
                           f"model (fsth-person, lpd-person): meta-learned few-shot models need reference frames "
                           f"of the person, so fine-tune them first")


def to_tensor(images: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def landmarks_in_crops(frames: np.ndarray, face_boxes: np.ndarray, crop_boxes: np.ndarray, size: int) -> np.ndarray:
    """dlib's 68 landmarks of each driving frame, in pixels of its crop (as preprocessing stores them)."""
    from talkinghead.face import LandmarkPredictor
    from talkinghead.preprocess.crop import to_crop_coordinates

    predictor = LandmarkPredictor()
    points = np.stack([predictor.predict(frame, box) for frame, box in zip(frames, face_boxes)])
    return to_crop_coordinates(points, crop_boxes, size)


def synthesise(model: Any, kind: str, args: argparse.Namespace, source: Any, driving: Any,
               landmarks: np.ndarray | None, size: int) -> Any:
    """(t, 3, s, s) output frames on the CPU, with a progress bar over chunks of --batch frames."""
    import torch
    from tqdm import tqdm

    with torch.no_grad(), tqdm(total=len(driving), unit="frame", desc="animate", file=sys.stderr,
                               disable=None) as bar:
        if kind == "osfv":
            return model.animate(source, driving, args.relative, args.yaw, args.pitch, args.roll, chunk=args.batch,
                                 on_chunk=bar.update).float().cpu()
        outputs = []
        for start in range(0, len(driving), args.batch):
            if kind == "lpd-person":
                out = model.reenact(driving[start:start + args.batch])
            else:
                out = model.reenact(torch.from_numpy(landmarks[start:start + args.batch]).float(), size)
            outputs.append(out.float().cpu())
            bar.update(len(out))
        return torch.cat(outputs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    partial = out.with_name(out.stem + ".partial" + out.suffix)

    def fail(message: str) -> int:
        partial.unlink(missing_ok=True)
        print(f"talkinghead animate: {message}", file=sys.stderr)
        return 2

    for flag, value in (("--batch", args.batch), ("--detect-every", args.detect_every), ("--size", args.size or 16),
                        ("--max-frames", args.max_frames or 1)):
        if value < 1:
            return fail(f"{flag} must be at least 1, got {value}")
    if out.suffix.lower() != ".mp4":
        return fail(f"--out {out}: the output is an H.264 .mp4 file; name it *.mp4")
    if not out.parent.is_dir():
        return fail(f"--out {out}: the folder {out.parent} does not exist")
    for flag, value in (("--driving", args.driving), ("--source", args.source)):
        if value is not None and not Path(value).is_file():
            return fail(f"{flag} {value}: no such file")
    try:
        return run(args, out, partial)
    except AnimateError as error:
        return fail(str(error))
    except ValueError as error:  # bundle errors, unsafe or foreign checkpoints
        return fail(str(error).splitlines()[0])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace, out: Path, partial: Path) -> int:
    import torch

    from talkinghead.callbacks.media import write_mp4
    from talkinghead.metrics._images import to_uint8_frames

    model, kind, size = load_any(Path(args.model), args.device)
    if kind == "osfv" and args.source is None:
        raise AnimateError("an OSFV model animates a --source photo: pass --source IMAGE")
    cropper = Cropper(size, args.device, enabled=args.crop == "face")
    source = None
    if kind == "osfv":
        source_crop, _ = cropper.source(read_source(Path(args.source)), args.source)
        source = to_tensor(source_crop[None])
    elif args.source is not None:
        print(f"talkinghead animate: a {kind} model draws the person it was fine-tuned on; --source is not used",
              file=sys.stderr)
    frames, fps = read_video(Path(args.driving), args.max_frames)
    driving_crops, face_boxes, crop_boxes = cropper.driving(frames, args.driving, args.detect_every)
    landmarks = None
    if kind == "fsth-person":
        landmarks = landmarks_in_crops(frames, face_boxes, crop_boxes, size).astype(np.float32)
    start = time.perf_counter()
    output = synthesise(model, kind, args, source, to_tensor(driving_crops), landmarks, size)
    seconds = time.perf_counter() - start
    if args.size and args.size != size:
        output = torch.nn.functional.interpolate(output, size=(args.size, args.size), mode="bilinear",
                                                 antialias=True, align_corners=False)
    images = to_uint8_frames(output)
    if args.side_by_side:
        driving_images = to_uint8_frames(torch.nn.functional.interpolate(
            to_tensor(driving_crops), size=images.shape[1:3], mode="bilinear", antialias=True, align_corners=False))
        images = np.concatenate([driving_images, images], axis=2)
    write_mp4(partial, images, fps=fps)
    os.replace(partial, out)
    print(f"{out}: {len(images)} frames at {fps:.3g} fps ({images.shape[2]}x{images.shape[1]}), {kind} model at "
          f"{size} px: {len(images) / seconds:.1f} frames/s synthesised on {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
