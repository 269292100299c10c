"""Pixel and structure metrics of reconstructions: L1, PSNR, SSIM and MS-SSIM, as DDP-syncing torchmetrics.

Every metric here takes float images (b, 3, h, w) in [0, 1] and keeps only sums and counts (``dist_reduce_fx="sum"``),
so the value after a DDP sync is that of one process that saw all the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

__all__ = ["L1", "PSNR", "SSIM", "MSSSIM", "MSSSIM_BETAS", "PSNR_CAP_DB", "msssim_min_size", "psnr_per_image",
           "msssim_for_size", "SMALL_MSSSIM_SCALES"]

# The cap of talkinghead.lightning.osfv.psnr: MSE is clamped at 1e-10, so identical images score 100 dB.
PSNR_CAP_DB = 100.0
_MIN_MSE = 1e-10
# Wang et al. 2003's five scale weights (torchmetrics' default).
MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(prediction: Tensor, target: Tensor) -> None:
    """Raises unless both are (b, 3, h, w) of the same shape."""
    if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] != 3:
        raise ValueError(f"expected two (b, 3, h, w) batches of one shape, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")


class _MeanOfValues(Metric):
    """A mean of per-item values, kept as a sum and a count (both summed across DDP processes)."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: Tensor, count: int | Tensor | None = None) -> None:
        """Adds values (n,) to the sum and ``count`` (default n) to the count."""
        self.total += values.detach().double().sum()
        self.count += values.numel() if count is None else count

    def compute(self) -> Tensor:
        """The mean (NaN before any update)."""
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


class L1(_MeanOfValues):
    """Mean absolute error over every pixel and channel of images in [0, 1] (the papers' L1 reconstruction score)."""

    higher_is_better = False

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Adds a batch.

        Args:
            prediction: (b, 3, h, w) generated images in [0, 1].
            target: (b, 3, h, w) ground-truth images in [0, 1].
        """
        _check_pair(prediction, target)
        self._add((prediction.double() - target.double()).abs().flatten())


def psnr_per_image(prediction: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB of each image pair, data range 1; MSE clamped at 1e-10, so identical images give 100 dB.

    Args:
        prediction: (b, c, h, w) in [0, 1].
        target: (b, c, h, w) in [0, 1].

    Returns:
        (b,) in the inputs' dtype.
    """
    mse = (prediction - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(_MIN_MSE))


class PSNR(_MeanOfValues):
    """Peak signal-to-noise ratio in dB, per image then averaged; data range 1, capped at 100 dB.

    The convention of :func:`talkinghead.lightning.osfv.psnr`: MSE is clamped at 1e-10, so identical images give
    exactly 100 dB instead of infinity.
    """

    higher_is_better = True

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Adds a batch.

        Args:
            prediction: (b, 3, h, w) generated images in [0, 1].
            target: (b, 3, h, w) ground-truth images in [0, 1].
        """
        _check_pair(prediction, target)
        self._add(psnr_per_image(prediction.double(), target.double()))


class SSIM(_MeanOfValues):
    """Structural similarity (Wang et al. 2004) per image then averaged, via torchmetrics' functional SSIM.

    Args:
        kernel_size: side of the Gaussian window (11, the paper's).
        sigma: its standard deviation (1.5, the paper's).
    """

    higher_is_better = True

    def __init__(self, kernel_size: int = 11, sigma: float = 1.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.sigma = sigma

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Adds a batch.

        Args:
            prediction: (b, 3, h, w) generated images in [0, 1].
            target: (b, 3, h, w) ground-truth images in [0, 1].
        """
        _check_pair(prediction, target)
        values = structural_similarity_index_measure(
            prediction.float(), target.float(), data_range=1.0, kernel_size=self.kernel_size, sigma=self.sigma,
            reduction="none")
        self._add(values)


def msssim_min_size(kernel_size: int = 11, scales: int = len(MSSSIM_BETAS)) -> int:
    """Smallest image side MS-SSIM with ``scales`` scales accepts (176 px for 5 scales, 44 px for 3).

    The window must fit the coarsest scale, and torchmetrics checks ``side // (scales - 1) ** 2 > kernel_size - 1``
    (for 3 and 5 scales the two agree up to rounding); the larger of the two bounds.
    """
    return max(kernel_size * max(1, scales - 1) ** 2, (kernel_size - 1) * 2 ** (scales - 1) + 1)


class MSSSIM(_MeanOfValues):
    """Multi-scale SSIM (Wang et al. 2003) per image then averaged, via torchmetrics' functional MS-SSIM.

    Size: with the paper's 5 scales and an 11 px window images need sides of at least 176 px
    (:func:`msssim_min_size`); smaller images raise a ValueError that says so. For small images pass fewer
    ``betas`` (e.g. ``MSSSIM_BETAS[:3]``, 44 px minimum, fine for 64 px) — that is a different score from the
    5-scale MS-SSIM papers report, so name it accordingly when you report it.

    Args:
        betas: weight of each scale, finest first (the paper's 5 by default).
        kernel_size: side of the Gaussian window.
        sigma: its standard deviation.
    """

    higher_is_better = True

    def __init__(self, betas: Sequence[float] = MSSSIM_BETAS, kernel_size: int = 11, sigma: float = 1.5,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.betas = tuple(float(beta) for beta in betas)
        self.kernel_size = kernel_size
        self.sigma = sigma

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Adds a batch.

        Args:
            prediction: (b, 3, h, w) generated images in [0, 1], h and w at least :func:`msssim_min_size`.
            target: (b, 3, h, w) ground-truth images in [0, 1].
        """
        _check_pair(prediction, target)
        smallest = msssim_min_size(self.kernel_size, len(self.betas))
        if min(prediction.shape[-2:]) < smallest:
            raise ValueError(
                f"MS-SSIM with {len(self.betas)} scales and a {self.kernel_size} px window needs images of at least "
                f"{smallest} x {smallest} px, got {tuple(prediction.shape[-2:])}; pass fewer betas "
                f"(e.g. MSSSIM(betas=MSSSIM_BETAS[:3]) for >= {msssim_min_size(self.kernel_size, 3)} px)"
            )
        values = multiscale_structural_similarity_index_measure(
            prediction.float(), target.float(), data_range=1.0, kernel_size=self.kernel_size, sigma=self.sigma,
            betas=self.betas, reduction="none")
        self._add(values)


# Fewer scales for small images: a different score from the standard 5-scale MS-SSIM, hence its own name.
SMALL_MSSSIM_SCALES = 3


def msssim_for_size(side: int) -> tuple[str, MSSSIM] | None:
    """The MS-SSIM images of this side support, with the name to report it under.

    Returns:
        ("ms_ssim", the paper's 5 scales) from :func:`msssim_min_size` px, ("ms_ssim_3scale", 3 scales) from
        ``msssim_min_size(scales=3)`` px, else None.
    """
    if side >= msssim_min_size():
        return "ms_ssim", MSSSIM()
    if side >= msssim_min_size(scales=SMALL_MSSSIM_SCALES):
        return f"ms_ssim_{SMALL_MSSSIM_SCALES}scale", MSSSIM(betas=MSSSIM_BETAS[:SMALL_MSSSIM_SCALES])
    return None
