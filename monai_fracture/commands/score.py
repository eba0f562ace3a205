"""``monai-fracture score INPUT... --out DIR``: batch scoring of folders (docs/scoring.md).

Exit codes: 0 every input scored or skipped; 1 some input failed (or a DICOM output could
not be written); 2 usage error (bad arguments, no model, an --out of another model or with a
planted symlink); 3 disk full (the journal is kept whole: free space and rerun to resume);
130 interrupted (Ctrl-C / SIGTERM: outputs are consistent, run again to finish).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from monai_fracture.commands.run_errors import run_guarded
from monai_fracture.commands.run_errors import usage as _usage
from monai_fracture.model.backend_table import backend_help

HELP = "score folders of DICOM/NIfTI/PNG/JPEG: results.csv, TID 1500 SR, key images, heatmaps"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from monai_fracture.reports.outputs import outputs_help  # the registry's list; imports no highdicom

    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="files or folders (walked recursively)")
    parser.add_argument("--out", "-o", type=Path, help="output folder (results.csv, manifest.json, dicom/)")
    parser.add_argument(
        "--model",
        help="bundle folder, model folder or model.pt/.ts/.onnx with model_info.json beside it "
        "(default: $MONAI_FRACTURE_MODEL, else the shipped FracAtlas model "
        "bundles/fracture_classification/models/fracatlas, else bundles/fracture_classification/models)",
    )
    parser.add_argument("--ct-model", help="model for CT series (volumes); without it CT series are skipped")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    parser.add_argument("--workers", type=int, default=0, help="decode/preprocess worker processes (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument(
        "--backend", default="auto", metavar="NAME",
        help=backend_help(),
    )
    parser.add_argument("--threshold", type=float, help="decision threshold on P(fracture) (default: the model's)")
    parser.add_argument("--max-image-mib", type=float, metavar="MIB",
                        help="memory one image (a file or a series volume) may take to decode; larger ones fail as "
                        "over_memory_budget (default 2048, or MONAI_FRACTURE_MAX_IMAGE_MIB; docs/security.md)")
    parser.add_argument("--heatmaps", action="store_true", help="write Grad-CAM overlays of positive images as DICOM SC "
                        "(same as adding sc to --outputs)")
    parser.add_argument("--outputs", metavar="LIST", help=outputs_help())
    parser.add_argument("--no-dicom", action="store_true", help="write results.csv and manifest.json only")
    parser.add_argument("--shard", metavar="I/N", help="score shard I of N (0-based; split by study)")
    parser.add_argument("--merge", type=Path, metavar="DIR", help="merge results.shard-*-of-N.csv in DIR and exit")
    parser.add_argument("--report", action="store_true",
                        help="also write DIR/report.html: one self-contained page with counts, results table, "
                        "Grad-CAM thumbnails of the highest P(fracture), and the ROC curve with --labels")
    parser.add_argument("--labels", type=Path, metavar="CSV",
                        help="ground truth for --report: CSV with a label column (0/1) and path (relative to "
                        "the CSV) or sop_uid, e.g. the labels.csv demo-data writes")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar; without either flag: a bar on a terminal, else a log line every "
                        "$MONAI_FRACTURE_PROGRESS_S seconds (default 10) with count, rate and ETA")
    from monai_fracture.scoring import ray_engine

    ray_engine.add_arguments(parser)
    from monai_fracture.commands import score_dicomweb

    score_dicomweb.add_arguments(parser)


def import_monai_without_deploy() -> None:
    """Import MONAI for scoring without the MONAI Deploy App SDK (about 0.5 s and 150 MB less).

    ``monai/__init__.py`` imports every subpackage found under ``monai/`` (``load_submodules``),
    and the MONAI Deploy App SDK installs itself there as ``monai.deploy``, bringing holoscan
    and cupy, which scoring never uses. ``load_submodules`` skips names already in
    ``sys.modules``, and Python's import system answers a name whose ``sys.modules`` entry is
    ``None`` with ``ModuleNotFoundError`` (which MONAI's package walk records and passes over).
    So ``monai.deploy`` is set to ``None`` while MONAI initialises and removed again afterwards:
    a later ``import monai.deploy`` in this process (the deploy app, tests) works as usual.
    Does nothing when MONAI is already imported.
    """
    if "monai" in sys.modules:
        return
    placed = "monai.deploy" not in sys.modules
    if placed:
        sys.modules["monai.deploy"] = None  # type: ignore[assignment]
    try:
        import monai  # noqa: F401
    finally:
        if placed and sys.modules.get("monai.deploy", False) is None:
            del sys.modules["monai.deploy"]


def run(args: argparse.Namespace) -> int:
    from monai_fracture.startup import import_monai_for_scoring

    import_monai_for_scoring()  # this process only scores: skip MONAI's training/plotting imports
    from monai_fracture.scoring import merge_shards, parse_shard, score_paths

    if args.merge is not None:
        try:
            path = merge_shards(args.merge)
        except (FileNotFoundError, ValueError) as err:
            return _usage(str(err))
        print(path)
        return 0
    if not args.inputs:
        return _usage("give at least one INPUT file or folder")
    if args.out is None:
        return _usage("--out DIR is required")
    if args.max_image_mib is not None:  # read by the reader in this process and in the workers it starts
        if not args.max_image_mib > 0:
            return _usage("--max-image-mib must be positive")
        os.environ["MONAI_FRACTURE_MAX_IMAGE_MIB"] = repr(args.max_image_mib)
    if args.batch_size < 1 or args.workers < 0:
        return _usage("--batch-size must be >= 1 and --workers >= 0")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        return _usage("--threshold must lie in [0, 1]")
    if args.labels is not None and not args.report:
        return _usage("--labels is used by --report; add --report")
    if args.labels is not None:
        from monai_fracture.scoring.report import LabelsError, load_label_table

        try:  # a bad labels file is reported before the run, not after it
            load_label_table(args.labels)
        except LabelsError as err:
            return _usage(str(err))
    from monai_fracture.commands import score_dicomweb

    if score_dicomweb.wants_dicomweb(args):
        return score_dicomweb.run(args)
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        return _usage(f"input not found: {missing[0]}")
    try:
        shard = parse_shard(args.shard)
        from monai_fracture.reports import parse_outputs

        outputs = parse_outputs(args.outputs, heatmaps=args.heatmaps)
        from monai_fracture.scoring.ray_engine import engine_from_arguments

        engine = engine_from_arguments(args)
    except ValueError as err:
        return _usage(str(err))
    if args.progress is None:  # off a terminal, progress comes as log lines: show them without -v
        logging.getLogger("monai_fracture.progress").setLevel(logging.INFO)
    summary = run_guarded(args.out, lambda: score_paths(
        args.inputs,
        args.out,
        model=args.model,
        ct_model=args.ct_model,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        threshold=args.threshold,
        heatmaps=args.heatmaps,
        write_dicom=not args.no_dicom,
        shard=shard,
        progress=args.progress,
        backend=args.backend,
        outputs=outputs,
        engine=engine,
    ))
    if isinstance(summary, int):
        return summary
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    print(f"{summary.results_csv} ({counts}){' [interrupted]' if summary.interrupted else ''}")
    if args.report and (summary.interrupted or summary.results_csv.name != "results.csv"):
        logger.warning("no report.html: the run is %s", "interrupted" if summary.interrupted else "one shard of several")
    elif args.report:
        from monai_fracture.scoring.report import LabelsError, write_run_report

        try:
            print(write_run_report(summary.out_dir, labels_csv=args.labels, device=args.device))
        except LabelsError as err:
            return _usage(str(err))
    return summary.exit_code
