"""`talkinghead evaluate`: score a checkpoint against the copy-source baseline and write a paper-style table."""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from talkinghead.evaluation import MODES

    parser = argparse.ArgumentParser(
        prog="talkinghead evaluate",
        description="Evaluate a `talkinghead fit` checkpoint on shards (same-identity reconstruction, cross-identity "
                    "reenactment or free view) beside the copy-source-frame baseline, or a meta-learned FSTH / LPD "
                    "checkpoint by the few-shot protocol (--mode few-shot: T frames of each held-out person, "
                    "feed-forward and fine-tuned, beside copying the first and the mean of the T frames); writes "
                    "evaluation.csv and evaluation.md to --out.",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `talkinghead fit`")
    parser.add_argument("--data", required=True, help="evaluation shards: folder, glob, brace pattern or URL")
    parser.add_argument("--mode", choices=MODES, default="same-identity", help="what is evaluated")
    parser.add_argument("--out", required=True, help="output folder for evaluation.csv and evaluation.md")
    parser.add_argument("--pairs", type=int, default=64, help="clips evaluated (one pair or source per clip)")
    few_shot = parser.add_argument_group("few-shot (FSTH / LPD meta-learned checkpoints)")
    few_shot.add_argument("--shots", default="1,8", help="T values, comma-separated (the paper: 1,8,32)")
    few_shot.add_argument("--finetune-steps", type=int, default=100,
                          help="generator steps of fine-tuning per person and T (0: feed-forward and baselines only)")
    few_shot.add_argument("--finetune-config", default=None,
                          help="fine-tuning config (losses, optimizers, data augmentation); default: the package's "
                          "<model>/tiny_finetune.yaml up to 64 px, <model>/finetune_vox256.yaml above")
    few_shot.add_argument("--people", type=int, default=4, help="held-out people (the first identities of --data)")
    few_shot.add_argument("--held-out", type=int, default=8,
                          help="held-out frames per person, never among the T (the same for every T)")
    parser.add_argument("--remove-background", action=argparse.BooleanOptionalAction, default=None,
                        help="black out the frames' background where the shards store masks (default: as the "
                        "checkpoint's training data did, when it records it)")
    parser.add_argument("--judge", action=argparse.BooleanOptionalAction, default=None,
                        help="few-shot: add the synthetic identity / landmark judge's columns (default: when the "
                        "shards are synthetic)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side; default: the checkpoint run's data image_size, else 256")
    parser.add_argument("--fid-weights", default="IMAGENET1K_V1",
                        help="InceptionV3 weights: IMAGENET1K_V1 (torch hub cache only) or a local .pth")
    parser.add_argument("--lpips-weights", default="DEFAULT",
                        help="LPIPS AlexNet backbone: DEFAULT (torch hub cache only) or a local .pth")
    parser.add_argument("--no-face-metrics", action="store_true", help="skip AKD, AED, CSIM and pose error")
    parser.add_argument("--facenet-weights", default=None,
                        help="local InceptionResnetV1 weights (facenet-pytorch, e.g. 20180402-114759-vggface2.pt) "
                        "for AED/CSIM; default: dlib's 128-d face descriptor")
    parser.add_argument("--pose-checkpoint", default=None,
                        help="local Hopenet weights (deep-head-pose) for pose error; default: PnP on dlib landmarks")
    parser.add_argument("--device", default="cpu", help="torch device for the model and the face detector")
    parser.add_argument("--exact-truth", action=argparse.BooleanOptionalAction, default=None,
                        help="free-view: also score each yaw against the synthetic renderer's exact re-render of the "
                        "turned head, beside 'no turn' (default: when the shards are synthetic; --exact-truth "
                        "requires it, --no-exact-truth skips it); writes free_view_truth.csv")
    parser.add_argument("--truth-yaws", type=float, nargs="+", default=None, metavar="DEG",
                        help="requested yaws of the exact-truth table (default -30 -20 -10 10 20 30)")
    return parser


def own_flags(error: BaseException) -> str:
    """An error's message with fit's flag names (shared by the data code) replaced by evaluate's own."""
    return str(error).replace("--data.init_args.shards", "--data").replace("--data.init_args.image_size", "--size")


def _format(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"


def _columns(rows) -> list[str]:
    from talkinghead.evaluation import COLUMNS

    extra = [key for _, values in rows for key in values if key not in COLUMNS]
    return list(COLUMNS) + list(dict.fromkeys(extra))


def format_table(rows) -> str:
    """A plain-text table of the rows, one column per metric."""
    columns = _columns(rows)
    cells = [["", *columns]] + [[name, *(_format(values.get(c, "")) for c in columns)] for name, values in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def write_outputs(rows, out: Path, header: str) -> None:
    """out/evaluation.csv (row, then one column per metric) and out/evaluation.md (header line and a table)."""
    columns = _columns(rows)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "evaluation.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["row", *columns])
        for name, values in rows:
            writer.writerow([name, *(_format(values.get(c, "")) for c in columns)])
    lines = [header, "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + name + " | " + " | ".join(_format(values.get(c, "")) for c in columns) + " |"
              for name, values in rows]
    (out / "evaluation.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {args.pairs}")
    if not Path(args.checkpoint).is_file():
        parser.exit(2, f"talkinghead evaluate: checkpoint not found: {args.checkpoint}\n")
    from talkinghead.datamodules.shard_format import ShardError, expand_shards

    try:
        expand_shards(args.data)
    except ShardError as error:
        parser.exit(2, f"talkinghead evaluate: --data: {own_flags(error)}\n")
    if args.exact_truth and args.mode != "free-view":
        parser.exit(2, f"talkinghead evaluate: --exact-truth applies to --mode free-view, not {args.mode}\n")
    shots = _shots(parser, args.shots)
    for flag, value, least in (("--people", args.people, 1), ("--held-out", args.held_out, 1),
                               ("--finetune-steps", args.finetune_steps, 0)):
        if value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")
    if args.finetune_config is not None and not Path(args.finetune_config).is_file():
        parser.exit(2, f"talkinghead evaluate: --finetune-config not found: {args.finetune_config}\n")
    exact_truth = args.mode == "free-view" and args.exact_truth is not False and _synthetic(parser, args)
    from talkinghead.evaluation import checkpoint_data_setting, evaluate, find_checkpoint_image_size, load_model
    from talkinghead.metrics import MissingWeightsError

    try:
        model = load_model(args.checkpoint, device=args.device)
    except ValueError as error:
        parser.exit(2, f"talkinghead evaluate: {error}\n")
    size = args.size
    if size is None:
        size, where = find_checkpoint_image_size(args.checkpoint)
        if where.startswith("guessed"):
            print(f"talkinghead evaluate: image size {size} {where}; pass --size to set it", file=sys.stderr)
    remove_background = args.remove_background
    if remove_background is None:
        remove_background = bool(checkpoint_data_setting(args.checkpoint, "remove_background", False))
    if args.mode == "few-shot":
        return _few_shot(parser, args, model, size, shots, remove_background)
    scope: dict[str, int] = {}
    try:
        rows = evaluate(model, args.data, mode=args.mode, num_pairs=args.pairs, image_size=size,
                        face_metrics=not args.no_face_metrics, fid_weights=args.fid_weights,
                        lpips_weights=args.lpips_weights, device=args.device, pose_checkpoint=args.pose_checkpoint,
                        facenet_weights=args.facenet_weights, scope=scope, remove_background=remove_background)
    except (ValueError, FileNotFoundError, MissingWeightsError) as error:
        parser.exit(2, f"talkinghead evaluate: {own_flags(error)}\n")
    truth = None
    if exact_truth:
        from talkinghead.freeview import FREE_VIEW_TRUTH_YAWS, score_free_view

        try:
            truth = score_free_view(model, args.data, yaws=args.truth_yaws or FREE_VIEW_TRUTH_YAWS,
                                    num_clips=args.pairs, image_size=size)
        except ValueError as error:
            parser.exit(2, f"talkinghead evaluate: exact free-view truth: {error}\n")
    date = datetime.datetime.now().isoformat(timespec="seconds")
    scored = ", ".join(f"{count} {name}" for name, count in scope.items())
    header = (f"**{args.mode}** evaluation of `{args.checkpoint}` on `{args.data}`: {scored} scored at {size} px "
              f"(--pairs {args.pairs}), {date}")
    print(f"{args.mode}: {args.checkpoint} on {args.data} at {size} px: {scored} scored")
    print(format_table(rows))
    write_outputs(rows, Path(args.out), header)
    print(f"wrote {Path(args.out) / 'evaluation.csv'} and {Path(args.out) / 'evaluation.md'}", file=sys.stderr)
    if truth is not None:
        from talkinghead.freeview import format_table as format_scores

        print(f"\nfree view against the exact re-rendered truth ({TRUTH_NOTE}):")
        print(format_scores(truth))
        write_truth(truth, Path(args.out))
        print(f"wrote {Path(args.out) / 'free_view_truth.csv'}", file=sys.stderr)
    return 0


def _shots(parser: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    """--shots "1,8,32" -> (1, 8, 32); anything else exits 2 in one line."""
    try:
        shots = tuple(int(part) for part in text.split(","))
    except ValueError:
        shots = ()
    if not shots or min(shots) < 1:
        parser.error(f"--shots takes T values of 1 or more separated by commas, e.g. 1,8,32; got {text!r}")
    return tuple(dict.fromkeys(shots))


def _few_shot(parser: argparse.ArgumentParser, args: argparse.Namespace, model, size: int, shots: tuple[int, ...],
              remove_background: bool) -> int:
    """--mode few-shot: the FSTH / LPD protocol (talkinghead.few_shot_evaluation)."""
    from talkinghead.few_shot_evaluation import FewShotSettings, evaluate_few_shot
    from talkinghead.metrics import MissingWeightsError

    judge = args.judge
    if judge is None:
        judge = _is_synthetic(args.data, args.people)
    settings = FewShotSettings(shots=shots, finetune_steps=args.finetune_steps, held_out=args.held_out,
                               people=args.people, finetune_config=args.finetune_config,
                               remove_background=remove_background)
    scope: dict[str, object] = {}
    try:
        rows = evaluate_few_shot(model, args.checkpoint, args.data, settings, image_size=size,
                                 face_metrics=not args.no_face_metrics, fid_weights=args.fid_weights,
                                 lpips_weights=args.lpips_weights, device=args.device,
                                 pose_checkpoint=args.pose_checkpoint, facenet_weights=args.facenet_weights,
                                 judge=judge, scope=scope)
    except (ValueError, FileNotFoundError, MissingWeightsError) as error:
        parser.exit(2, f"talkinghead evaluate: {own_flags(error)}\n")
    date = datetime.datetime.now().isoformat(timespec="seconds")
    tuned = (f"fine-tuned {args.finetune_steps} G steps with `{scope['config']}`" if args.finetune_steps
             else "no fine-tuning")
    background = ", background removed" if remove_background else ""
    people = f"{scope['people']} held-out {'person' if scope['people'] == 1 else 'people'}"
    scored = (f"{people}, {scope['held-out frames']} held-out frames (never among the T), "
              f"T = {', '.join(map(str, shots))}, {tuned}, at {size} px{background}")
    header = f"**few-shot** evaluation of `{args.checkpoint}` on `{args.data}`: {scored}, {date}"
    if judge:
        header += ("; judge cos / judge landmarks px: the synthetic judge's identity (cosine to the person's held-out "
                   "frames) and landmark error to the driving frame")
    print(f"few-shot: {args.checkpoint} on {args.data}: {scored}")
    print(format_table(rows))
    write_outputs(rows, Path(args.out), header)
    print(f"wrote {Path(args.out) / 'evaluation.csv'} and {Path(args.out) / 'evaluation.md'}", file=sys.stderr)
    return 0


def _is_synthetic(data: str, clips: int) -> bool:
    """Whether the shards' first clips are procedural synthetic heads (the synthetic judge's domain)."""
    from talkinghead.datamodules.shard_format import ShardError
    from talkinghead.freeview import NotSyntheticError, synthetic_clip_sources

    try:
        synthetic_clip_sources(data, clips)
    except (NotSyntheticError, ShardError):  # unreadable shards are reported by the evaluation itself
        return False
    return True


TRUTH_NOTE = ("PSNR dB / L1 against the synthetic head re-rendered turned by the requested yaw, same light, "
              "expression and background; 'no turn' = the unturned source; fg = union of the truth's and the "
              "source's person masks")


def _synthetic(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Whether the evaluated clips can be re-rendered; exits 2 in one line when --exact-truth asks for what they
    cannot give, and says why it is skipped otherwise."""
    from talkinghead.datamodules.shard_format import ShardError
    from talkinghead.freeview import NotSyntheticError, synthetic_clip_sources

    try:
        synthetic_clip_sources(args.data, args.pairs)
    except NotSyntheticError as error:
        if args.exact_truth:
            parser.exit(2, f"talkinghead evaluate: --exact-truth: {error}\n")
        print(f"talkinghead evaluate: no exact free-view truth: {error}", file=sys.stderr)
        return False
    except ShardError as error:
        parser.exit(2, f"talkinghead evaluate: --data: {own_flags(error)}\n")
    return True


def write_truth(scores, out: Path) -> None:
    """out/free_view_truth.csv (group, row, then one column per metric) and the table appended to evaluation.md."""
    from talkinghead.freeview import COLUMNS, format_table as format_scores

    with open(out / "free_view_truth.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["group", "row", *COLUMNS])
        for group, row in scores.items():
            for name, values in row.items():
                writer.writerow([group, name, *(int(values[c]) if c == "n" else values[c] for c in COLUMNS)])
    with open(out / "evaluation.md", "a") as stream:
        stream.write(f"\n**free view against exact truth** ({TRUTH_NOTE})\n\n{format_scores(scores, markdown=True)}\n")
