"""Why does FSTH's embedder die? Trains tiny FSTH meta-learning and prints the embedder's vital signs over time.

Every ``--every`` generator steps it prints: the mean |e| (e = ReLU(last map) sum-pooled, averaged over K frames),
the share of pre-ReLU activations above 0 (0 = every ReLU dead, no gradient can revive e), the norm of the
gradient that each generator term sends into e (the embedding match L_MCH against the reconstruction and
adversarial terms), and the mean |W_i| of the video columns. At the end, on held-out synthetic people: the mean
distance between embeddings of DIFFERENT people over the mean distance between two embeddings of the SAME person
(two disjoint sets of K frames), so > 1 means e tells people apart (a collapsed e gives 0 / 0, printed as nan)::

    python benchmarks/fsth_embedder.py --steps 300 --out /tmp/fsth_embedder                  # the current recipe
    python benchmarks/fsth_embedder.py --steps 300 -- --model.init_args.video_columns_init=random  # before the fix
    python benchmarks/fsth_embedder.py --steps 0                                # the untrained embedder's ratio

Arguments after ``--`` go to ``talkinghead fit`` (the tiny_meta.yaml config).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch

from few_shot_common import config_path, write_data

from talkinghead.cli import TalkingHeadCLI
from talkinghead.datamodules.talking_heads import PersonDataModule
from talkinghead.lightning.fsth import FSTHModule

GROUPS = {"embedding_match": ("embedding_match",), "reconstruction": ("l1", "content_vgg19", "content_vggface"),
          "adversarial": ("adversarial", "feature_matching")}


class Vitals:
    """Wraps FSTHModule.generator_losses to measure, every ``every`` G steps, what each term does to e."""

    def __init__(self, module: FSTHModule, every: int) -> None:
        self.module, self.every, self.step, self.rows = module, every, 0, []
        self.pre_relu: torch.Tensor | None = None
        trunk = module.networks["embedder"].trunk
        trunk.to_embedding.register_forward_hook(lambda _m, _i, out: setattr(self, "pre_relu", out.detach()))
        original = module.generator_losses

        def generator_losses(batch, outputs, real=None):
            terms = original(batch, outputs, real)
            if self.step % self.every == 0:
                self.measure(terms, outputs["embedding"])
            self.step += 1
            return terms

        module.generator_losses = generator_losses

    def measure(self, terms: dict[str, torch.Tensor], embedding: torch.Tensor) -> None:
        weights = self.module.loss_weights
        row = {"step": self.step, "e_abs_mean": embedding.detach().abs().mean().item(),
               "alive": (self.pre_relu > 0).float().mean().item(),
               "W_abs_mean": self.module.projection_discriminator.video_embeddings.weight.detach().abs().mean().item()}
        for group, names in GROUPS.items():
            total = sum((weights[n] * terms[n] for n in names if n in terms), torch.zeros(()))
            if total.requires_grad:
                (grad,) = torch.autograd.grad(total, embedding, retain_graph=True, allow_unused=True)
                row[f"grad_{group}"] = 0.0 if grad is None else grad.norm().item()
            else:
                row[f"grad_{group}"] = 0.0
        self.rows.append(row)
        print("step {step:5d}  |e| {e_abs_mean:8.4f}  alive {alive:6.1%}  |W| {W_abs_mean:7.4f}  "
              "|de| match {grad_embedding_match:9.2e}  recon {grad_reconstruction:9.2e}  "
              "adv {grad_adversarial:9.2e}".format(**row), flush=True)


@torch.no_grad()
def separation(module: FSTHModule, people: list[Path], k: int) -> tuple[float, float]:
    """(mean distance between different people's e, mean distance between two disjoint K-frame e of one person)."""
    module.eval()
    pairs = []
    for folder in people:
        data = PersonDataModule(shards=str(folder), num_frames=2 * k, image_size=64, batch_size=1, num_workers=0,
                                remove_background=True)  # as tiny_meta.yaml's data
        data.setup("fit")
        person = data.person_frames()
        frames, landmarks = person["references"], person["references_landmarks"]
        pairs.append(tuple(module.video_embedding(module.networks, frames[:, part], landmarks[:, part])[0]
                           for part in (slice(None, k), slice(k, None))))
    same = torch.stack([(a - b).norm() for a, b in pairs]).mean().item()
    different = torch.stack([(p[0] - q[0]).norm() for p, q in itertools.combinations(pairs, 2)]).mean().item()
    return different, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/fsth_embedder", help="work folder (shards, checkpoint)")
    parser.add_argument("--steps", type=int, default=300, help="generator steps")
    parser.add_argument("--every", type=int, default=25, help="print the vital signs every this many G steps")
    parser.add_argument("--identities", type=int, default=32, help="meta-training people (2 clips each)")
    parser.add_argument("--people", type=int, default=6, help="held-out people for the separation ratio")
    parser.add_argument("--frames", type=int, default=24, help="frames per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra `talkinghead fit` arguments after --")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, people = write_data(args, out)
    cli = TalkingHeadCLI(args=[
        "--config", str(config_path("fsth", "tiny_meta.yaml")), f"--data.init_args.shards={train}",
        "--data.init_args.num_workers=0", f"--trainer.max_steps={3 * args.steps}", "--trainer.max_epochs=-1",
        "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out / 'run'}", f"--seed_everything={args.seed}", *args.overrides,
    ], run=False)
    vitals = Vitals(cli.model, args.every)
    start = time.perf_counter()
    if args.steps:  # --steps 0: the ratio of the untrained embedder, for reference
        cli.trainer.fit(cli.model, cli.datamodule)
    print(f"{vitals.step} G steps in {(time.perf_counter() - start) / 60:.1f} min")
    different, same = separation(cli.model, people, k=4)
    print(f"held-out people ({len(people)}): distance between people {different:.4f}, within a person {same:.4f}, "
          f"ratio {different / same if same else float('nan'):.2f}")


if __name__ == "__main__":
    main()
