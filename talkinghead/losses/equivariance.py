"""The equivariance loss of face-vid2vid (3.3), after FOMM (Siarohin et al. 2019): keypoints follow image warps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from kornia.geometry.transform import warp_image_tps, warp_points_tps
from torch import Tensor, nn

__all__ = ["WarpTransform", "EquivarianceLoss"]


@dataclass
class WarpTransform:
    """T, an affine + thin-plate-spline map of normalised image coordinates (x, y in [-1, 1], grid_sample order).

    T(p) = a_0 + A p + sum_j w_j U(|p - c_j|) with U(r) = r^2 log r (kornia's TPS parameterisation). The warped
    image of ``image`` is image(T(p)) at each output position p, so T maps warped-image coordinates back to the
    original image's coordinates.

    Attributes:
        affine: (b, 3, 2) kornia affine weights: row 0 the translation a_0, rows 1-2 the matrix A transposed.
        centers: (b, n, 2) TPS control points c_j.
        weights: (b, n, 2) TPS kernel weights w_j.
    """

    affine: Tensor
    centers: Tensor
    weights: Tensor

    @classmethod
    def identity(
        cls, batch: int, points_tps: int = 5, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> WarpTransform:
        """The identity map T(p) = p (zero TPS weights) for a batch of ``batch``."""
        affine = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], device=device, dtype=dtype)
        centers = control_grid(points_tps, device=device, dtype=dtype)
        return cls(
            affine=affine.expand(batch, 3, 2).clone(),
            centers=centers.expand(batch, -1, -1).clone(),
            weights=torch.zeros(batch, points_tps**2, 2, device=device, dtype=dtype),
        )

    def warp_points(self, points: Tensor) -> Tensor:
        """T(p) for points in the warped image.

        Args:
            points: (b, k, 2) normalised x, y.

        Returns:
            (b, k, 2) the same points in the original image's coordinates.
        """
        return warp_points_tps(points, self.centers, self.weights, self.affine)

    def warp_image(self, image: Tensor) -> Tensor:
        """The warped image p -> image(T(p)), reflection padding outside the frame.

        Args:
            image: (b, c, h, w).

        Returns:
            (b, c, h, w).
        """
        return warp_image_tps(
            image, self.centers, self.weights, self.affine, align_corners=False, padding_mode="reflection"
        )


def control_grid(points_tps: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """(points_tps^2, 2) control points on a regular grid over [-1, 1]^2, x varying fastest."""
    axis = torch.linspace(-1.0, 1.0, points_tps, device=device, dtype=dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


class EquivarianceLoss(nn.Module):
    """L_E, the equivariance loss of face-vid2vid (Wang et al. 2021, 3.3; FOMM, Siarohin et al. 2019, 3.3).

    A random affine + TPS map T warps the driving image d; keypoints detected on the warped image, mapped back
    through T, must match the keypoints of d: mean |x_d - T(x_warped)| over x and y only (the projection is
    orthographic, so depth is not compared).

    Args:
        sigma_affine: std of the random perturbation of the identity affine map (matrix and translation).
        sigma_tps: std of the random TPS kernel weights.
        points_tps: control points per side of the TPS grid (points_tps^2 in all).
    """

    def __init__(self, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5) -> None:
        super().__init__()
        self.sigma_affine = sigma_affine
        self.sigma_tps = sigma_tps
        self.points_tps = points_tps

    def sample_transform(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> WarpTransform:
        """A random T per sample (FOMM's: identity affine plus N(0, sigma_affine), TPS weights N(0, sigma_tps)).

        Args:
            batch: number of transforms b.
            generator: random generator for reproducible draws (on ``device``); None uses the global one.
            device: where the parameters live.
            dtype: their dtype.
        """
        transform = WarpTransform.identity(batch, self.points_tps, device=device, dtype=dtype)
        noise = torch.randn(batch, 3, 2, generator=generator, device=device, dtype=dtype)
        transform.affine = transform.affine + self.sigma_affine * noise
        tps = torch.randn(batch, self.points_tps**2, 2, generator=generator, device=device, dtype=dtype)
        transform.weights = self.sigma_tps * tps
        return transform

    def forward(
        self,
        image: Tensor,
        keypoints: Tensor,
        detect: Callable[[Tensor], Tensor],
        transform: WarpTransform | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The loss for one batch.

        Args:
            image: (b, 3, h, w) the driving images d.
            keypoints: (b, k, 3) (or (b, k, 2)) keypoints x_d detected on ``image``.
            detect: image (b, 3, h, w) -> keypoints (b, k, 3) (or (b, k, 2)), the detector being trained.
            transform: T to use; None draws one with :meth:`sample_transform`.
            generator: random generator for that draw.

        Returns:
            scalar.
        """
        if image.dim() != 4 or keypoints.dim() != 3:
            raise ValueError(f"expected image (b, 3, h, w) and keypoints (b, k, 3), got {tuple(image.shape)}, "
                             f"{tuple(keypoints.shape)}")
        if transform is None:
            transform = self.sample_transform(image.shape[0], generator, device=image.device, dtype=image.dtype)
        warped_keypoints = detect(transform.warp_image(image))
        if warped_keypoints.shape[:2] != keypoints.shape[:2]:
            raise ValueError(f"detector returned {tuple(warped_keypoints.shape)}, expected {tuple(keypoints.shape)}")
        back = transform.warp_points(warped_keypoints[..., :2])
        return (keypoints[..., :2] - back).abs().mean()
