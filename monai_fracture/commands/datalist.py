"""``monai-fracture datalist <layout> ...``: build a leakage-free MONAI datalist JSON, or check one."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "build a leakage-free MONAI datalist (fracatlas | folders | csv | dicom | auto) or check one"
logger = logging.getLogger(__name__)


def _split_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="datalist JSON to write (image paths relative to its folder)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-folds", type=int, default=None, help="k-fold: cut the non-test part into k group folds")
    p.add_argument("--fold", type=int, default=None, help="which fold is validation (with --num-folds)")
    p.add_argument("--pixel-check", action=argparse.BooleanOptionalAction, default=True, help="refuse pixel-identical images across splits")
    p.add_argument("--cache-dir", default=None, help="where the hash cache lives (default: the cache folder, ~/.cache/monai-fracture)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="layout", metavar="LAYOUT", required=True)
    p = sub.add_parser("fracatlas", help="FracAtlas: labels.csv with group/decodes, or upstream dataset.csv + images/Fractured|Non_fractured")
    p.add_argument("root")
    _split_options(p)
    p = sub.add_parser("folders", help="class-per-folder tree (root/<class>/...)")
    p.add_argument("root")
    p.add_argument("--positive", action="append", default=None, help="fractured class folder name (repeatable; default fractured/positive/1...)")
    _split_options(p)
    p = sub.add_parser("csv", help="CSV of files with labels and optional group/patient ids")
    p.add_argument("csv")
    p.add_argument("--base-dir", default=None, help="folder relative paths start from (default: the CSV's folder)")
    p.add_argument("--image-col", default=None)
    p.add_argument("--label-col", default=None)
    p.add_argument("--group-col", default=None)
    _split_options(p)
    p = sub.add_parser("dicom", help="DICOM folder + CSV of labels keyed by StudyInstanceUID or AccessionNumber")
    p.add_argument("root")
    p.add_argument("--labels", required=True, help="CSV with the key column and a label column")
    p.add_argument("--key", default=None, choices=["StudyInstanceUID", "AccessionNumber"])
    _split_options(p)
    p = sub.add_parser("auto", help="detect the layout of a dataset folder")
    p.add_argument("root")
    _split_options(p)
    p = sub.add_parser("check", help="check an existing datalist JSON for leaks")
    p.add_argument("datalist")
    p.add_argument("--pixel-check", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cache-dir", default=None)


def _items(args: argparse.Namespace) -> list[dict]:
    from monai_fracture.data import datalist as dl

    if args.layout == "fracatlas":
        return dl.fracatlas_items(args.root)
    if args.layout == "folders":
        return dl.folder_items(args.root, positive=args.positive or dl.POSITIVE_NAMES)
    if args.layout == "csv":
        return dl.csv_items(args.csv, args.base_dir, args.image_col, args.label_col, args.group_col)
    if args.layout == "dicom":
        return dl.dicom_folder_items(args.root, args.labels, key=args.key)
    layout = dl.detect_layout(args.root)
    if layout is None:
        raise FileNotFoundError(f"{args.root}: empty or missing")
    return dl.items_from_layout(args.root, layout)


def run(args: argparse.Namespace) -> int:
    from monai_fracture.data import datalist as dl
    from monai_fracture.data.leakage import LeakageError
    from monai_fracture.data.split import format_summary, split_summary

    try:
        if args.layout == "check":
            datalist = dl.load_datalist(args.datalist)
            dl.check_datalist(datalist, check_pixels=args.pixel_check, cache_dir=args.cache_dir)
            print(format_summary(split_summary(datalist)))
            print("no leakage found")
            return 0
        datalist = dl.build_datalist(
            _items(args), val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
            fold=args.fold, num_folds=args.num_folds, check_pixels=args.pixel_check, cache_dir=args.cache_dir,
        )
        dl.write_datalist(datalist, args.out, check=False, description=f"monai-fracture {args.layout} datalist")
    except LeakageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(split_summary(datalist)))
    print(f"wrote {args.out}")
    return 0
