"""OSFVModel: face-vid2vid's five networks as one inference model with verbs (no Lightning).

The chain of Wang et al. (CVPR 2021, section 3) is written once here and used by training (OSFVModule), the
callbacks, `talkinghead evaluate`, export bundles and `talkinghead animate`:

- :meth:`OSFVModel.encode_source` runs F, L and H/Δ on the source once: its appearance volume f_s, canonical
  keypoints x_c, pose and keypoints x_s = R_s x_c + t_s + δ_s (a :class:`SourceState`);
- :meth:`OSFVModel.driving_pose` runs H/Δ on driving frames;
- :meth:`OSFVModel.render` turns a source state and driving poses (or keypoints) into frames through M and G;
- :meth:`OSFVModel.reconstruct` and :meth:`OSFVModel.animate` (relative or absolute motion, free view) are built
  from those three.

All images are RGB in [0, 1], NCHW, at the size the networks were trained for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from talkinghead.flows import transform_keypoints
from talkinghead.geometry import rotation_matrix

__all__ = ["OSFVModel", "SourceState", "compose_driving_pose"]


@dataclass
class SourceState:
    """What the source image gives once, for any number of driving frames.

    Attributes:
        feature: f_s, the appearance feature volume (b, c, d, h, w).
        canonical: x_c, canonical keypoints (b, k, 3).
        pose: the source's yaw, pitch, roll (b,) degrees, rotation (b, 3, 3), translation (b, 3), expression (b, k, 3).
        keypoints: x_s = R_s x_c + t_s + δ_s (b, k, 3).
    """

    feature: Tensor
    canonical: Tensor
    pose: dict[str, Tensor]
    keypoints: Tensor

    def expand(self, n: int) -> SourceState:
        """The state of a one-image source repeated for n driving frames (views, no copies)."""
        if self.feature.shape[0] == n:
            return self
        return SourceState(
            feature=self.feature.expand(n, *self.feature.shape[1:]),
            canonical=self.canonical.expand(n, -1, -1),
            pose={key: value.expand(n, *value.shape[1:]) for key, value in self.pose.items()},
            keypoints=self.keypoints.expand(n, -1, -1),
        )


def compose_driving_pose(
    source: Mapping[str, Tensor],
    driving: Mapping[str, Tensor],
    driving_reference: Mapping[str, Tensor] | None,
    user_rotation: Tensor,
    user_translation: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rotation, translation and expression that drive the source, with the user's free-view change applied.

    Args:
        source: pose of the source image: rotation (1 or b, 3, 3), translation (1 or b, 3), expression (1 or b, k, 3).
        driving: pose of the driving frames, the same keys with batch b.
        driving_reference: pose of the first driving frame for relative motion (batch 1), or None for absolute.
        user_rotation: (3, 3) R_u.
        user_translation: (3,) t_u.

    Returns:
        rotation (b, 3, 3) = R_u R, translation (b, 3) = t_u + t and expression (b, k, 3), where relative motion
        carries the driving frames' change since the reference over to the source's pose:
        R = (R_d R_d0^T) R_s, t = t_s + t_d - t_d0, δ = δ_s + δ_d - δ_d0; absolute motion uses R_d, t_d, δ_d.
    """
    if driving_reference is None:
        rotation, translation, expression = driving["rotation"], driving["translation"], driving["expression"]
    else:
        change = driving["rotation"] @ driving_reference["rotation"].transpose(-1, -2)
        rotation = change @ source["rotation"]
        translation = source["translation"] + driving["translation"] - driving_reference["translation"]
        expression = source["expression"] + driving["expression"] - driving_reference["expression"]
    return user_rotation @ rotation, user_translation + translation, expression


class OSFVModel(nn.Module):
    """F, L, H/Δ, M and G of face-vid2vid with the verbs of inference.

    Args:
        appearance: F, image -> appearance feature volume f_s.
        canonical_keypoints: L, image -> {"keypoints": canonical keypoints x_c (b, k, 3)}.
        head_pose: H/Δ, image -> {"yaw", "pitch", "roll" (b,) degrees, "translation" (b, 3), "expression" (b, k, 3)}.
        motion: M, (f_s, x_s, x_d, R_s, R_d) -> {"deformation", "occlusion", ...}.
        generator: G, (f_s, deformation, occlusion) -> image (b, 3, h, w) in [0, 1].

    The submodules keep the names (and so the state-dict keys) that checkpoints have always used, and can be read
    as ``model["motion"]`` as well as ``model.motion``.
    """

    names = ("appearance", "canonical_keypoints", "head_pose", "motion", "generator")

    def __init__(self, appearance: nn.Module, canonical_keypoints: nn.Module, head_pose: nn.Module,
                 motion: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.appearance = appearance
        self.canonical_keypoints = canonical_keypoints
        self.head_pose = head_pose
        self.motion = motion
        self.generator = generator

    def __getitem__(self, name: str) -> nn.Module:
        if name not in self.names:
            raise KeyError(name)
        return getattr(self, name)

    @property
    def num_keypoints(self) -> int:
        return int(self.canonical_keypoints.num_keypoints)

    # -- the parts -----------------------------------------------------------------------------------------------

    def estimate_pose(self, image: Tensor) -> dict[str, Tensor]:
        """H/Δ of images, with the rotation matrix R of their yaw, pitch and roll.

        Args:
            image: (b, 3, h, w) in [0, 1].

        Returns:
            yaw, pitch, roll (b,) degrees, rotation (b, 3, 3), translation (b, 3), expression (b, k, 3).
        """
        pose = dict(self.head_pose(image))
        pose["rotation"] = rotation_matrix(pose["yaw"], pose["pitch"], pose["roll"])
        return pose

    driving_pose = estimate_pose  # the verb of the inference API: H/Δ of the driving frames

    @staticmethod
    def keypoints(canonical: Tensor, pose: Mapping[str, Tensor]) -> Tensor:
        """x = R x_c + t + δ: (b, k, 3)."""
        return transform_keypoints(canonical, pose["rotation"], pose["translation"], pose["expression"])

    def synthesize(self, feature: Tensor, source_kp: Tensor, driving_kp: Tensor, source_rotation: Tensor,
                   driving_rotation: Tensor) -> dict[str, Tensor]:
        """M then G: the driving image from f_s and the two keypoint sets. Returns prediction and motion outputs."""
        motion = self.motion(feature, source_kp, driving_kp, source_rotation, driving_rotation)
        prediction = self.generator(feature, motion["deformation"], motion["occlusion"])
        return {"prediction": prediction, **motion}

    # -- the verbs -----------------------------------------------------------------------------------------------

    def encode_source(self, image: Tensor, pose: Mapping[str, Tensor] | None = None) -> SourceState:
        """F, L and H/Δ of the source images (b, 3, h, w); ``pose`` replaces H/Δ's estimate when given."""
        pose = self.estimate_pose(image) if pose is None else dict(pose)
        canonical = self.canonical_keypoints(image)["keypoints"]
        return SourceState(self.appearance(image), canonical, pose, self.keypoints(canonical, pose))

    def render(self, state: SourceState, driving: Mapping[str, Tensor]) -> Tensor:
        """Frames of the source in driving poses: (b, 3, h, w) in [0, 1].

        Args:
            state: :meth:`encode_source` of one image (used for every frame) or of b images.
            driving: per frame a rotation R_d (b, 3, 3) and either translation t_d (b, 3) and expression δ_d
                (b, k, 3), whose keypoints are then taken with the SOURCE's canonical keypoints, or the driving
                keypoints themselves as "keypoints" (b, k, 3) (a compact keypoint stream: k x 3 numbers and a
                rotation per frame).
        """
        rotation = driving["rotation"]
        state = state.expand(rotation.shape[0])
        keypoints = driving["keypoints"] if "keypoints" in driving else self.keypoints(state.canonical, driving)
        return self.synthesize(state.feature, state.keypoints, keypoints, state.pose["rotation"],
                               rotation)["prediction"]

    @torch.no_grad()
    def reconstruct(self, source: Tensor, driving: Tensor) -> Tensor:
        """Same-identity reconstruction: each driving frame re-synthesised from its source (b, 3, h, w) -> (b, 3, h, w)."""
        return self.render(self.encode_source(source), self.estimate_pose(driving))

    @torch.no_grad()
    def animate(
        self,
        source: Tensor,
        driving_frames: Tensor,
        relative: bool = True,
        yaw: float = 0.0,
        pitch: float = 0.0,
        roll: float = 0.0,
        translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
        chunk: int = 16,
        on_chunk: Callable[[int], object] | None = None,
    ) -> Tensor:
        """Animates one source image with a driving video, optionally from another viewpoint (free view).

        Args:
            source: (3, h, w) or (1, 3, h, w) in [0, 1].
            driving_frames: (t, 3, h, w) in [0, 1] (moved to the model's device a chunk at a time).
            relative: transfer the driving motion relative to its first frame onto the source's own pose;
                False uses the driving poses as they are.
            yaw, pitch, roll: user rotation R_u in degrees applied to every output frame.
            translation: user translation t_u in normalised units.
            chunk: frames synthesised per forward pass.
            on_chunk: called with the number of frames after each chunk (e.g. a progress bar's ``update``).

        Returns:
            (t, 3, h, w) in [0, 1] on the model's device.
        """
        device = next(self.parameters()).device
        source = source.reshape(1, *source.shape[-3:]).to(device)
        state = self.encode_source(source)
        reference = self.estimate_pose(driving_frames[:1].to(device)) if relative else None
        user_rotation = rotation_matrix(*(torch.tensor(float(a), device=device) for a in (yaw, pitch, roll)))
        user_translation = torch.tensor(translation, dtype=source.dtype, device=device)
        outputs = []
        for frames in driving_frames.split(chunk):
            pose = self.estimate_pose(frames.to(device))
            rotation, shift, expression = compose_driving_pose(state.pose, pose, reference, user_rotation,
                                                               user_translation)
            outputs.append(self.render(state, {"rotation": rotation, "translation": shift, "expression": expression}))
            if on_chunk is not None:
                on_chunk(len(frames))
        return torch.cat(outputs)
