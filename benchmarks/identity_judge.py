"""Trains the synthetic identity / landmark judge (talkinghead.metrics.synthetic_judge) once, reproducibly, and
reports its held-out accuracy.

Renders ``--identities`` synthetic people (from JUDGE_FIRST_IDENTITY on, disjoint from the benchmarks' people) with
``--clips`` clips each: all clips but the last train, the last is held out (other motion, expression, light and
background). Augmentations: the background removed (as the few-shot tiny configs train on) for half the frames, and
a Gaussian blur for half (the outputs of short runs are blurry). Then it measures:

- closed-set identity accuracy on the held-out clips of the training people;
- open-set identification on ``--unseen`` people it never saw: each person's centroid from 4 frames of one clip,
  every frame of another clip assigned to the nearest centroid (cosine), as the benchmarks use it; also on blurred
  and background-removed frames;
- landmark error on the held-out clips, in pixels and over the outer-eye-corner distance (NME).

    python benchmarks/identity_judge.py --out talkinghead/assets/synthetic_judge.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from talkinghead.datamodules.synthetic_heads import synthetic_clip
from talkinghead.metrics.face import OUTER_EYE_CORNERS
from talkinghead.metrics.synthetic_judge import JUDGE_FIRST_IDENTITY, SyntheticJudge, save_judge


def render(first: int, people: int, clips: int, frames: int, size: int, seed: int) -> dict[str, torch.Tensor]:
    """frames (n, c, t, 3, s, s) in [0, 1], masks (n, c, t, 1, s, s), landmarks (n, c, t, 68, 2)."""
    out: dict[str, list] = {"frames": [], "masks": [], "landmarks": []}
    for person in range(first, first + people):
        rendered = [synthetic_clip(seed, person, clip, frames, size) for clip in range(clips)]
        out["frames"].append(torch.stack([r.frames.permute(0, 3, 1, 2).float() / 255 for r in rendered]))
        out["masks"].append(torch.stack([r.mask[:, None].float() for r in rendered]))
        out["landmarks"].append(torch.stack([r.landmarks.float() for r in rendered]))
    return {name: torch.stack(values) for name, values in out.items()}


def augment(frames: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b = frames.shape[0]
    segmented = torch.rand(b, 1, 1, 1, generator=generator) < 0.5
    frames = torch.where(segmented, frames * masks, frames)
    blurred = torch.rand(b, generator=generator) < 0.5
    if blurred.any():
        sigma = float(torch.empty(()).uniform_(0.5, 1.5, generator=generator))
        frames[blurred] = gaussian_blur(frames[blurred], kernel_size=[7, 7], sigma=[sigma, sigma])
    gain = 1 + 0.1 * (torch.rand(b, 3, 1, 1, generator=generator) - 0.5)
    return (frames * gain).clamp(0, 1)


@torch.no_grad()
def embed(judge: SyntheticJudge, frames: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
    outs = [judge(frames[i:i + chunk]) for i in range(0, len(frames), chunk)]
    return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}


def nme(predicted: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(mean landmark error in pixels, the same over the outer-eye-corner distance)."""
    error = (predicted - truth).norm(dim=-1).mean(-1)
    a, b = OUTER_EYE_CORNERS
    ocular = (truth[:, a] - truth[:, b]).norm(dim=-1).clamp_min(1e-6)
    return error.mean().item(), (error / ocular).mean().item()


@torch.no_grad()
def open_set(judge: SyntheticJudge, data: dict[str, torch.Tensor], variant: str) -> float:
    """Top-1 accuracy of assigning clip-1 frames of unseen people to centroids from 4 clip-0 frames."""
    frames, masks = data["frames"], data["masks"]
    if variant == "background removed":
        frames = frames * masks
    elif variant == "blurred":
        n = frames.shape[:3]
        frames = gaussian_blur(frames.flatten(0, 2), kernel_size=[7, 7], sigma=[1.2, 1.2]).view(*n, *frames.shape[3:])
    people = frames.shape[0]
    centroids = F.normalize(embed(judge, frames[:, 0, :4].flatten(0, 1))["embedding"].view(people, 4, -1).mean(1),
                            dim=-1)
    queries = embed(judge, frames[:, 1].flatten(0, 1))["embedding"]
    truth = torch.arange(people).repeat_interleave(frames.shape[2])
    return ((queries @ centroids.t()).argmax(1) == truth).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="talkinghead/assets/synthetic_judge.safetensors")
    parser.add_argument("--identities", type=int, default=300, help="training people")
    parser.add_argument("--clips", type=int, default=3, help="clips per person (the last is held out)")
    parser.add_argument("--frames", type=int, default=12, help="frames per clip")
    parser.add_argument("--unseen", type=int, default=40, help="people never seen, for open-set identification")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    data = render(JUDGE_FIRST_IDENTITY, args.identities, args.clips, args.frames, args.size, args.seed)
    unseen = render(JUDGE_FIRST_IDENTITY + args.identities, args.unseen, 2, args.frames, args.size, args.seed)
    print(f"rendered {args.identities} + {args.unseen} people in {time.perf_counter() - start:.0f} s", flush=True)

    train = {k: v[:, :-1].flatten(0, 2) for k, v in data.items()}
    labels = torch.arange(args.identities).repeat_interleave((args.clips - 1) * args.frames)
    test = {k: v[:, -1].flatten(0, 1) for k, v in data.items()}
    test_labels = torch.arange(args.identities).repeat_interleave(args.frames)

    judge = SyntheticJudge(args.identities, image_size=args.size, width=args.width)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(labels) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        judge.train()
        order = torch.randperm(len(labels), generator=generator)
        for i in range(len(labels) // args.batch_size):
            index = order[i * args.batch_size:(i + 1) * args.batch_size]
            frames = augment(train["frames"][index], train["masks"][index], generator)
            out = judge(frames)
            identity = F.cross_entropy(judge.logits(out["embedding"]), labels[index])
            landmarks = F.l1_loss(out["landmarks"] / args.size, train["landmarks"][index] / args.size)
            loss = identity + 10 * landmarks
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}: identity {identity.item():.3f}, landmarks {landmarks.item() * args.size:.2f} px, "
              f"{(time.perf_counter() - start) / 60:.1f} min", flush=True)

    judge.eval()
    out = embed(judge, test["frames"])
    closed = ((judge.logits(out["embedding"])).argmax(1) == test_labels).float().mean().item()
    pixels, normalised = nme(out["landmarks"], test["landmarks"])
    out_segmented = embed(judge, test["frames"] * test["masks"])
    pixels_seg, normalised_seg = nme(out_segmented["landmarks"], test["landmarks"])
    figures = {
        "training people": args.identities, "unseen people": args.unseen, "frames per clip": args.frames,
        "closed-set accuracy, held-out clips": closed,
        **{f"open-set top-1 among {args.unseen} unseen people ({variant})": open_set(judge, unseen, variant)
           for variant in ("as rendered", "background removed", "blurred")},
        "landmark error px, held-out clips": pixels, "landmark NME (outer eye corners), held-out clips": normalised,
        "landmark error px, held-out clips, background removed": pixels_seg,
        "landmark NME, background removed": normalised_seg,
        "training minutes": (time.perf_counter() - start) / 60, "seed": args.seed,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    written = save_judge(judge, Path(args.out), figures)
    print(f"wrote {written} ({written.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
