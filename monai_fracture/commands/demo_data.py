"""``monai-fracture demo-data OUT``: write the embedded synthetic DICOM study set with ground truth."""

from __future__ import annotations

import argparse
import logging
import time

HELP = "write a synthetic DICOM study set (DX/CR radiographs or CT) with labels.csv and a leakage-free datalist.json"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (created)")
    parser.add_argument("--n", type=int, default=None, help="images (xr, default 300) or series (ct, default 40)")
    parser.add_argument("--modality", choices=["xr", "ct"], default="xr")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (byte for byte)")
    parser.add_argument("--size", default=None, help="long side in px (xr, default 512), cube side (ct, default 64), or ROWSxCOLS")
    parser.add_argument("--compress", action=argparse.BooleanOptionalAction, default=True, help="mix in RLE/JPEG-LS/JPEG 2000 lossless files")
    parser.add_argument("--fracture-fraction", type=float, default=0.5, help="share of fractured studies")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")


def run(args: argparse.Namespace) -> int:
    from monai_fracture.data.split import format_summary, split_summary
    from monai_fracture.data.datalist import load_datalist
    from monai_fracture.data.synthetic import generate_demo_dataset

    logging.getLogger("monai_fracture.progress").setLevel(logging.INFO)  # off a terminal: count, rate, ETA lines
    start = time.perf_counter()
    size = int(args.size) if args.size and args.size.isdigit() else args.size
    table = generate_demo_dataset(
        args.out, n=args.n, modality=args.modality, seed=args.seed, size=size, compress=args.compress,
        fracture_fraction=args.fracture_fraction, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        workers=args.workers,
    )
    elapsed = time.perf_counter() - start
    print(f"{len(table)} {args.modality} items ({int(table['label'].sum())} fractured) in {args.out} ({elapsed:.1f} s)")
    print(format_summary(split_summary(load_datalist(f"{args.out}/datalist.json"))))
    return 0
