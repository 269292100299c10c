"""`talkinghead export`: a checkpoint -> a bundle that loads without Lightning (talkinghead.inference.load)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from talkinghead.export import GRAPH_FORMATS

    parser = argparse.ArgumentParser(
        prog="talkinghead export",
        description="Write a `talkinghead fit` checkpoint (OSFV; FSTH or LPD, meta-learned or fine-tuned) as a bundle: "
                    "model.safetensors (inference weights, the EMA when kept) and manifest.json; load it with "
                    "talkinghead.inference.load(OUT) or `talkinghead animate --model OUT`.",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `talkinghead fit` (loaded safely)")
    parser.add_argument("--out", required=True, help="the bundle folder to create (new or empty)")
    parser.add_argument("--kind", default=None, help="refuse the checkpoint unless it holds this kind "
                        "(osfv, fsth, fsth-person, lpd, lpd-person)")
    parser.add_argument("--format", action="append", choices=GRAPH_FORMATS, default=[],
                        help="also export OSFV's appearance, keypoint and renderer graphs in this format "
                             "(repeatable); each is checked against PyTorch on random inputs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from talkinghead.export import bundle_bytes, export_bundle, export_graphs
    from talkinghead.inference import BundleError

    checkpoint, out = Path(args.checkpoint), Path(args.out)
    if not checkpoint.is_file():
        parser.exit(2, f"talkinghead export: --checkpoint {checkpoint}: no such file\n")
    created = not out.exists()
    try:
        manifest = export_bundle(checkpoint, out, kind=args.kind)
        graphs = export_graphs(out, args.format) if args.format else {}
    except (BundleError, ValueError) as error:
        if created and out.exists():
            shutil.rmtree(out)  # a folder this run made: no half bundle stays
        parser.exit(2, f"talkinghead export: {str(error).splitlines()[0]}\n")
    size, source = bundle_bytes(out), manifest["source_checkpoint"]["bytes"]
    print(f"{manifest['kind']} bundle: {out} ({size / 2**20:.1f} MB: {manifest['weights']['parameters'] / 1e6:.2f} M "
          f"parameters{', EMA weights' if manifest['ema'] else ''}) from {checkpoint} ({source / 2**20:.1f} MB, "
          f"{source / max(size, 1):.1f}x larger); image size {manifest['image_size']} "
          f"({manifest['image_size_source']})")
    for name, graph in graphs.items():
        print(f"  {name}: {graph['file']} ({graph['bytes'] / 2**20:.1f} MB), max |difference| to PyTorch "
              f"{graph['max_abs_difference_to_pytorch']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
