"""Pose augmentation of LPD (Burkov et al., CVPR 2020, "Neural Head Reenactment with Latent Pose Descriptors", sec. 3).

The pose encoder of LPD sees a single frame. If that frame reached it untouched, the pose descriptor could carry the
person's identity (face shape, skin tone, image quality) and the generator would learn to read identity from it
instead of from the identity embedding. The paper therefore augments the pose frame in ways that keep the head pose
and expression but scramble identity cues:

- geometry: a random per-axis scale and shift, shared with the target (and its mask) so that the generator is asked
  to reproduce the same warped image the pose encoder saw, otherwise the pose would not be preserved;
- pixel-level changes (blur, sharpening, noise, colour jitter, JPEG artefacts), applied to the pose frame only, since
  the target must stay a clean reconstruction goal.

All operations are kornia augmentations drawing from torch's global RNG, so ``torch.manual_seed`` reproduces them.
"""

from __future__ import annotations

import math

import torch
from kornia import augmentation as K
from torch import Tensor, nn

__all__ = ["PoseAugmentation"]


def _check_range(name: str, value: tuple[float, float], low: float, high: float, *, open_low: bool = False) -> None:
    """Raise ValueError unless ``value`` is a pair ``lo <= hi`` inside ``[low, high]`` (``(low, high]`` if open_low)."""
    if len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    low_ok = lo > low if open_low else lo >= low
    if not (low_ok and lo <= hi <= high):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must satisfy {bracket}{low}, {high}] containing low <= high, got {value!r}")


class PoseAugmentation(nn.Module):
    """Pose-preserving augmentation of the LPD pose frame, with the same geometry applied to the target.

    The module is stateless: it has no parameters or buffers, and every call draws fresh random values from torch's
    global RNG. Geometry is drawn per sample; each pixel-level change is applied per sample with its own probability.

    Args:
        scale: Range of the per-axis scale factor; x and y are drawn independently, so the aspect ratio changes too.
        shift: Largest shift as a fraction of the image side; x and y are drawn independently in ``[-shift, shift]``.
        blur_probability: Probability of a Gaussian blur of the pose frame.
        blur_sigma: Range of the blur's standard deviation, in pixels.
        sharpen_probability: Probability of sharpening the pose frame.
        sharpness: Range of the sharpness blend factor (1 keeps the image, larger sharpens).
        noise_probability: Probability of adding Gaussian noise to the pose frame.
        noise_std: Standard deviation of the additive noise, in [0, 1] intensity units.
        colour_probability: Probability of a brightness / contrast / saturation jitter of the pose frame.
        brightness: Brightness jitter strength (factor drawn in ``[1 - brightness, 1 + brightness]``).
        contrast: Contrast jitter strength (factor drawn in ``[1 - contrast, 1 + contrast]``).
        saturation: Saturation jitter strength (factor drawn in ``[1 - saturation, 1 + saturation]``).
        jpeg_probability: Probability of JPEG compression artefacts on the pose frame.
        jpeg_quality: Range of the JPEG quality, within [1, 100] (lower means stronger artefacts).
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.8, 1.2),  # per-axis scale range, x and y drawn independently
        shift: float = 0.05,  # max shift as a fraction of the image side, x and y drawn independently
        blur_probability: float = 0.3,  # chance of a Gaussian blur of the pose frame
        blur_sigma: tuple[float, float] = (0.5, 1.5),  # blur standard deviation range, pixels
        sharpen_probability: float = 0.3,  # chance of sharpening the pose frame
        sharpness: tuple[float, float] = (1.0, 2.5),  # sharpness blend factor range; 1 = unchanged, >1 sharper
        noise_probability: float = 0.3,  # chance of additive Gaussian noise on the pose frame
        noise_std: float = 0.03,  # noise standard deviation in [0, 1] intensity units
        colour_probability: float = 0.5,  # chance of a brightness / contrast / saturation jitter of the pose frame
        brightness: float = 0.3,  # brightness factor drawn in [1 - b, 1 + b]
        contrast: float = 0.3,  # contrast factor drawn in [1 - c, 1 + c]
        saturation: float = 0.3,  # saturation factor drawn in [1 - s, 1 + s]
        jpeg_probability: float = 0.3,  # chance of JPEG compression artefacts on the pose frame
        jpeg_quality: tuple[float, float] = (30.0, 90.0),  # JPEG quality range within [1, 100]
    ) -> None:
        super().__init__()
        _check_range("scale", scale, 0.0, math.inf, open_low=True)
        if not 0.0 <= shift < 0.5:
            raise ValueError(f"shift must be in [0, 0.5) (a fraction of the image side), got {shift!r}")
        probabilities = {
            "blur_probability": blur_probability,
            "sharpen_probability": sharpen_probability,
            "noise_probability": noise_probability,
            "colour_probability": colour_probability,
            "jpeg_probability": jpeg_probability,
        }
        for name, probability in probabilities.items():
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {probability!r}")
        _check_range("blur_sigma", blur_sigma, 0.0, math.inf, open_low=True)
        _check_range("sharpness", sharpness, 0.0, math.inf)
        _check_range("jpeg_quality", jpeg_quality, 1.0, 100.0)
        if noise_std < 0.0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        for name, strength in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= strength <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (factor range [1 - x, 1 + x]), got {strength!r}")

        lo, hi = float(scale[0]), float(scale[1])
        # Identity geometry is skipped rather than resampled, so that the no-op configuration is exact on any device.
        self._identity_geometry = lo == hi == 1.0 and shift == 0.0
        # A 4-tuple makes kornia draw the x and y scales from separate samplers (a 2-tuple would share one factor).
        affine = {"degrees": 0.0, "translate": (shift, shift), "scale": (lo, hi, lo, hi), "p": 1.0}
        # The kornia ops are held in plain tuples, not registered as submodules: RandomSharpness keeps its range in a
        # buffer, which would otherwise land in the state_dict of every LightningModule holding this (stateless)
        # module. kornia samples on the CPU and moves the values to the input's device, so .to() is not needed.
        self._warps = (
            K.RandomAffine(**affine, resample="bilinear", padding_mode="zeros"),
            K.RandomAffine(**affine, resample="nearest", padding_mode="zeros"),
        )
        # Kernel wide enough (3 sigma each side) for the largest sigma, so large sigmas are not truncated.
        blur_kernel = 2 * math.ceil(3.0 * float(blur_sigma[1])) + 1
        pixel_ops = (
            (K.RandomGaussianBlur(blur_kernel, tuple(map(float, blur_sigma)), p=blur_probability), blur_probability),
            (K.RandomSharpness(tuple(map(float, sharpness)), p=sharpen_probability), sharpen_probability),
            (K.ColorJitter(brightness, contrast, saturation, 0.0, p=colour_probability), colour_probability),
            (K.RandomGaussianNoise(mean=0.0, std=noise_std, p=noise_probability), noise_probability),
            # kornia's JPEG codec pads to a multiple of 16 internally and crops back, so any image size works.
            (K.RandomJPEG(tuple(map(float, jpeg_quality)), p=jpeg_probability), jpeg_probability),
        )
        # Operations that can never fire are dropped, so they neither cost time nor consume random numbers.
        self._pixel_ops = tuple(op for op, probability in pixel_ops if probability > 0.0)
        self._config = (
            f"scale={(lo, hi)}, shift={shift}, blur_probability={blur_probability}, "
            f"sharpen_probability={sharpen_probability}, noise_probability={noise_probability}, "
            f"colour_probability={colour_probability}, jpeg_probability={jpeg_probability}"
        )

    def extra_repr(self) -> str:
        """Summarise the configuration, since the kornia ops are not registered submodules."""
        return self._config

    def pixel_changes(self, image: Tensor) -> Tensor:
        """Apply the pixel-level changes alone (no geometry).

        Args:
            image: RGB images, shape (b, 3, s, s), values in [0, 1].

        Returns:
            A new tensor of shape (b, 3, s, s), clamped to [0, 1], same device and dtype.
        """
        _check_images("image", image)
        out = image
        for op in self._pixel_ops:
            # Clamp between steps: noise and sharpening can leave [0, 1], and the colour and JPEG ops assume it.
            out = op(out).clamp(0.0, 1.0)
        return out.clone() if out is image else out

    def forward(
        self, pose_frame: Tensor, target: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Warp pose frame, target and mask identically, then apply pixel-level changes to the pose frame only.

        Args:
            pose_frame: Frame seen by the pose encoder, shape (b, 3, s, s), values in [0, 1].
            target: Frame the generator must reproduce, shape (b, 3, s, s), values in [0, 1].
            mask: Foreground mask of the target, shape (b, 1, s, s), values in {0, 1}; NaN rows mean "unknown"
                (the shards store no mask) and are returned all-NaN; ``None`` is passed through.

        Returns:
            ``(pose_frame, target, mask)`` with the input shapes, device and dtype: the augmented pose frame in
            [0, 1], the warped target in [0, 1], and the warped mask (or ``None``).
        """
        _check_images("pose_frame", pose_frame)
        if target.shape != pose_frame.shape:
            raise ValueError(
                f"target must have the shape of pose_frame {tuple(pose_frame.shape)}, got {tuple(target.shape)}"
            )
        if mask is not None:
            expected = (pose_frame.shape[0], 1, *pose_frame.shape[2:])
            if mask.shape != expected:
                raise ValueError(f"mask must have shape {expected} (b, 1, s, s), got {tuple(mask.shape)}")
            if not mask.is_floating_point():
                raise ValueError(f"mask must be a floating point tensor (NaN marks unknown rows), got {mask.dtype}")

        if not self._identity_geometry:
            warp_image = self._warps[0]
            params = warp_image.forward_parameters(pose_frame.shape)
            # One warp call for both images keeps them on exactly the same parameters and halves the kernel launches.
            warped = warp_image(torch.cat([pose_frame, target], dim=1), params=params).clamp(0.0, 1.0)
            pose_frame, target = warped[:, :3], warped[:, 3:]
            if mask is not None:
                mask = self._warp_mask(mask, params)
        return self.pixel_changes(pose_frame), target, mask

    def _warp_mask(self, mask: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Warp the known rows of a mask (b, 1, s, s) with ``params``; rows holding any NaN come back all-NaN."""
        # Resolved with torch.where rather than by branching on the values, so no device sync is needed.
        unknown = torch.isnan(mask).flatten(1).any(dim=1).view(-1, 1, 1, 1)
        warped = self._warps[1](torch.where(unknown, torch.zeros_like(mask), mask), params=params)
        return torch.where(unknown, torch.full_like(warped, math.nan), warped)


def _check_images(name: str, images: Tensor) -> None:
    """Raise ValueError unless ``images`` is a floating point batch of RGB images (b, 3, s, s)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (b, 3, s, s), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor in [0, 1], got dtype {images.dtype}")
