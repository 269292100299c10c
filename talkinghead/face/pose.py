"""Head pose from 68 landmarks: a weak-perspective fit of a generic 3D face, in the synthetic heads' convention.

The package's camera is orthographic (:mod:`talkinghead.geometry`): a head-frame point p is seen at ``R p + t``
and lands on the image at its first two coordinates. A real face differs from the generic one by its size, so the
fit allows a scale as well (scaled orthographic, "weak perspective")::

    x_i = s (R X_i)_xy + t_xy

with X_i the generic face's landmarks, x_i the observed ones (normalised units), s > 0, R a rotation. The pose is
then (yaw, pitch, roll) = :func:`~talkinghead.geometry.matrix_to_angles` (R) and (tx, ty) = t_xy, exactly as
:mod:`talkinghead.datamodules.synthetic_heads` labels its shards, so real and synthetic pose labels read alike.

The solver is batched over frames (no Python loop over points or frames): a weighted affine least-squares fit of
the 2 x 3 block s R_xy, its projection onto the nearest scaled pair of orthonormal rows (SVD), the third row by a
cross product, then a few Gauss-Newton steps on the true weak-perspective residual over (rotation, scale); the
translation is solved in closed form (weighted centroids) at every step.

Accuracy (measured with :data:`LANDMARK_WEIGHTS`): on synthetic people other than the template's (their own shape
variation, random mouth and eyes, yaw +-40, pitch and roll +-20 degrees; 64 people x 32 poses), yaw / pitch / roll
errors are 0.8 / 1.6 / 0.6 degrees on average, 3.1 / 6.1 / 2.8 at the 99th percentile and 4 / 7 / 4 at most (a
rare person's pitch is off by up to 8 degrees in every pose), and tx, ty are within 0.03 / 0.065 normalised
units (the rotation centre sits at a different depth behind each person's face). On the template itself the fit
is exact. Real faces are another matter: the synthetic heads are flatter than people between the eyes and the mouth
and their nose sits lower, so pitch depends on the template. A frontal real face (a 3DMM mean face) reads as about
-11 degrees of pitch (chin up), and a 3DMM-derived template and this one disagree by about 12 degrees of pitch on
a real photo while agreeing on yaw and roll to 2 degrees. With the jaw contour treated as a cheek silhouette, real
yaw reads about 20% small at 40 degrees. The errors are mostly a per-person offset and gain, so the labels of one
video move together; across the two domains, compare pitch with care.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from talkinghead.geometry import matrix_to_angles, pixels_to_normalized
from talkinghead.landmarks import GROUPS

__all__ = [
    "GENERIC_FACE_3D",
    "LANDMARK_WEIGHTS",
    "WeakPerspectiveFit",
    "generic_face_3d",
    "fit_weak_perspective",
    "head_pose_from_landmarks",
]

# The generic face is the mean of this many synthetic people (persons 0 .. N-1 of this seed; see generic_face_3d).
_TEMPLATE_IDENTITIES = 256
_TEMPLATE_SEED = 0


def _landmark_weights() -> Tensor:
    """(68,) float32 weights of the landmarks in the pose fit (see LANDMARK_WEIGHTS)."""
    weights = torch.ones(68)
    # The jaw line of a real face is its silhouette (the cheek's outline), not fixed points on the skin: under yaw
    # it slides round the face. Left out altogether, though, the fit loses its only points far behind the face and
    # the generic face's depth mismatch shows: pose errors on synthetic people of up to 10-24 degrees instead of
    # 4-8, and a real frontal face read as pitched by about -23 degrees instead of -11 (see the module doc).
    weights[list(GROUPS["jaw"])] = 0.3
    # Brows move with expression (raised, a 6 mm lift reads as 6 degrees of pitch at full weight without the jaw).
    weights[list(GROUPS["right_brow"]) + list(GROUPS["left_brow"])] = 0.25
    # The lower lip and the inner lip line follow the jaw as the mouth opens (speech): they would read as pitch.
    # The mouth corners and the upper outer lip (48-54) barely move and stay in.
    weights[55:60] = 0.0
    weights[list(GROUPS["inner_lips"])] = 0.0
    return weights


# (68,) weights of the iBUG-68 landmarks in the pose fit: 1 on the nose, the eyes, the mouth corners and the upper
# lip; 0.3 on the jaw contour (a silhouette on real faces, but the only depth lever far behind the face); 0.25 on
# the brows (they move with expression); 0 on the lower and inner lips (they move with the mouth opening).
LANDMARK_WEIGHTS: Tensor = _landmark_weights()


@functools.cache
def _generic_face_3d() -> Tensor:
    """The cached (68, 3) template of :func:`generic_face_3d` (about a second to build; callers get clones)."""
    from talkinghead.datamodules.synthetic_heads import HeadMotion, identity_generator, landmarks_3d, sample_identity
    from talkinghead.landmarks import FLIP_PERMUTATION

    neutral = HeadMotion.still(1)  # yaw = pitch = roll = 0, t = 0, mouth closed, eyes open
    people = [sample_identity(identity_generator(_TEMPLATE_SEED, i)) for i in range(_TEMPLATE_IDENTITIES)]
    mean = torch.stack([landmarks_3d(person, neutral)[0] for person in people]).double().mean(0)
    # Every synthetic person is mirror-symmetric, so the mean is too up to rounding; making it exactly symmetric
    # makes the fit exactly equivariant under a horizontal flip (yaw and roll change sign, pitch does not).
    mirrored = mean[list(FLIP_PERMUTATION)] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    return ((mean + mirrored) / 2).float()


def generic_face_3d() -> Tensor:
    """The generic 3D face the pose fit matches against, computed once and cached.

    It is the mean, over synthetic people 0-255 of seed 0 (:func:`~talkinghead.datamodules.synthetic_heads.
    sample_identity` with :func:`~talkinghead.datamodules.synthetic_heads.identity_generator`), of their 68
    landmarks with a neutral expression (mouth closed, eyes open) at yaw = pitch = roll = 0 and t = 0, i.e. in the
    synthetic heads' canonical head frame scaled to normalised image units (``HeadIdentity.scale`` included),
    symmetrised left-right. So a fit of a synthetic person recovers its pose label exactly up to the person's
    own shape variation, and a scale of 1 means the average synthetic head size (about 0.54 of the image half
    width per head unit). The head-frame origin (the rotation centre) is the synthetic heads' one, inside the head
    about 0.4 normalised units (0.75 head units) behind the eyes, so (tx, ty) is where that point is seen.

    Returns:
        (68, 3) float32 x, y, z (x right, y down, z away from the camera; the face looks towards -z). A clone:
        changing it does not change the cache.
    """
    return _generic_face_3d().clone()


def __getattr__(name: str) -> Tensor:
    # GENERIC_FACE_3D is computed on first use (about a second of synthetic sampling), not at import.
    if name == "GENERIC_FACE_3D":
        return generic_face_3d()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class WeakPerspectiveFit:
    """A weak-perspective (scaled orthographic) fit x = s (R X)_xy + t_xy per frame.

    Attributes:
        rotation: (t, 3, 3) rotations R (proper: det +1), the head-frame -> camera rotation of
            :mod:`talkinghead.geometry`.
        translation: (t, 2) t_xy in normalised image units (grid_sample coordinates, align_corners=False).
        scale: (t,) s, the face's size relative to the template's (1 for a face as large as the template).
        residual: (t,) root mean square, over the landmarks with their weights, of the distance in pixels between
            each landmark and the fitted projection of the template's; a few pixels for a good fit on a real
            face, much more when the landmarks are not a face (or a different one) in this pose.
    """

    rotation: Tensor
    translation: Tensor
    scale: Tensor
    residual: Tensor


def _skew(vector: Tensor) -> Tensor:
    """(..., 3, 3) cross-product matrices [v]_x of vectors (..., 3): [v]_x u = v x u."""
    x, y, z = vector.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*vector.shape, 3)


def fit_weak_perspective(
    landmarks: Tensor,
    image_size: int,
    template: Tensor | None = None,
    weights: Tensor | None = None,
    iterations: int = 3,
) -> WeakPerspectiveFit:
    """Fits x_i = s (R X_i)_xy + t_xy to landmarks, minimising sum_i w_i |x_i - s (R X_i)_xy - t_xy|^2.

    Args:
        landmarks: (t, k, 2) observed landmarks x_i in pixel coordinates of an S x S image (pixel centres at
            integers, :func:`talkinghead.geometry.normalized_to_pixels`); k = 68 with the default template.
        image_size: S, the side of the (square) image in pixels.
        template: (k, 3) the 3D points X_i in normalised head-frame units; None uses :func:`generic_face_3d`.
        weights: (k,) non-negative weights w_i, at least four of them (not in one plane) positive; None uses
            :data:`LANDMARK_WEIGHTS` (needs k = 68).
        iterations: Gauss-Newton steps after the closed-form start (0 keeps the SVD projection of the affine fit,
            exact on noiseless data; a few steps make it the least-squares optimum on real landmarks).

    Returns:
        A :class:`WeakPerspectiveFit`. Frames whose landmarks are not all finite (e.g. NaN for "no face") get NaN
        rotation, translation, scale and residual; the others are unaffected.
    """
    if landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be (t, k, 2), got {tuple(landmarks.shape)}")
    dtype = landmarks.dtype if landmarks.is_floating_point() else torch.float32
    work = dict(dtype=torch.float64, device=landmarks.device)  # SVD and normal equations in double precision
    template = (generic_face_3d() if template is None else template).to(**work)
    weights = (LANDMARK_WEIGHTS if weights is None else weights).to(**work)
    num_points = landmarks.shape[1]
    if template.shape != (num_points, 3) or weights.shape != (num_points,):
        raise ValueError(f"{num_points} landmarks need a ({num_points}, 3) template and ({num_points},) weights, got "
                         f"{tuple(template.shape)} and {tuple(weights.shape)}")
    weights = weights / weights.sum()

    points = pixels_to_normalized(landmarks.to(**work), image_size)  # (t, k, 2)
    valid = points.isfinite().all(-1).all(-1)  # (t,)
    points = torch.where(valid[:, None, None], points, template[:, :2])  # keeps the SVD away from NaN
    point_mean = (weights[:, None] * points).sum(-2)  # (t, 2)
    template_mean = (weights[:, None] * template).sum(-2)  # (3,)
    centred = points - point_mean[:, None, :]  # (t, k, 2)
    shape = template - template_mean  # (k, 3)

    # Affine start: the 2 x 3 block A = s R_xy minimising sum w |x - A X|^2, A = (sum w x X^T)(sum w X X^T)^-1.
    second_moment = shape.mT @ (weights[:, None] * shape)  # (3, 3), the same for every frame
    cross = centred.mT @ (weights[:, None] * shape)  # (t, 2, 3)
    affine = torch.linalg.solve(second_moment, cross.mT).mT  # (t, 2, 3)
    # Nearest pair of orthonormal rows (SVD: U V^T), completed to a proper rotation by their cross product.
    u, _, vh = torch.linalg.svd(affine, full_matrices=False)
    rows = u @ vh  # (t, 2, 3)
    rotation = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)
    projected = shape @ rotation[:, :2].mT  # (t, k, 2)
    scale = (weights[:, None] * centred * projected).sum((-1, -2)) / (weights[:, None] * projected.square()).sum(
        (-1, -2))

    # Gauss-Newton on (w, s) with R <- R exp([w]_x): d/dw of s (R exp([w]_x) X)_xy at w = 0 is -s (R [X]_x)_xy.
    skew_shape = _skew(shape)  # (k, 3, 3)
    for _ in range(iterations):
        rotated = shape @ rotation.mT  # (t, k, 3)
        error = centred - scale[:, None, None] * rotated[..., :2]  # (t, k, 2)
        d_rotation = -scale[:, None, None, None] * (rotation[:, None, :2] @ skew_shape)  # (t, k, 2, 3)
        jacobian = torch.cat([d_rotation, rotated[..., :2, None]], dim=-1).flatten(1, 2)  # (t, 2k, 4)
        weighted = jacobian * weights.repeat_interleave(2)[:, None]  # W J
        normal = weighted.mT @ jacobian  # (t, 4, 4)
        # A whisker of damping keeps degenerate frames (all weight on a line) solvable; it is far below the data.
        normal = normal + 1e-12 * torch.eye(4, **work) * normal.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
        step = torch.linalg.solve(normal, (weighted.mT @ error.flatten(1)[..., None]))[..., 0]  # (t, 4)
        rotation = rotation @ torch.linalg.matrix_exp(_skew(step[:, :3]))
        scale = scale + step[:, 3]

    translation = point_mean - scale[:, None] * (template_mean @ rotation[:, :2].mT)
    fitted = scale[:, None, None] * (template @ rotation[:, :2].mT) + translation[:, None, :]
    mean_square = (weights[:, None] * (points - fitted).square()).sum((-1, -2))
    residual = mean_square.sqrt() * (image_size / 2)  # normalised units -> pixels

    nan = torch.tensor(float("nan"), **work)
    return WeakPerspectiveFit(
        rotation=torch.where(valid[:, None, None], rotation, nan).to(dtype),
        translation=torch.where(valid[:, None], translation, nan).to(dtype),
        scale=torch.where(valid, scale, nan).to(dtype),
        residual=torch.where(valid, residual, nan).to(dtype),
    )


def head_pose_from_landmarks(landmarks: Tensor, image_size: int, template: Tensor | None = None) -> Tensor:
    """Head pose labels (yaw, pitch, roll, tx, ty, tz) of frames from their 68 landmarks, as the shards store them.

    The convention is that of the synthetic shards (:mod:`talkinghead.datamodules.synthetic_heads`): a head-frame
    point p is seen at R p + t, R = rotation_matrix(yaw, pitch, roll) = R_x(pitch) R_y(yaw) R_z(roll), with t in
    normalised units. The fit is :func:`fit_weak_perspective` with the default landmark weights.

    tz: the orthographic camera cannot see depth (the synthetic renderer's images do not depend on tz, which it
    draws at random), so there is nothing to measure; tz is reported as 0, the depth of the template's head-frame
    origin, i.e. the label a synthetic head would get at the template's depth.

    Args:
        landmarks: (t, 68, 2) iBUG-68 landmarks in pixel coordinates of an S x S frame (pixel centres at
            integers; :func:`talkinghead.geometry.normalized_to_pixels`). NaN rows give NaN poses.
        image_size: S in pixels.
        template: (68, 3) generic face in normalised head-frame units; None uses :func:`generic_face_3d`.

    Returns:
        (t, 6) yaw, pitch, roll in degrees (:func:`talkinghead.geometry.matrix_to_angles`), tx, ty in normalised
        units, tz = 0; the dtype of ``landmarks`` (float32 for integer input).
    """
    fit = fit_weak_perspective(landmarks, image_size, template=template)
    yaw, pitch, roll = matrix_to_angles(fit.rotation)
    tz = torch.zeros_like(yaw).masked_fill(yaw.isnan(), float("nan"))
    return torch.stack([yaw, pitch, roll, fit.translation[:, 0], fit.translation[:, 1], tz], dim=-1)
