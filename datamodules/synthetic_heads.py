"""Procedural synthetic talking heads, ray cast in torch: exact pose, expression, landmarks and masks, no downloads.

The head model
--------------
A person is a dozen analytic ellipsoids. Most live in the *head frame*, which has the image's axes when the pose
is zero (x to the image right, y down, z away from the camera, so the face looks towards -z):

- skin: a cranium and a narrower, lower "jaw" ellipsoid whose union gives a head with cheeks and a chin (their
  normals are blended near the crease, so the face shades as one surface), and two flattened ears;
- a nose that really sticks out (it occludes the cheek under yaw): a tip ball, a bridge sloping up into the face
  between the eyes, and two wings;
- hair: a shell slightly larger than the cranium, cut along a per-person hairline (low at the back, high at the
  forehead, wavy, parted), and for some people a long-hair volume behind the head, cut open at the front;
- the neck and the torso ("clothes") live in the *camera frame*: they follow the head's translation, not its
  rotation, as a neck does for small turns.

Eyes (sclera, iris, pupil, a glint, the upper lash line), brows and lips (with the dark mouth and the upper teeth
behind them) are decals painted on the face by the head-frame (x, y) of the visible surface point. Their outlines
are closed-form curves shared with the landmark code, so a landmark and the pixels of the feature it names agree
exactly. Per frame, the eye openness moves the upper eyelid and the mouth opening moves the inner lips (mostly
the lower one). The skin carries a low-frequency texture fixed on the 3D surface (a sum of sinusoids of the
head-frame point) and the hair carries strands, so texture moves rigidly with the head, as a motion model needs.

Lengths are in "head units" (the cranium is about 2 units tall); ``HeadIdentity.scale`` maps head units to the
package's normalised image coordinates.

Conventions (those of :mod:`talkinghead.geometry`)
--------------------------------------------------
Normalised image coordinates: x right, y down, both in [-1, 1] across the image (``align_corners=False``),
z away from the camera; projection is orthographic, so a 3D point (x, y, z) lands on the image at (x, y).
The pose of a frame is (yaw, pitch, roll, tx, ty, tz): a head-frame point p is seen at ``R p + t`` with
``R = rotation_matrix(yaw, pitch, roll)`` and p in normalised units (``scale`` times head units); positive yaw
turns the nose to image left. Landmarks follow the iBUG-68 layout (0-indexed; "right" is the subject's right,
image left in a frontal view). They are 3D points on the rendered surface, reported in pixels as
``normalized_to_pixels((R p + t)[..., :2], size)`` whether or not something hides them (e.g. the far eye's
corner behind the nose at large yaw). Corners and lid points sit slightly inside the feature they name, so they
land on its pixels rather than on its border.

Rendering
---------
Every sample casts an orthographic ray along +z. Written in a primitive's unit-sphere coordinates, the rays of one
frame are ``x u + y v + w + s d`` with per-frame vectors u, v, w, d, so the discriminant of the ray-sphere
quadratic is a quadratic polynomial in the sample's image position (x, y) with per-frame coefficients. A whole
chunk of frames is traced with a few broadcast operations per primitive, inside the primitive's projected
bounding box; no Python loop runs over pixels, frames or landmarks. The samples that hit the person are then
gathered into flat lists, painted (materials), textured and shaded: Lambert + ambient with a small Blinn-Phong
highlight under one directional light per clip. Antialiasing casts more rays per pixel (quincunx by default: the
centre and the corners, which neighbours share) and filters them with a tent one pixel wide; part labels, masks
and landmarks are read at the pixel centres, so they do not depend on it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from talkinghead.geometry import normalized_to_pixels, rotation_matrix

__all__ = [
    "BACKGROUND",
    "SKIN",
    "HAIR",
    "EYE",
    "BROW",
    "NOSE",
    "LIPS",
    "MOUTH",
    "NECK",
    "CLOTHES",
    "PART_NAMES",
    "HeadIdentity",
    "HeadMotion",
    "Scene",
    "RenderedClip",
    "sample_identity",
    "sample_motion",
    "sample_scene",
    "identity_generator",
    "synthetic_clip",
    "synthetic_frame",
    "landmarks_3d",
    "render_clip",
    "write_synthetic_shards",
]

# Part labels of RenderedClip.parts.
BACKGROUND, SKIN, HAIR, EYE, BROW, NOSE, LIPS, MOUTH, NECK, CLOTHES = range(10)
PART_NAMES = ("background", "skin", "hair", "eye", "brow", "nose", "lips", "mouth", "neck", "clothes")

# Rows of HeadIdentity.centres / .radii. All but the last two live in the head frame; the neck and the torso live in
# the camera frame (they follow the head's translation, not its rotation).
(CRANIUM, JAW, NOSE_BRIDGE, NOSE_TIP, ALA_RIGHT, ALA_LEFT, EAR_RIGHT, EAR_LEFT, HAIR_SHELL, LONG_HAIR, NECK_BALL,
 TORSO) = range(12)
_NUM_PRIMITIVES = 12
_CAMERA_PRIMITIVES = (NECK_BALL, TORSO)
_NOSE_PRIMITIVES = (NOSE_BRIDGE, NOSE_TIP, ALA_RIGHT, ALA_LEFT)
_FACE_PRIMITIVES = (CRANIUM, JAW, *_NOSE_PRIMITIVES)  # what the face's front surface is made of
_MISS = 12  # no primitive hit

# Materials: what a surface point is made of (a finer split than the part labels, for colours).
(_M_NONE, _M_SKIN, _M_HAIR, _M_SCLERA, _M_IRIS, _M_PUPIL, _M_LASH, _M_BROW, _M_NOSE, _M_NOSTRIL, _M_LIPS,
 _M_MOUTH, _M_TEETH, _M_NECK, _M_CLOTHES, _M_GLINT) = range(16)
_MATERIAL_PART = torch.tensor(
    [BACKGROUND, SKIN, HAIR, EYE, EYE, EYE, EYE, BROW, NOSE, NOSE, LIPS, MOUTH, MOUTH, NECK, CLOTHES, EYE],
    dtype=torch.uint8,
)
_MATERIAL_SHINE = torch.tensor([0, 0.10, 0.06, 0.25, 0.35, 0.35, 0, 0, 0.12, 0, 0.18, 0, 0.2, 0.06, 0.02, 0])
_MATERIAL_SKIN_TEXTURE = torch.zeros(16, dtype=torch.bool)
_MATERIAL_SKIN_TEXTURE[[_M_SKIN, _M_NOSE, _M_NECK]] = True
_PRIMITIVE_MATERIAL = torch.tensor(
    [_M_SKIN, _M_SKIN, _M_NOSE, _M_NOSE, _M_NOSE, _M_NOSE, _M_SKIN, _M_SKIN, _M_HAIR, _M_HAIR, _M_NECK, _M_CLOTHES,
     _M_NONE]
)
_SCLERA_RGB, _PUPIL_RGB, _LASH_RGB = (0.93, 0.91, 0.87), (0.03, 0.03, 0.04), (0.07, 0.05, 0.05)
_MOUTH_RGB, _TEETH_RGB, _GLINT_RGB = (0.28, 0.06, 0.07), (0.93, 0.91, 0.84), (1.0, 1.0, 1.0)

# Fixed proportions of the features (fractions of their own sizes).
_LASH_WIDTH = 0.018  # head units
_PUPIL_FRACTION = 0.45
_INNER_LIP_FRACTION = 0.92  # inner lip corners sit this far out along the mouth width
_UPPER_LIP_SHARE = 0.3  # share of the mouth opening taken by the upper lip (the jaw drops the rest)
_TEETH_HEIGHT = 0.028

# Outline profiles are clamped at this rather than 0: torch's vectorised pow and sqrt are slow on zeros.
_TINY = 1e-12

# Where landmarks sit inside a feature, so that they lie on the feature's pixels rather than on its border.
_EYE_CORNER_U = 0.88
_LID_INSET = 0.15
_LIP_INSET = 0.2
_JAW_INSET = 0.96


def _f(generator: torch.Generator, low: float, high: float) -> float:
    """A uniform random float in [low, high)."""
    return float(low + (high - low) * torch.rand((), generator=generator))


def _u(generator: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    """A float32 tensor of the given shape, uniform in [low, high)."""
    return low + (high - low) * torch.rand(shape, generator=generator)


# ----------------------------------------------------------------------------------------------------------------
# Identity


@dataclass(frozen=True, eq=False)
class HeadIdentity:
    """Everything that makes one synthetic person (lengths in head units unless noted).

    Attributes:
        scale: head units -> normalised image units.
        centres: (12, 3) centres of the ellipsoids, rows CRANIUM, JAW, NOSE_BRIDGE, NOSE_TIP, ALA_RIGHT, ALA_LEFT,
            EAR_RIGHT, EAR_LEFT, HAIR_SHELL, LONG_HAIR (head frame), NECK_BALL, TORSO (camera frame, relative to
            the head's translation).
        radii: (12, 3) their semi-axes along x, y, z; a zero row marks an absent part (no long hair).
        hairline: (6,) hairline on the hair shell's unit sphere q: hair where q_y < -front + (front + back)
            (q_z + 1) / 2 + wave sin(frequency q_x + phase) + parting q_x; holds front, back, wave, frequency,
            phase, parting.
        strands: angular frequency of the hair strands (strands per radian about the vertical axis).
        skin_frequencies: (K, 3) spatial frequencies of the skin texture, radians per head unit.
        skin_phases: (K,) their phases.
        skin_amplitudes: (K,) their relative amplitudes.
        eye: (7,) x of the eye centre (the right eye mirrors the left), y, half width, upper-lid height, lower-lid
            height, tilt (outer corner up), iris radius.
        brow: (5,) x of the brow centre, y, half width, arch height, thickness.
        mouth: (5,) y of the mouth line, half width, upper-lip height, lower-lip height, largest opening.
        colours: (6, 3) RGB in [0, 1] of skin, hair, brow, iris, lips, clothes.
        clothes_stripes: spatial frequency of stripes on the clothes (0: plain).
        long_hair_cut: long hair exists only behind this head-frame z, so it frames the face and hangs behind.
    """

    scale: float
    centres: Tensor
    radii: Tensor
    hairline: Tensor
    strands: float
    skin_frequencies: Tensor
    skin_phases: Tensor
    skin_amplitudes: Tensor
    eye: Tensor
    brow: Tensor
    mouth: Tensor
    colours: Tensor
    clothes_stripes: float
    long_hair_cut: float


_SKIN_TONES = torch.tensor([[0.98, 0.84, 0.74], [0.90, 0.70, 0.56], [0.76, 0.55, 0.40], [0.55, 0.37, 0.25],
                            [0.36, 0.23, 0.16]])
_HAIR_TONES = torch.tensor([[0.05, 0.04, 0.04], [0.22, 0.13, 0.07], [0.42, 0.27, 0.14], [0.80, 0.64, 0.38],
                            [0.55, 0.20, 0.08], [0.62, 0.62, 0.62]])
_IRIS_TONES = torch.tensor([[0.30, 0.17, 0.08], [0.22, 0.38, 0.60], [0.30, 0.45, 0.30], [0.45, 0.48, 0.50]])


def _pick(palette: Tensor, generator: torch.Generator, jitter: float) -> Tensor:
    """A random colour between two neighbouring palette entries, jittered, so colours are not a discrete set."""
    i = int(torch.randint(len(palette) - 1, (), generator=generator))
    colour = torch.lerp(palette[i], palette[i + 1], _f(generator, 0.0, 1.0))
    return (colour * (1 + _u(generator, -jitter, jitter, 3))).clamp(0.0, 1.0)


def _front_z(centres: Tensor, radii: Tensor, xy: Tensor) -> Tensor:
    """Head-frame z of the camera-facing side of ellipsoids above points of the head-frame xy plane.

    Args:
        centres: (P, 3) ellipsoid centres; radii: (P, 3) semi-axes.
        xy: (..., 2) points.

    Returns:
        (...) the smallest front z over the P ellipsoids (+inf where none lies above the point).
    """
    q = ((xy[..., None, :] - centres[:, :2]) / radii[:, :2]).square().sum(-1)
    z = centres[:, 2] - radii[:, 2] * (1 - q).clamp_min(0).sqrt()
    return torch.where(q < 1, z, torch.inf).amin(-1)


def _sample_shape(g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(12, 3) centres and (12, 3) radii of a person's ellipsoids (see HeadIdentity)."""
    cranium_r = torch.tensor([_f(g, 0.74, 0.86), _f(g, 0.95, 1.05), _f(g, 0.90, 1.00)])
    cranium_c = torch.tensor([0.0, -0.10, 0.05])
    jaw_r = torch.tensor([cranium_r[0] * _f(g, 0.74, 0.86), _f(g, 0.72, 0.82), _f(g, 0.72, 0.80)])
    jaw_c = torch.tensor([0.0, _f(g, 0.26, 0.34), -0.08])
    face = lambda y: float(  # noqa: E731  head-frame z of the face on the midline at height y
        _front_z(torch.stack([cranium_c, jaw_c]), torch.stack([cranium_r, jaw_r]), torch.tensor([0.0, y])))

    # The nose: a tip ball a chosen distance in front of the face, a narrower bridge sloping up from it into the
    # face between the eyes, and two wings (alae) beside the tip.
    tip_r = torch.tensor([_f(g, 0.07, 0.095), _f(g, 0.06, 0.08), _f(g, 0.07, 0.09)])
    tip_y = _f(g, 0.33, 0.40)
    tip_c = torch.tensor([0.0, tip_y, face(tip_y) - _f(g, 0.15, 0.23) + tip_r[2]])
    top_y = _f(g, -0.06, 0.0)
    bridge_r = torch.tensor([_f(g, 0.05, 0.07), (tip_y - top_y) / 2 + 0.03, _f(g, 0.08, 0.12)])
    bridge_y = (tip_y + top_y) / 2
    bridge_c = torch.tensor([0.0, bridge_y, face(bridge_y) - _f(g, 0.05, 0.09) + bridge_r[2]])
    ala_r = torch.tensor([_f(g, 0.05, 0.065), _f(g, 0.045, 0.06), _f(g, 0.05, 0.065)])
    ala_c = torch.tensor([tip_r[0] * 0.85, tip_y + 0.02, tip_c[2] + 0.07])

    ear_r = torch.tensor([_f(g, 0.06, 0.09), _f(g, 0.18, 0.24), _f(g, 0.11, 0.15)])
    ear_c = torch.tensor([cranium_r[0] * 0.95, _f(g, 0.04, 0.14), _f(g, 0.02, 0.12)])
    hair_r = cranium_r * (1 + _u(g, 0.03, 0.12, 3))
    hair_c = cranium_c + torch.tensor([0.0, -_f(g, 0.0, 0.06), _f(g, 0.0, 0.05)])
    if _f(g, 0, 1) < 0.35:
        long_r = torch.tensor([cranium_r[0] * _f(g, 1.08, 1.2), _f(g, 1.1, 1.5), _f(g, 0.5, 0.6)])
        long_c = torch.tensor([0.0, _f(g, 0.2, 0.6), _f(g, 0.3, 0.4)])
    else:
        long_r, long_c = torch.zeros(3), torch.zeros(3)
    neck_r = torch.tensor([_f(g, 0.36, 0.44), 1.1, _f(g, 0.36, 0.42)])
    neck_c = torch.tensor([0.0, 1.35, _f(g, 0.12, 0.20)])
    torso_r = torch.tensor([_f(g, 1.4, 1.8), _f(g, 0.55, 0.7), 0.7])
    torso_c = torch.tensor([0.0, _f(g, 2.0, 2.15), 0.9])
    mirror = torch.tensor([-1.0, 1.0, 1.0])
    centres = [cranium_c, jaw_c, bridge_c, tip_c, ala_c * mirror, ala_c, ear_c * mirror, ear_c, hair_c, long_c,
               neck_c, torso_c]
    radii = [cranium_r, jaw_r, bridge_r, tip_r, ala_r, ala_r, ear_r, ear_r, hair_r, long_r, neck_r, torso_r]
    return torch.stack(centres), torch.stack(radii)


def _sample_colours(g: torch.Generator) -> Tensor:
    """(6, 3) RGB of skin, hair, brows, iris, lips and clothes."""
    skin = _pick(_SKIN_TONES, g, 0.06)
    hair = _pick(_HAIR_TONES, g, 0.15)
    brow = hair * 0.7 if float(hair.mean()) < 0.5 else hair * 0.55
    lips = (skin * torch.tensor([0.86, 0.58, 0.58]) * (1 + _u(g, -0.08, 0.08, 3))).clamp(0, 1)
    return torch.stack([skin, hair, brow, _pick(_IRIS_TONES, g, 0.15), lips, _u(g, 0.05, 0.95, 3)])


def sample_identity(generator: torch.Generator) -> HeadIdentity:
    """Draws one synthetic person.

    Args:
        generator: the only source of randomness; the same generator state gives the same person.

    Returns:
        A :class:`HeadIdentity`.
    """
    g = generator
    centres, radii = _sample_shape(g)
    hairline = torch.tensor([
        _f(g, 0.32, 0.62), _f(g, 0.3, 1.0), _f(g, 0.0, 0.1), _f(g, 2.0, 9.0), _f(g, 0.0, 2 * math.pi),
        _f(g, -0.15, 0.15),
    ])
    direction = torch.randn(6, 3, generator=g)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    magnitude = torch.cat([_u(g, 2.0, 8.0, 4), _u(g, 14.0, 26.0, 2)])
    amplitude = torch.cat([_u(g, 0.04, 0.09, 4), _u(g, 0.02, 0.045, 2)])
    eye_half = _f(g, 0.12, 0.155)
    eye = torch.tensor([_f(g, 0.27, 0.33), _f(g, -0.04, 0.04), eye_half, _f(g, 0.065, 0.085), _f(g, 0.035, 0.05),
                        _f(g, -0.05, 0.2), _f(g, 0.055, 0.066)])
    brow = torch.tensor([eye[0] + _f(g, -0.01, 0.03), eye[1] - _f(g, 0.15, 0.2), eye_half * _f(g, 1.1, 1.35),
                         _f(g, 0.015, 0.06), _f(g, 0.035, 0.06)])
    nose_bottom = float(centres[NOSE_TIP, 1] + radii[NOSE_TIP, 1])
    mouth = torch.tensor([nose_bottom + _f(g, 0.12, 0.17), _f(g, 0.17, 0.23), _f(g, 0.04, 0.065),
                          _f(g, 0.05, 0.085), _f(g, 0.10, 0.16)])
    return HeadIdentity(
        scale=_f(g, 0.5, 0.58),
        centres=centres,
        radii=radii,
        hairline=hairline,
        strands=_f(g, 20.0, 45.0),
        skin_frequencies=direction * magnitude[:, None],
        skin_phases=_u(g, 0.0, 2 * math.pi, 6),
        skin_amplitudes=amplitude,
        eye=eye,
        brow=brow,
        mouth=mouth,
        colours=_sample_colours(g),
        clothes_stripes=_f(g, 4.0, 14.0) if _f(g, 0, 1) < 0.4 else 0.0,
        long_hair_cut=_f(g, 0.0, 0.2),
    )


# ----------------------------------------------------------------------------------------------------------------
# Motion and scene


@dataclass
class HeadMotion:
    """Per-frame pose and expression of a clip.

    Attributes:
        yaw, pitch, roll: (T,) degrees (see :func:`talkinghead.geometry.rotation_matrix`).
        translation: (T, 3) normalised units.
        mouth: (T,) mouth opening in [0, 1].
        eyes: (T,) eye openness in [0, 1] (0 = closed).
        fps: frame rate, used to time the background's drift.
    """

    yaw: Tensor
    pitch: Tensor
    roll: Tensor
    translation: Tensor
    mouth: Tensor
    eyes: Tensor
    fps: float = 25.0

    @property
    def num_frames(self) -> int:
        """T, the number of frames."""
        return int(self.yaw.shape[0])

    def pose(self) -> Tensor:
        """(T, 6) float32 rows (yaw, pitch, roll, tx, ty, tz)."""
        angles = torch.stack([self.yaw, self.pitch, self.roll], dim=-1)
        return torch.cat([angles, self.translation], dim=-1).float()

    @staticmethod
    def still(num_frames: int = 1, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
              translation: tuple[float, float, float] = (0.0, 0.0, 0.0), mouth: float = 0.0,
              eyes: float = 1.0, fps: float = 25.0) -> HeadMotion:
        """A motion that holds one pose and expression for ``num_frames`` frames (handy for tests and demos)."""
        full = lambda value: torch.full((num_frames,), float(value))  # noqa: E731
        return HeadMotion(full(yaw), full(pitch), full(roll), torch.tensor(translation).repeat(num_frames, 1),
                          full(mouth), full(eyes), fps)


def _oscillation(times: Tensor, generator: torch.Generator, limit: float, low_hz: float, high_hz: float,
                 components: int = 3) -> Tensor:
    """A smooth random signal of ``times`` (T,) that stays within [-limit, limit]: an offset plus sinusoids whose
    amplitudes sum to what the offset leaves."""
    swing = limit * _f(generator, 0.25, 1.0)
    offset = (limit - swing) * _f(generator, -1.0, 1.0)
    weights = torch.rand(components, generator=generator) + 0.05
    weights = swing * weights / weights.sum()
    hz = _u(generator, low_hz, high_hz, components)
    phase = _u(generator, 0.0, 2 * math.pi, components)
    return offset + (weights * torch.sin(2 * math.pi * hz * times[:, None] + phase)).sum(-1)


def _blinks(times: Tensor, generator: torch.Generator, rate_hz: float = 0.5) -> Tensor:
    """(T,) closure in [0, 1]: 1 while the eyes are shut, ramps of ~60 ms on either side, at Poisson times."""
    closure = torch.zeros_like(times)
    duration = float(times[-1]) if len(times) > 1 else 0.0
    when = -math.log(1 - _f(generator, 0.0, 0.999)) / rate_hz - 0.3
    while when < duration + 0.3:  # a loop over a few blinks, not over frames
        half = _f(generator, 0.05, 0.11)
        ramp = 0.06
        closure = torch.maximum(closure, ((half + ramp - (times - when).abs()) / ramp).clamp(0.0, 1.0))
        when += 0.35 + -math.log(1 - _f(generator, 0.0, 0.999)) / rate_hz
    return closure


def sample_motion(num_frames: int, generator: torch.Generator, fps: float = 25.0) -> HeadMotion:
    """Draws smooth head motion, speech-like mouth movement and blinks.

    Yaw stays within +-45 degrees, pitch and roll within +-20, tx and ty within +-0.08, tz within +-0.1; the mouth
    opens and closes at syllable rate under a slower envelope; blinks come about every two seconds.

    Args:
        num_frames: T.
        generator: source of randomness.
        fps: frame rate the motion is timed for.

    Returns:
        A :class:`HeadMotion` of T frames.
    """
    g = generator
    times = torch.arange(num_frames, dtype=torch.float32) / fps
    yaw = _oscillation(times, g, 45.0, 0.1, 0.7)
    pitch = _oscillation(times, g, 20.0, 0.1, 0.8)
    roll = _oscillation(times, g, 20.0, 0.1, 0.6)
    translation = torch.stack([_oscillation(times, g, limit, 0.05, 0.5) for limit in (0.08, 0.08, 0.1)], dim=-1)
    syllables = 0.5 - 0.5 * torch.cos(2 * math.pi * _f(g, 1.5, 4.0) * times + _f(g, 0, 2 * math.pi))
    envelope = 0.6 + 0.4 * torch.sin(2 * math.pi * _f(g, 0.2, 1.0) * times + _f(g, 0, 2 * math.pi))
    mouth = _f(g, 0.0, 1.0) * syllables * envelope
    eyes = _f(g, 0.75, 1.0) * (1 - _blinks(times, g))
    return HeadMotion(yaw, pitch, roll, translation, mouth, eyes, fps)


@dataclass
class Scene:
    """Per-clip light and background.

    Attributes:
        light: (3,) unit vector from the surface towards the light, camera frame (z < 0: the camera's side).
        ambient: ambient share of the light in [0, 1].
        light_rgb: (3,) light colour.
        kind: background pattern over the gradient: 0 none, 1 blobs, 2 stripes, 3 checks.
        colours: (3, 3) gradient start, gradient end and pattern colour.
        direction: (2,) unit direction of the gradient.
        pattern: (4,) pattern parameters: frequency (stripes/checks, radians per unit), angle, strength, phase.
        blobs: (B, 6) blob centre x, y, radius, R, G, B.
        velocity: (2,) drift of the pattern, normalised units per second.
    """

    light: Tensor
    ambient: float
    light_rgb: Tensor
    kind: int
    colours: Tensor
    direction: Tensor
    pattern: Tensor
    blobs: Tensor
    velocity: Tensor


def sample_scene(generator: torch.Generator) -> Scene:
    """Draws a light and a background for one clip.

    Args:
        generator: source of randomness.

    Returns:
        A :class:`Scene`.
    """
    g = generator
    light = torch.tensor([_f(g, -0.9, 0.9), _f(g, -0.9, 0.5), -1.0])
    angle = _f(g, 0, 2 * math.pi)
    moving = _f(g, 0, 1) < 0.5
    return Scene(
        light=light / light.norm(),
        ambient=_f(g, 0.25, 0.5),
        light_rgb=1 + _u(g, -0.08, 0.08, 3),
        kind=int(torch.randint(4, (), generator=g)),
        colours=_u(g, 0.05, 0.95, 3, 3),
        direction=torch.tensor([math.cos(angle), math.sin(angle)]),
        pattern=torch.tensor([_f(g, 4.0, 20.0), _f(g, 0, math.pi), _f(g, 0.2, 0.6), _f(g, 0, 2 * math.pi)]),
        blobs=torch.cat([_u(g, -1.0, 1.0, 4, 2), _u(g, 0.15, 0.5, 4, 1), _u(g, 0.0, 1.0, 4, 3)], dim=-1),
        velocity=_u(g, -0.15, 0.15, 2) if moving else torch.zeros(2),
    )


# ----------------------------------------------------------------------------------------------------------------
# Feature outlines, shared by the painter and the landmarks


def _eye_lids(identity: HeadIdentity, u: Tensor, openness: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Lid lines of an eye at outward coordinate u (-1 inner corner .. 1 outer corner; both eyes alike).

    Args:
        u: (...) position across the eye in half widths.
        openness: eye openness broadcastable to u.

    Returns:
        upper lid y, lower lid y (head units; equal when closed) and the lid profile in [0, 1], each (...).
    """
    _, eye_y, half, upper, lower, tilt, _ = identity.eye.tolist()
    profile = (1 - u * u).clamp_min(_TINY).pow(0.7)
    centre = eye_y - tilt * half * u
    lower_lid = centre + lower * profile
    # Only the upper lid moves on a blink, as in people; shut, it meets the lower lid.
    return lower_lid - (upper + lower) * openness * profile, lower_lid, profile


def _brow_line(identity: HeadIdentity, u: Tensor) -> tuple[Tensor, Tensor]:
    """Centre line y and thickness of a brow at outward coordinate u in [-1, 1], each shaped like u."""
    _, brow_y, _, arch, thickness = identity.brow.tolist()
    return brow_y - arch * (1 - u * u), thickness * (1.15 - 0.3 * u) * (1 - u * u).clamp_min(_TINY).pow(0.25)


def _lip_lines(identity: HeadIdentity, u: Tensor, opening: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Outer-upper, inner-upper, inner-lower and outer-lower lip lines (y, head units) at u = x / half width.

    Args:
        u: (...) position across the mouth in half widths (-1 and 1 are the corners).
        opening: mouth opening in [0, 1] broadcastable to u.
    """
    mouth_y, _, upper, lower, largest = identity.mouth.tolist()
    outer = (1 - u * u).clamp_min(_TINY).sqrt()
    inner = (1 - (u / _INNER_LIP_FRACTION).square()).clamp_min(_TINY).sqrt()
    gap = largest * opening * inner
    upper_inner = mouth_y - _UPPER_LIP_SHARE * gap
    lower_inner = mouth_y + (1 - _UPPER_LIP_SHARE) * gap
    cupid = 1 - 0.3 / (1 + (u / 0.18).square().square())  # the dip in the middle of the upper lip
    return upper_inner - upper * outer * cupid, upper_inner, lower_inner, lower_inner + lower * outer


# ----------------------------------------------------------------------------------------------------------------
# Landmarks


def _jaw_points(identity: HeadIdentity) -> Tensor:
    """(17, 2) head-frame xy of the jaw line: rays fanned from below the eyes to the face outline, taken slightly
    inside it (subject's right ear, round the chin, to the left ear)."""
    origin = torch.tensor([0.0, float(identity.eye[1]) + 0.05])
    theta = torch.linspace(-math.pi / 2, math.pi / 2, 17)
    direction = torch.stack([theta.sin(), theta.cos()], dim=-1)
    # Distance to the outline of the cranium-jaw union along each ray: the larger root over the two ellipses.
    reach = []
    for k in (CRANIUM, JAW):
        centre, radii = identity.centres[k, :2], identity.radii[k, :2]
        o, d = (origin - centre) / radii, direction / radii
        a, b, c = d.square().sum(-1), (o * d).sum(-1), o.square().sum() - 1
        reach.append((-b + (b * b - a * c).clamp_min(0).sqrt()) / a)
    return origin + _JAW_INSET * torch.maximum(*reach)[:, None] * direction


def _landmarks_head(identity: HeadIdentity, eyes: Tensor, mouth: Tensor) -> Tensor:
    """The 68 landmarks in the head frame, head units.

    Args:
        identity: the person.
        eyes: (T,) eye openness; mouth: (T,) mouth opening.

    Returns:
        (T, 68, 3) points on the face surface.
    """
    num_frames = eyes.shape[0]
    eyes, mouth = eyes[:, None].float(), mouth[:, None].float()
    expand = lambda xy: xy.expand(num_frames, *xy.shape[-2:])  # noqa: E731

    jaw = expand(_jaw_points(identity))

    brow_x, _, brow_half = identity.brow[:3].tolist()
    u = torch.linspace(0.9, -0.9, 5)  # right brow from its outer end (image left) inwards
    brow_y, _ = _brow_line(identity, u)
    right_brow = torch.stack([-(brow_x + brow_half * u), brow_y], dim=-1)
    brows = expand(torch.cat([right_brow, right_brow.flip(0) * torch.tensor([-1.0, 1.0])]))

    tip_c, tip_r = identity.centres[NOSE_TIP], identity.radii[NOSE_TIP]
    top_y = float(identity.centres[NOSE_BRIDGE, 1] - 0.75 * identity.radii[NOSE_BRIDGE, 1])
    bridge_y = torch.linspace(top_y, float(tip_c[1]), 4)  # the last one, the tip, is replaced below
    bridge = torch.stack([torch.zeros(4), bridge_y], dim=-1)
    wing = float(identity.centres[ALA_LEFT, 0] + 0.3 * identity.radii[ALA_LEFT, 0])
    nostril_x = wing * torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    nostril_y = float(tip_c[1] + 0.8 * tip_r[1]) + torch.tensor([-0.01, 0.01, 0.02, 0.01, -0.01])
    nose = expand(torch.cat([bridge, torch.stack([nostril_x, nostril_y], dim=-1)]))

    eye_x, _, eye_half = identity.eye[:3].tolist()
    # Outward coordinate of the six points of the right eye: outer corner, upper lid x2, inner corner, lower x2.
    u = torch.tensor([_EYE_CORNER_U, 1 / 3, -1 / 3, -_EYE_CORNER_U, -1 / 3, 1 / 3])
    upper, lower, _ = _eye_lids(identity, u, eyes)
    corner_y = (upper + lower) / 2
    inset = _LID_INSET * (lower - upper)
    lid = torch.cat([upper + inset, lower - inset], dim=-1)[:, [0, 1, 2, 3, 10, 11]]  # (T, 6) sorted like u
    eye_y = torch.where(torch.tensor([True, False, False, True, False, False]), corner_y, lid)
    right_eye = torch.stack([-(eye_x + eye_half * u).expand_as(eye_y), eye_y], dim=-1)
    # The left eye is the mirror image, listed from its inner corner: 39, 38, 37, 36, 41, 40 mirrored.
    left_eye = right_eye[:, [3, 2, 1, 0, 5, 4]] * torch.tensor([-1.0, 1.0])

    half = float(identity.mouth[1])
    outer_u = torch.tensor([-0.97, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 0.97, 2 / 3, 1 / 3, 0.0, -1 / 3, -2 / 3])
    upper_o, _, _, lower_o = _lip_lines(identity, outer_u, mouth)
    outer_y = torch.cat([upper_o[:, :7], lower_o[:, 7:]], dim=-1)
    outer_y = outer_y + torch.cat([torch.zeros(1), torch.full((5,), _LIP_INSET), torch.zeros(1),
                                   torch.full((5,), -_LIP_INSET)]) * (lower_o - upper_o)
    outer_y[:, [0, 6]] = ((upper_o + lower_o) / 2)[:, [0, 6]]
    inner_u = _INNER_LIP_FRACTION * torch.tensor([-0.95, -0.5, 0.0, 0.5, 0.95, 0.5, 0.0, -0.5])
    _, upper_i, lower_i, _ = _lip_lines(identity, inner_u, mouth)
    inner_y = torch.cat([upper_i[:, :5], lower_i[:, 5:]], dim=-1)
    inner_y[:, [0, 4]] = ((upper_i + lower_i) / 2)[:, [0, 4]]
    lips = torch.cat([torch.stack([(half * outer_u).expand_as(outer_y), outer_y], dim=-1),
                      torch.stack([(half * inner_u).expand_as(inner_y), inner_y], dim=-1)], dim=1)

    xy = torch.cat([jaw, brows, nose, right_eye, left_eye, lips], dim=1)
    front = list(_FACE_PRIMITIVES)
    z = _front_z(identity.centres[front], identity.radii[front], xy)
    points = torch.cat([xy, z[..., None]], dim=-1)
    # The nose tip is the foremost point of the nose, not a lifted xy: exact under any pose.
    points[:, 30] = tip_c - torch.tensor([0.0, 0.0, float(tip_r[2])])
    return points


def landmarks_3d(identity: HeadIdentity, motion: HeadMotion) -> Tensor:
    """The 68 landmarks of every frame after pose, in normalised 3D coordinates.

    Args:
        identity: the person.
        motion: the clip's motion (T frames).

    Returns:
        (T, 68, 3) float32 points ``R p + t``; their first two coordinates are the image positions.
    """
    points = identity.scale * _landmarks_head(identity, motion.eyes, motion.mouth)
    rotation = rotation_matrix(motion.yaw.float(), motion.pitch.float(), motion.roll.float())
    return points @ rotation.mT + motion.translation.float()[:, None, :]


# ----------------------------------------------------------------------------------------------------------------
# Ray casting


@dataclass
class _Grid:
    """Sample positions of a grid: x = xs (1, 1, n), y = ys (1, m, 1) (normalised), xy = x y (1, m, n).

    A grid may be a window [rows, cols] of the full image's grid; ``rows`` and ``cols`` say where it lies.
    """

    xs: Tensor
    ys: Tensor
    xy: Tensor
    rows: slice
    cols: slice

    @staticmethod
    def of(size: int, first: float = 0.0, step: float = 1.0, count: int | None = None) -> _Grid:
        """A square grid over an S x S image: ``count`` samples per side (default S) from pixel coordinate
        ``first`` (0 is the first pixel's centre), ``step`` pixels apart."""
        count = size if count is None else count
        pixels = first + step * torch.arange(count, dtype=torch.float32)
        coords = (2 * pixels + 1) / size - 1  # pixel coordinates -> normalised (align_corners=False)
        xs, ys = coords.view(1, 1, -1), coords.view(1, -1, 1)
        return _Grid(xs, ys, xs * ys, slice(0, count), slice(0, count))

    def window(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> _Grid | None:
        """The sub-grid of samples inside a normalised box (None if empty); the full grid must call this."""
        coords = self.xs.view(-1)
        count, origin, step = len(coords), float(coords[0]), float(coords[1] - coords[0]) if len(coords) > 1 else 1.0
        index = lambda value: (value - origin) / step  # noqa: E731  normalised -> fractional sample index
        c0, c1 = max(0, math.ceil(index(x_range[0]))), min(count, math.floor(index(x_range[1])) + 1)
        r0, r1 = max(0, math.ceil(index(y_range[0]))), min(count, math.floor(index(y_range[1])) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return _Grid(self.xs[..., c0:c1], self.ys[:, r0:r1], self.xy[:, r0:r1, c0:c1], slice(r0, r1), slice(c0, c1))

    def affine(self, cx: Tensor, cy: Tensor, c0: Tensor) -> Tensor:
        """(T, m, n) values c0 + cx x + cy y from (T,) coefficients; one full-size operation."""
        return (c0[:, None, None] + cy[:, None, None] * self.ys) + cx[:, None, None] * self.xs


def _sampling(size: int, supersample: int) -> list[_Grid]:
    """The grids of rays for ``supersample`` rays per pixel (see :func:`render_clip`); the first holds the centres."""
    if supersample == 1:
        return [_Grid.of(size)]
    if supersample == 2:  # quincunx: the centres and the pixel corners, each corner shared by four pixels
        return [_Grid.of(size), _Grid.of(size, -0.5, 1.0, size + 1)]
    side = math.isqrt(supersample)
    if side * side != supersample:
        raise ValueError(f"supersample must be 1, 2 or a square (4, 9, ...) of rays per pixel, got {supersample}")
    # s x s rays per pixel, 1/s pixel apart, one on every pixel centre, s - 1 beyond the outer centres.
    return [_Grid.of(size, -(side - 1) / side, 1 / side, side * size + side - 1)]


def _filter(canvases: list[Tensor], supersample: int) -> Tensor:
    """Pixels from the samples of the grids of :func:`_sampling`, with a tent filter one pixel in radius.

    Args:
        canvases: (..., n, n) values on each grid.
        supersample: rays per pixel.

    Returns:
        (..., S, S). Quincunx: half the centre plus an eighth of each corner. An s x s grid: per axis, weight
        (s - |a|) / s^2 for the sample a steps from the centre. A box filter would need no centre sample, but
        labels are read at the centres.
    """
    if supersample == 1:
        return canvases[0]
    if supersample == 2:
        centre, corner = canvases
        return 0.5 * centre + 0.125 * (corner[..., :-1, :-1] + corner[..., :-1, 1:] + corner[..., 1:, :-1]
                                       + corner[..., 1:, 1:])
    s = math.isqrt(supersample)
    (canvas,) = canvases
    size = (canvas.shape[-1] - s + 1) // s
    weights = [(s - abs(b - (s - 1))) / (s * s) for b in range(2 * s - 1)]
    rows = sum(w * canvas[..., b : b + s * size : s, :] for b, w in enumerate(weights))
    return sum(w * rows[..., b : b + s * size : s] for b, w in enumerate(weights))


def _centres(canvas: Tensor, supersample: int) -> Tensor:
    """The pixel-centre samples (..., S, S) of the first grid of :func:`_sampling`."""
    s = 1 if supersample <= 2 else math.isqrt(supersample)
    return canvas[..., s - 1 :: s, s - 1 :: s]


def _ray_terms(identity: HeadIdentity, rotation: Tensor, translation: Tensor) -> tuple[Tensor, ...]:
    """Rays in the unit-sphere coordinates of every primitive.

    The ray of image point (x, y) is x u + y v + w + s d (s = camera z): in the head frame u, v, d are the rows of
    R and w = -R^T t; in the camera frame (neck, torso) they are the axes and w = -t. Dividing by the semi-axes
    after subtracting the centre maps each ellipsoid onto the unit sphere.

    Returns:
        u, v, w, d: (T, P, 3) for the P = _NUM_PRIMITIVES primitives (zero radii give infinities, never used).
    """
    num_frames = len(rotation)
    eye = torch.eye(3).expand(num_frames, 3, 3)
    camera = torch.zeros(_NUM_PRIMITIVES, dtype=torch.bool)
    camera[list(_CAMERA_PRIMITIVES)] = True
    frame = lambda head, cam: torch.where(camera[:, None], cam[:, None], head[:, None])  # noqa: E731  (T, P, 3)
    u, v, d = (frame(rotation[:, i], eye[:, i]) for i in range(3))
    w = frame(-(rotation.mT @ translation[:, :, None])[..., 0], -translation)
    centres, radii = identity.scale * identity.centres, identity.scale * identity.radii
    return u / radii, v / radii, (w - centres) / radii, d / radii


def _quadrics(u: Tensor, v: Tensor, w: Tensor, d: Tensor) -> Tensor:
    """Per-frame coefficients of the ray-sphere intersection as polynomials in the sample position (x, y).

    With o = x u + y v + w, the rays x u + y v + w + s d meet the unit sphere where a s^2 + 2 b s + c = 0,
    a = |d|^2, b = o.d, c = |o|^2 - 1: at s = -b/a -+ sqrt(b^2 - a c)/a. The discriminant b^2 - a c is quadratic
    in (x, y) and -b/a is affine in (x, y), with coefficients that depend on the frame and primitive only.

    Args:
        u, v, w, d: (T, P, 3) ray terms in unit-sphere coordinates (see :func:`_ray_terms`).

    Returns:
        (10, T, P): the discriminant's coefficients of 1, x, y, x^2, y^2, x y; those of -b/a of 1, x, y; and 1/a.
    """
    dot = lambda p, q: (p * q).sum(-1)  # noqa: E731
    a = dot(d, d)
    ud, vd, wd = dot(u, d), dot(v, d), dot(w, d)
    return torch.stack([
        wd * wd - a * (dot(w, w) - 1),  # disc: 1
        2 * (ud * wd - a * dot(u, w)),  # x
        2 * (vd * wd - a * dot(v, w)),  # y
        ud * ud - a * dot(u, u),  # x^2
        vd * vd - a * dot(v, v),  # y^2
        2 * (ud * vd - a * dot(u, v)),  # x y
        -wd / a, -ud / a, -vd / a,  # -b/a: 1, x, y
        1 / a,
    ])


def _ellipsoid_roots(grid: _Grid, coefficients: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where the rays of a grid's samples cross one primitive's unit sphere.

    Args:
        grid: sample positions (x, y).
        coefficients: (10, T) this primitive's column of :func:`_quadrics`.

    Returns:
        middle, half: (T, m, n); the ray enters at s = middle - half and leaves at middle + half (s is the
        camera-frame z); miss: (T, m, n) bool, where the ray misses (and half is meaningless).
    """
    c_0, c_x, c_y, c_xx, c_yy, c_xy, m_0, m_x, m_y, inverse_a = coefficients[:, :, None, None]
    # The terms in x alone and in y alone are computed on a row and a column; three operations are full-size.
    disc = (c_0 + (c_y + c_yy * grid.ys) * grid.ys) + (c_x + c_xx * grid.xs) * grid.xs
    disc.addcmul_(c_xy, grid.xy)
    # Clamped above zero: this torch's vectorised sqrt is ten times slower on zeros and negatives.
    half = disc.clamp_min(1e-30).sqrt_().mul_(inverse_a)
    return (m_0 + m_y * grid.ys) + m_x * grid.xs, half, disc <= 0


def _hairline_holds(identity: HeadIdentity, q: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Whether points q (3 tensors of one shape) on the hair shell's unit sphere lie inside the hairline."""
    front, back, wave, frequency, phase, parting = identity.hairline.tolist()
    qx, qy, qz = q
    limit = (qz + 1) * (0.5 * (front + back)) - front + parting * qx + wave * torch.sin(frequency * qx + phase)
    return qy < limit


def _boxes(identity: HeadIdentity, rotation: Tensor, translation: Tensor) -> list[list[float]]:
    """Normalised image box [x0, x1, y0, y1] of every primitive over all frames of (T, 3, 3) rotation."""
    centres, radii = identity.scale * identity.centres, identity.scale * identity.radii
    # The projected half extents of an ellipsoid with axes R diag(r) are the norms of the rows of R diag(r).
    middle = translation[:, None] + centres @ rotation.mT  # (T, P, 3)
    half = (rotation[:, None, :2] * radii[None, :, None]).norm(dim=-1)  # (T, P, 2)
    camera = list(_CAMERA_PRIMITIVES)
    middle[:, camera] = translation[:, None] + centres[camera]
    half[:, camera] = radii[camera, :2]
    low, high = (middle[..., :2] - half).amin(0), (middle[..., :2] + half).amax(0)  # (P, 2)
    return torch.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]], dim=1).tolist()


def _trace(identity: HeadIdentity, rotation: Tensor, translation: Tensor, grid: _Grid) -> tuple[Tensor, Tensor]:
    """Casts one ray per grid sample through all primitives and keeps the nearest hit.

    Each primitive is traced only inside its projected bounding box, so small parts (nose, ears) cost little.

    Args:
        identity: the person.
        rotation: (T, 3, 3) head rotations; translation: (T, 3) normalised.
        grid: sample positions (the full N x N grid).

    Returns:
        depth: (T, N, N) camera z of the nearest hit (inf where none); primitive: (T, N, N) uint8, the row of
        HeadIdentity.centres hit, or _MISS.
    """
    terms = _ray_terms(identity, rotation, translation)
    coefficients = _quadrics(*terms)
    shape = (rotation.shape[0], grid.ys.shape[1], grid.xs.shape[2])
    depth = torch.full(shape, torch.inf)  # stays inf where nothing is hit
    primitive = torch.full(shape, _MISS, dtype=torch.uint8)
    present = identity.radii.prod(-1) > 0  # a zero row is an absent part (no long hair)
    for k, (x0, x1, y0, y1) in enumerate(_boxes(identity, rotation, translation)):
        window = grid.window((x0, x1), (y0, y1)) if present[k] else None
        if window is None:
            continue
        middle, half, miss = _ellipsoid_roots(window, coefficients[:, :, k])
        near = middle - half
        if k in (HAIR_SHELL, LONG_HAIR):
            # Hair volumes are cut open: where the outside is cut away one may see the inside (the hair behind
            # the head or round the face), else nothing. Tested before misses are set to inf (sin(inf) is slow).
            own = [term[:, k] for term in terms]
            near_ok = _hair_kept(identity, k, window, own, near)
            far = middle + half
            far_ok = _hair_kept(identity, k, window, own, far) & ~near_ok
            near = torch.where(near_ok, near, far.masked_fill_(~far_ok, torch.inf))
        near.masked_fill_(miss, torch.inf)
        depth_window, primitive_window = depth[:, window.rows, window.cols], primitive[:, window.rows, window.cols]
        # primitive = k where closer, by uint8 arithmetic (wrapping), several times faster than masked_fill_.
        farther = (near >= depth_window).view(torch.uint8)
        primitive_window.sub_(k).mul_(farther).add_(k)
        torch.minimum(depth_window, near, out=depth_window)
    return depth, primitive


def _hair_kept(identity: HeadIdentity, k: int, window: _Grid, terms: list[Tensor], s: Tensor) -> Tensor:
    """Whether the hits at ray parameters s (T, m, n) on hair primitive k lie on its uncut part.

    Args:
        terms: u, v, w, d, each (T, 3), of the primitive's unit-sphere coordinates.
    """
    u, v, w, d = terms
    coordinate = lambda i: window.affine(u[:, i], v[:, i], w[:, i]) + s * d[:, i, None, None]  # noqa: E731
    if k == HAIR_SHELL:
        return _hairline_holds(identity, (coordinate(0), coordinate(1), coordinate(2)))
    # Long hair: only behind the cut, in head-frame z (unit-sphere z times the radius, plus the centre).
    cut = (identity.long_hair_cut - float(identity.centres[k, 2])) / float(identity.radii[k, 2])
    return coordinate(2) > cut


@dataclass
class _Samples:
    """The samples whose ray hits the person, as flat lists of M entries (components kept apart for speed).

    Attributes:
        index: (M,) position in the flattened (T, n, n) grid of samples.
        frame: (M,) frame of the chunk.
        depth: (M,) camera z of the hit.
        primitive: (M,) long, the primitive hit.
        point: three (M,) coordinates of the hit in head units: in the head frame, or, on camera-frame
            primitives (neck, torso), in the camera frame relative to the head's translation.
        orientation: nine (M,) entries, row-major, of the rotation from the point's frame to the camera frame
            (the head's R, or the identity on the neck and torso).
    """

    index: Tensor
    frame: Tensor
    depth: Tensor
    primitive: Tensor
    point: tuple[Tensor, Tensor, Tensor]
    orientation: list[Tensor]

    @staticmethod
    def cat(parts: list[_Samples]) -> _Samples:
        """The samples of several grids in one list (``index`` then refers to each sample's own grid)."""
        if len(parts) == 1:
            return parts[0]
        join = lambda tensors: torch.cat(list(tensors))  # noqa: E731
        return _Samples(
            join(p.index for p in parts), join(p.frame for p in parts), join(p.depth for p in parts),
            join(p.primitive for p in parts), tuple(join(p.point[i] for p in parts) for i in range(3)),
            [join(p.orientation[i] for p in parts) for i in range(9)],
        )


def _per_sample(table: Tensor, index: Tensor) -> list[Tensor]:
    """Columns of table[index]: a (K, C) table gathered by an (M,) index into C tensors of shape (M,)."""
    # Column by column: gathering (M, C) rows and splitting them is several times slower.
    return [column.index_select(0, index) for column in table.T.contiguous()]


def _hit_samples(identity: HeadIdentity, rotation: Tensor, translation: Tensor, grid: _Grid, depth: Tensor,
                 primitive: Tensor) -> _Samples:
    """Gathers the hit samples of a traced grid (see :func:`_trace`) into flat lists, so that painting and shading
    work on the person only."""
    frame, row, col = (primitive != _MISS).nonzero().unbind(1)
    samples = grid.xs.shape[-1]
    coords = grid.xs.view(-1)
    x, y = coords.index_select(0, col), coords.index_select(0, row)
    flat = (frame * samples + row) * samples + col
    s, hit = depth.view(-1).index_select(0, flat), primitive.view(-1).index_select(0, flat).long()
    # The samples come sorted by frame, so per-frame values are spread by repeating (faster than gathering).
    counts = torch.bincount(frame, minlength=len(rotation))
    tx, ty, tz, *r = torch.cat([translation, rotation.reshape(-1, 9)], dim=1).T.repeat_interleave(counts, dim=1)
    # The orientation of each sample's primitive: R, or the identity on camera-frame primitives (arithmetic
    # blending is faster than torch.where here).
    head = (hit < NECK_BALL).float()
    r = [column * head for column in r]
    for i in (0, 4, 8):
        r[i] += 1 - head
    # The hit in its primitive's frame, R^T (p - t) for the camera-frame hit p = (x, y, s).
    cx, cy, cz = x - tx, y - ty, s - tz
    point = tuple((cx * r[i] + cy * r[3 + i] + cz * r[6 + i]) / identity.scale for i in range(3))
    return _Samples(flat, frame, s, hit, point, r)


# ----------------------------------------------------------------------------------------------------------------
# Painting


def _paint_face(identity: HeadIdentity, x: Tensor, y: Tensor, eyes: Tensor, mouth: Tensor) -> Tensor:
    """Materials of points on the front of the face: skin, with eyes, brows, lips and mouth painted by (x, y).

    Args:
        identity: the person.
        x, y: (F,) head-frame coordinates (head units) of face points.
        eyes: (F,) eye openness of each point's frame; mouth: (F,) mouth opening.

    Returns:
        (F,) long materials.
    """
    material = torch.full_like(x, _M_SKIN, dtype=torch.long)
    mirrored = x.abs()  # both eyes and brows are painted from one mirrored outline

    eye_x, eye_y, half, upper_h, _, _, iris = identity.eye.tolist()
    u = (mirrored - eye_x) / half
    upper, lower, profile = _eye_lids(identity, u, eyes)
    across = u.abs() < 1
    opening = across & (y > upper) & (y < lower)
    lash = across & (y <= upper) & (y > upper - _LASH_WIDTH * (0.3 + 0.7 * profile))
    r2 = (mirrored - eye_x).square() + (y - (eye_y - 0.1 * upper_h)).square()
    glint = (mirrored - eye_x - 0.3 * iris).square() + (y - eye_y + 0.4 * iris).square()
    material.masked_fill_(lash, _M_LASH)
    material.masked_fill_(opening, _M_SCLERA)
    material.masked_fill_(opening & (r2 < iris * iris), _M_IRIS)
    material.masked_fill_(opening & (r2 < (_PUPIL_FRACTION * iris) ** 2), _M_PUPIL)
    material.masked_fill_(opening & (glint < (0.22 * iris) ** 2), _M_GLINT)

    brow_x, _, brow_half = identity.brow[:3].tolist()
    u = (mirrored - brow_x) / brow_half
    centre, thickness = _brow_line(identity, u)
    material.masked_fill_((u.abs() < 1) & ((y - centre).abs() < thickness / 2), _M_BROW)

    u = x / float(identity.mouth[1])
    upper_o, upper_i, lower_i, lower_o = _lip_lines(identity, u, mouth)
    lips = (u.abs() < 1) & (y > upper_o) & (y < lower_o)
    inside = lips & (y > upper_i) & (y < lower_i)
    material.masked_fill_(lips, _M_LIPS)
    material.masked_fill_(inside, _M_MOUTH)
    material.masked_fill_(inside & (y < upper_i + _TEETH_HEIGHT), _M_TEETH)
    return material


def _materials(identity: HeadIdentity, hits: _Samples, eyes: Tensor, mouth: Tensor) -> Tensor:
    """Material of every hit sample: its primitive's own, with the face features painted on the face.

    Args:
        identity: the person.
        hits: the hit samples (M of them).
        eyes: (T,) eye openness; mouth: (T,) mouth opening, of the chunk's frames.

    Returns:
        (M,) long materials (_M_*).
    """
    material = _PRIMITIVE_MATERIAL.index_select(0, hits.primitive)
    x, y, z = hits.point
    face = (((hits.primitive == CRANIUM) | (hits.primitive == JAW)) & (z < 0)).nonzero().squeeze(1)
    openness = _per_sample(torch.stack([eyes, mouth], dim=1), hits.frame.index_select(0, face))
    material.index_copy_(0, face, _paint_face(identity, x.index_select(0, face), y.index_select(0, face), *openness))
    # Nostrils: two dark ovals under the nose, seen when the head tilts back.
    nose = ((hits.primitive >= NOSE_TIP) & (hits.primitive <= ALA_LEFT)).nonzero().squeeze(1)  # tip and wings
    qx, qy, qz = ((c.index_select(0, nose) - m) / r for c, m, r in
                  zip(hits.point, identity.centres[NOSE_TIP].tolist(), identity.radii[NOSE_TIP].tolist()))
    nostril = (((qx.abs() - 0.6) / 0.35).square() + ((qy - 1.0) / 0.35).square() < 1) & (qz > -0.5)
    material.index_fill_(0, nose[nostril], _M_NOSTRIL)
    return material


def _palette(identity: HeadIdentity) -> Tensor:
    """(16, 3) albedo of every material for this person."""
    skin, hair, brow, iris, lips, clothes = identity.colours
    rgb = lambda values: torch.tensor(values)  # noqa: E731
    return torch.stack([
        torch.zeros(3), skin, hair, rgb(_SCLERA_RGB), iris, rgb(_PUPIL_RGB), rgb(_LASH_RGB), brow,
        skin * torch.tensor([1.0, 0.93, 0.9]), skin * 0.3, lips, rgb(_MOUTH_RGB), rgb(_TEETH_RGB), skin * 0.95,
        clothes, rgb(_GLINT_RGB),
    ])


def _texture(identity: HeadIdentity, hits: _Samples, material: Tensor) -> Tensor:
    """(M,) multiplicative texture, fixed on the surfaces: skin blotches, hair strands, clothes stripes."""
    texture = torch.ones_like(hits.depth)
    # Skin: a sum of sinusoids of the 3D point, so the pattern moves rigidly with the head.
    skin = _MATERIAL_SKIN_TEXTURE.index_select(0, material).nonzero().squeeze(1)
    point = torch.stack([c.index_select(0, skin) for c in hits.point], dim=1)
    phase = torch.addmm(identity.skin_phases, point, identity.skin_frequencies.T)
    texture.index_copy_(0, skin, torch.sin_(phase) @ identity.skin_amplitudes + 1)
    # Hair: strands running down from the crown.
    hair = (material == _M_HAIR).nonzero().squeeze(1)
    cx, cy, cz = identity.centres[HAIR_SHELL].tolist()
    hx, hy, hz = (c.index_select(0, hair) for c in hits.point)
    azimuth = torch.atan2(hx - cx, hz - cz)
    texture.index_copy_(0, hair, 0.82 + 0.18 * torch.sin(identity.strands * azimuth + 3 * torch.sin(2.5 * (hy - cy))))
    if identity.clothes_stripes > 0:
        clothes = (material == _M_CLOTHES).nonzero().squeeze(1)
        along = hits.point[0].index_select(0, clothes) + hits.point[1].index_select(0, clothes)
        texture.index_copy_(0, clothes, 0.85 + 0.15 * torch.sign(torch.sin(identity.clothes_stripes * along)))
    return texture


def _smooth_seam(identity: HeadIdentity, hits: _Samples, normal: list[Tensor], width: float = 0.15) -> None:
    """Blends the normals of the cranium and the jaw near the crease where they meet, in place.

    The union of two ellipsoids has a sharp crease across the cheeks; shading it with a normal that mixes both
    surfaces' normals (weighted by how close the point is to the other surface) makes the face read as one smooth
    surface. The silhouette is unchanged.
    """
    skin = ((hits.primitive == CRANIUM) | (hits.primitive == JAW)).nonzero().squeeze(1)
    point = [c.index_select(0, skin) for c in hits.point]
    gradients, levels = [], []
    for k in (CRANIUM, JAW):
        q = [(point[i] - float(identity.centres[k, i])) / float(identity.radii[k, i]) for i in range(3)]
        g = [q[i] / float(identity.radii[k, i]) for i in range(3)]
        length = (g[0].square() + g[1].square() + g[2].square()).sqrt_()
        gradients.append([gi / length for gi in g])
        levels.append(q[0].square() + q[1].square() + q[2].square())
    # 0.5 on the crease, towards 0 or 1 as the point leaves the other surface (implicit value > 1 outside it).
    jaw = torch.sigmoid(((levels[0] - levels[1]) / width).clamp_(-20, 20))
    for i in range(3):
        normal[i].index_copy_(0, skin, torch.lerp(gradients[0][i], gradients[1][i], jaw))


def _shade(identity: HeadIdentity, scene: Scene, rotation: Tensor, hits: _Samples,
           material: Tensor) -> list[Tensor]:
    """Lit colour of every hit sample: albedo x texture x (ambient + Lambert) + a Blinn-Phong highlight.

    Args:
        identity, scene: the person and the clip's light.
        rotation: (T, 3, 3) head rotations of the chunk.
        hits: the hit samples; material: (M,) long.

    Returns:
        Red, green and blue, each (M,).
    """
    # Every primitive is an axis-aligned ellipsoid in its own frame (head or camera): normal (p - c) / r^2.
    table = torch.cat([identity.centres, identity.radii.pow(-2)], dim=1)
    table = torch.cat([table, torch.zeros(1, 6)])  # the _MISS row, never used
    c = _per_sample(table, hits.primitive)
    local = [(hits.point[i] - c[i]) * c[3 + i] for i in range(3)]
    _smooth_seam(identity, hits, local)
    r = hits.orientation
    normal = [r[3 * j] * local[0] + r[3 * j + 1] * local[1] + r[3 * j + 2] * local[2] for j in range(3)]
    half = scene.light - torch.tensor([0.0, 0.0, 1.0])  # between the light and the camera (at z = -inf)
    light, half = scene.light.tolist(), (half / half.norm()).tolist()
    dot = lambda vector: normal[0] * vector[0] + normal[1] * vector[1] + normal[2] * vector[2]  # noqa: E731
    # Inside faces of the cut-open hair face away from the rays (+z); flip them so they are lit like the outside.
    length = (local[0].square() + local[1].square() + local[2].square()).sqrt_().clamp_min_(1e-8)
    facing = torch.where(normal[2] > 0, -1.0, 1.0) / length
    lambert = (dot(light) * facing).clamp_min_(0)
    specular = (dot(half) * facing).clamp_min_(0)
    for _ in range(4):  # exponent 16 by squaring: pow() is slow on the many zeros
        specular.square_()
    specular *= _MATERIAL_SHINE.index_select(0, material)
    light_level = (scene.ambient + (1 - scene.ambient) * lambert) * _texture(identity, hits, material)
    albedo = _per_sample(_palette(identity), material)
    return [(albedo[i] * light_level + specular) * float(scene.light_rgb[i]) for i in range(3)]


def _background(scene: Scene, size: int, times: Tensor) -> Tensor:
    """Background colours at the pixel centres.

    Args:
        scene: the clip's background.
        size: image side S.
        times: (T,) seconds.

    Returns:
        (T, S, S, 3) colours (T is 1 for a still background).
    """
    grid = _Grid.of(size)
    if not bool(scene.velocity.any()):
        times = times[:1]
    shift = times[:, None] * scene.velocity  # (T, 2)
    x = grid.xs - shift[:, 0, None, None]
    y = grid.ys - shift[:, 1, None, None]
    start, end, pattern_rgb = scene.colours
    # The gradient does not drift, so a moving pattern is visible as motion against it.
    ramp = (0.5 + 0.5 * (scene.direction[0] * grid.xs + scene.direction[1] * grid.ys)).clamp(0, 1)
    colour = torch.lerp(start, end, ramp[..., None]).expand(len(times), size, size, 3)
    frequency, angle, strength, phase = scene.pattern.tolist()
    if scene.kind == 1:
        for cx, cy, radius, *rgb in scene.blobs.tolist():
            weight = torch.exp(-((x - cx).square() + (y - cy).square()) / (2 * radius * radius))
            colour = torch.lerp(colour, torch.tensor(rgb), (strength * weight)[..., None])
    elif scene.kind in (2, 3):
        along = math.cos(angle) * x + math.sin(angle) * y
        wave = torch.sin(frequency * along + phase)
        if scene.kind == 3:
            across = -math.sin(angle) * x + math.cos(angle) * y
            wave = torch.tanh(4 * wave * torch.sin(frequency * across))
        colour = torch.lerp(colour, pattern_rgb, (strength * (0.5 + 0.5 * wave))[..., None])
    return colour


# ----------------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class RenderedClip:
    """A rendered clip with its ground truth.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        landmarks: (T, 68, 2) float32 pixel coordinates.
        pose: (T, 6) float32 yaw, pitch, roll (degrees), tx, ty, tz.
        mask: (T, H, W) uint8 in {0, 1}, 1 on the person (head, hair, neck, clothes).
        parts: (T, H, W) int64 part labels (BACKGROUND, SKIN, ...; see PART_NAMES) at the pixel centres.
    """

    frames: Tensor
    landmarks: Tensor
    pose: Tensor
    mask: Tensor
    parts: Tensor


def _render_chunk(identity: HeadIdentity, scene: Scene, motion: HeadMotion, frames: slice, size: int,
                  supersample: int, first_frame: int = 0) -> tuple[Tensor, Tensor]:
    """Renders some frames of a clip (``first_frame``: the clip's frame number of motion frame 0, for timing).

    Returns:
        (t, S, S, 3) float colours and (t, S, S) long part labels of the t frames in ``frames``.
    """
    rotation = rotation_matrix(motion.yaw[frames].float(), motion.pitch[frames].float(), motion.roll[frames].float())
    translation = motion.translation[frames].float()
    eyes, mouth = motion.eyes[frames].float(), motion.mouth[frames].float()
    grids = _sampling(size, supersample)
    traced = [_trace(identity, rotation, translation, grid) for grid in grids]
    # All grids' hits are painted and shaded together (fewer, larger operations).
    hits = [_hit_samples(identity, rotation, translation, grid, *t) for grid, t in zip(grids, traced)]
    together = _Samples.cat(hits)
    material = _materials(identity, together, eyes, mouth)
    shaded = torch.stack(_shade(identity, scene, rotation, together, material))

    canvases, start = [], 0
    for grid, (_, primitive), grid_hits in zip(grids, traced, hits):
        stop = start + len(grid_hits.index)
        canvas = torch.zeros(4, primitive.numel())
        for channel in range(3):  # one channel at a time: index_copy_ of whole rows is much slower
            canvas[channel].index_copy_(0, grid_hits.index, shaded[channel, start:stop])
        canvas[3] = (primitive != _MISS).view(-1)  # coverage
        canvases.append(canvas.view(4, *primitive.shape))
        start = stop
    colour, covered = _filter(canvases, supersample).permute(1, 2, 3, 0).split(3, dim=-1)
    times = torch.arange(first_frame + frames.start, first_frame + frames.stop, dtype=torch.float32) / motion.fps
    colour = colour + (1 - covered) * _background(scene, size, times)

    centre_hits = hits[0]
    parts = torch.full((traced[0][1].numel(),), BACKGROUND, dtype=torch.uint8)
    parts.index_copy_(0, centre_hits.index, _MATERIAL_PART.index_select(0, material[: len(centre_hits.index)]))
    return colour, _centres(parts.view(traced[0][1].shape), supersample).long()


def render_clip(identity: HeadIdentity, motion: HeadMotion, scene: Scene, size: int, supersample: int = 2,
                max_samples: int = 1 << 20, first_frame: int = 0) -> RenderedClip:
    """Renders a clip of a synthetic person with its landmarks, pose, mask and part labels.

    Args:
        identity: the person.
        motion: pose and expression of T frames.
        scene: light and background.
        size: image side S in pixels.
        supersample: antialiasing, in rays per pixel: 1, one ray through each pixel centre; 2, quincunx, the
            centre and the four corners (each shared with the neighbours), weighted 1/2 and 1/8; a square s^2,
            an s x s grid of rays 1/s pixel apart through the centres, tent-filtered. Part labels, the mask and
            the landmarks are read at the pixel centres, so they are the same for every choice.
        max_samples: rays traced at once; frames are rendered in chunks of about this many rays, which bounds
            memory and keeps the working set in cache.
        first_frame: the clip frame number of the motion's first frame; it only times the background's drift, so
            a part of a clip (e.g. one frame, re-posed) renders on the background it had at that time.

    Returns:
        A :class:`RenderedClip` with (T, S, S, 3) frames.
    """
    if supersample < 1:
        raise ValueError(f"supersample must be 1, 2 or a square (4, 9, ...) of rays per pixel, got {supersample}")
    num_frames = motion.num_frames
    step = max(1, max_samples // (supersample * size * size))
    colours, parts = [], []
    for start in range(0, num_frames, step):
        colour, part = _render_chunk(identity, scene, motion, slice(start, min(num_frames, start + step)), size,
                                     supersample, first_frame)
        colours.append(colour)
        parts.append(part)
    frames = (torch.cat(colours).clamp_(0, 1) * 255).round_().to(torch.uint8)
    parts_all = torch.cat(parts)
    points = landmarks_3d(identity, motion)
    return RenderedClip(
        frames=frames,
        landmarks=normalized_to_pixels(points[..., :2], size).float(),
        pose=motion.pose(),
        mask=(parts_all != BACKGROUND).to(torch.uint8),
        parts=parts_all,
    )


# ----------------------------------------------------------------------------------------------------------------
# Shards


def _derived_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple, stable across runs and platforms (unlike hash())."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def identity_generator(seed: int, index: int, clip: int | None = None) -> torch.Generator:
    """The generator of person ``index`` (clip None) or of one of their clips, derived from (seed, index[, clip]).

    Person i is therefore the same whatever the number of people written.
    """
    parts = ("talkinghead.synthetic_heads", seed, index) + (("identity",) if clip is None else ("clip", clip))
    return torch.Generator().manual_seed(_derived_seed(*parts))


def synthetic_clip(seed: int, index: int, clip: int, frames: int, size: int, fps: float = 25.0,
                   supersample: int = 2) -> RenderedClip:
    """Clip ``clip`` of person ``index`` under ``seed``, exactly as :func:`write_synthetic_shards` renders it.

    Args:
        seed, index, clip: what the person, their motion and the scene derive from.
        frames: T; size: image side; fps: frame rate of the motion; supersample: see :func:`render_clip`.

    Returns:
        The :class:`RenderedClip`.
    """
    identity, motion, scene = _clip_parts(seed, index, clip, frames, fps)
    return render_clip(identity, motion, scene, size, supersample=supersample)


def _clip_parts(seed: int, index: int, clip: int, frames: int, fps: float) -> tuple[HeadIdentity, HeadMotion, Scene]:
    """The person, motion and scene of a clip. The scene is drawn after the motion from the clip's generator, and
    the motion's draws depend on its length (blinks), so the clip's frame count is part of what defines it."""
    identity = sample_identity(identity_generator(seed, index))
    generator = identity_generator(seed, index, clip)
    motion = sample_motion(frames, generator, fps=fps)
    return identity, motion, sample_scene(generator)


def synthetic_frame(seed: int, index: int, clip: int, frames: int, frame: int, size: int, pose: Tensor | None = None,
                    fps: float = 25.0, supersample: int = 2) -> RenderedClip:
    """Frame ``frame`` of :func:`synthetic_clip`, rendered alone, optionally with the head at another pose.

    Everything but the head pose stays as it was at that frame: the person, the light, the background at that
    time (a drifting pattern has moved on) and the expression (eye openness, mouth opening). The neck and torso
    follow the translation, as in every frame. This is the exact ground truth of free view on synthetic data.

    Args:
        seed, index, clip, frames, fps: the clip, as :func:`synthetic_clip` (and the shard metadata) has them; the
            frame count matters, see above.
        frame: the frame's number in the clip, 0 .. frames - 1.
        size, supersample: see :func:`render_clip`.
        pose: (6,) yaw, pitch, roll (degrees), tx, ty, tz for the head; None keeps the frame's own, and then the
            result equals frame ``frame`` of ``synthetic_clip(seed, index, clip, frames, size, fps, supersample)``.

    Returns:
        A one-frame :class:`RenderedClip` (its ``pose`` is the one rendered).
    """
    if not 0 <= frame < frames:
        raise ValueError(f"frame {frame} is outside the clip's frames 0..{frames - 1}")
    identity, motion, scene = _clip_parts(seed, index, clip, frames, fps)
    at = slice(frame, frame + 1)
    yaw, pitch, roll, translation = motion.yaw[at], motion.pitch[at], motion.roll[at], motion.translation[at]
    if pose is not None:
        pose = torch.as_tensor(pose, dtype=motion.yaw.dtype).reshape(6)
        yaw, pitch, roll, translation = pose[0:1], pose[1:2], pose[2:3], pose[None, 3:]
    one = HeadMotion(yaw, pitch, roll, translation, motion.mouth[at], motion.eyes[at], motion.fps)
    return render_clip(identity, one, scene, size, supersample=supersample, first_frame=frame)


def write_synthetic_shards(
    out_dir: str | Path,
    identities: int,
    clips_per_identity: int,
    frames: int,
    size: int,
    seed: int = 0,
    codec: str = "auto",
    clips_per_shard: int = 8,
    fps: float = 25.0,
    progress: bool = False,
    first_identity: int = 0,
    supersample: int = 2,
) -> list[Path]:
    """Renders synthetic people into talking-head shards (see :mod:`talkinghead.datamodules.shard_format`).

    Person i (``synth-0000i``) and their clips depend only on (seed, i, clip), so the same seed writes the same
    shards and a person is the same in every run that includes them.

    Args:
        out_dir: folder for the shards (new or empty).
        identities: number of people.
        clips_per_identity: clips per person, one video each.
        frames: frames per clip.
        size: frame side in pixels.
        seed: seed of everything.
        codec: "npy", "mp4" or "auto" (npy up to 128 pixels, mp4 above).
        clips_per_shard: clips per shard file.
        fps: frame rate of the motion (and of the mp4 files).
        progress: show a progress bar.
        first_identity: number of the first person (disjoint ranges give disjoint people).
        supersample: antialiasing, see :func:`render_clip`.

    Returns:
        The shard paths written, in order.
    """
    from talkinghead.datamodules.shard_format import Clip, ClipMeta, ShardWriter

    if codec == "auto":
        codec = "npy" if size <= 128 else "mp4"
    jobs = [(i, c) for i in range(first_identity, first_identity + identities) for c in range(clips_per_identity)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="clip", desc="synthetic heads")
    with ShardWriter(out_dir, prefix="synth", max_samples=clips_per_shard, codec=codec) as writer:
        for i, c in jobs:
            rendered = synthetic_clip(seed, i, c, frames, size, fps=fps, supersample=supersample)
            meta = ClipMeta(
                identity=f"synth-{i:05d}",
                video=f"synth-{i:05d}-v{c:03d}",
                source="synthetic",
                fps=float(fps),
                size=size,
                preprocessing="talkinghead.synthetic_heads v1",
                extra={"seed": seed, "identity_index": i, "clip_index": c, "supersample": supersample},
            )
            clip = Clip(
                frames=rendered.frames.numpy(),
                landmarks=rendered.landmarks.numpy(),
                meta=meta,
                pose=rendered.pose.numpy(),
                mask=rendered.mask.numpy(),
            )
            writer.write(clip, key=f"synth-{i:05d}/v{c:03d}")
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return list(writer.written)
