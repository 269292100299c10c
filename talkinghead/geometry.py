"""Rotation maths and coordinate conventions shared by the data, the networks and the renderer.

Conventions (the same everywhere in the package, documented in docs/SHARD_FORMAT.md):

- Normalised image coordinates: x to the right, y down, both in [-1, 1] across the image with
  ``align_corners=False`` (the centre of pixel i of S sits at (2 i + 1) / S - 1), z away from the camera. These
  are the coordinates ``torch.nn.functional.grid_sample`` uses, and the ones OSFV keypoints live in.
- Projection is orthographic: a 3D point (x, y, z) lands on the image at (x, y).
- Head pose is (yaw, pitch, roll) in degrees with R = R_x(pitch) @ R_y(yaw) @ R_z(roll) (face-vid2vid's order),
  plus a translation t in normalised units. A head-frame point p is seen at R p + t.
  Positive yaw turns the nose tip towards image left (-x), positive pitch tilts it down (+y), and positive roll
  turns the head's +x axis towards +y (clockwise on screen).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "rotation_matrix",
    "matrix_to_angles",
    "normalized_to_pixels",
    "pixels_to_normalized",
]


def rotation_matrix(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """Rotation matrices from head-pose angles in degrees.

    Args:
        yaw: (...) degrees about the image y axis.
        pitch: (...) degrees about the image x axis.
        roll: (...) degrees about the viewing (z) axis.

    Returns:
        (..., 3, 3) matrices R = R_x(pitch) R_y(yaw) R_z(roll).
    """
    # a * (pi / 180) is torch.deg2rad bit for bit, and exports to ONNX (aten::deg2rad has no ONNX symbolic)
    yaw, pitch, roll = torch.broadcast_tensors(*(a * (math.pi / 180) for a in (yaw, pitch, roll)))
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    r_x = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], dim=-1)
    r_y = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], dim=-1)
    r_z = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], dim=-1)
    shape = (*yaw.shape, 3, 3)
    return r_x.reshape(shape) @ r_y.reshape(shape) @ r_z.reshape(shape)


def matrix_to_angles(rotation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`rotation_matrix` for |yaw| < 90 degrees.

    Args:
        rotation: (..., 3, 3) rotation matrices.

    Returns:
        yaw, pitch, roll, each (...) in degrees.
    """
    # For R = Rx(p) Ry(y) Rz(r): R[0,2] = sin y, R[0,0] = cos y cos r, R[0,1] = -cos y sin r,
    # R[1,2] = -sin p cos y, R[2,2] = cos p cos y.
    yaw = torch.asin(rotation[..., 0, 2].clamp(-1.0, 1.0))
    roll = torch.atan2(-rotation[..., 0, 1], rotation[..., 0, 0])
    pitch = torch.atan2(-rotation[..., 1, 2], rotation[..., 2, 2])
    return torch.rad2deg(yaw), torch.rad2deg(pitch), torch.rad2deg(roll)


def normalized_to_pixels(points: Tensor, size: int) -> Tensor:
    """Normalised [-1, 1] coordinates (align_corners=False) to pixel coordinates of an S x S image.

    Args:
        points: (..., 2) normalised x, y.
        size: image side S in pixels.

    Returns:
        (..., 2) pixel x, y where pixel centres sit at integers 0 .. S-1.
    """
    return ((points + 1.0) * size - 1.0) / 2.0


def pixels_to_normalized(points: Tensor, size: int) -> Tensor:
    """Inverse of :func:`normalized_to_pixels`."""
    return (2.0 * points + 1.0) / size - 1.0
