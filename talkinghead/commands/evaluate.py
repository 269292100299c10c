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
                    "reenactment or free view) beside the copy-source-frame baseline; writes evaluation.csv and "
                    "evaluation.md to --out.",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `talkinghead fit`")
    parser.add_argument("--data", required=True, help="evaluation shards: folder, glob, brace pattern or URL")
    parser.add_argument("--mode", choices=MODES, default="same-identity", help="what is evaluated")
    parser.add_argument("--out", required=True, help="output folder for evaluation.csv and evaluation.md")
    parser.add_argument("--pairs", type=int, default=64, help="clips evaluated (one pair or source per clip)")
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
    exact_truth = args.mode == "free-view" and args.exact_truth is not False and _synthetic(parser, args)
    from talkinghead.evaluation import evaluate, find_checkpoint_image_size, load_model
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
    scope: dict[str, int] = {}
    try:
        rows = evaluate(model, args.data, mode=args.mode, num_pairs=args.pairs, image_size=size,
                        face_metrics=not args.no_face_metrics, fid_weights=args.fid_weights,
                        lpips_weights=args.lpips_weights, device=args.device, pose_checkpoint=args.pose_checkpoint,
                        facenet_weights=args.facenet_weights, scope=scope)
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
