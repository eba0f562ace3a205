"""Pool the out-of-fold (OOF) predictions of a ``benchmarks.fracatlas_cv`` recipe into one report.

    .venv/bin/python -m benchmarks.fracatlas_oof lite0_320_box [--column probability_tta]

Reads ``benchmarks/results/fracatlas_cv/NAME/fold*_oof.csv`` (the committed files) and writes
``summary.json`` beside them: pooled ROC-AUC with a 95% CI from a bootstrap over near-duplicate
groups, PR-AUC, sensitivity at specificity 0.80 and 0.90, ECE, the threshold chosen on the pooled
OOF probabilities (Youden's J, the shipped rule), each fold's ROC-AUC (spread) and its
sensitivity/specificity at a threshold chosen on the *other* folds' OOF probabilities, the
subset without hardware and each body region. With fewer than all folds it says so.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from benchmarks.metrics import binary_report
from monai_fracture.training.metrics import binary_scores, choose_threshold, finite_or_none

logger = logging.getLogger("benchmarks.fracatlas_oof")
RESULTS_ROOT = Path("benchmarks/results/fracatlas_cv")


def load_oof(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("fold*_oof.csv"))
    if not files:
        raise FileNotFoundError(f"{folder}: no fold*_oof.csv (run benchmarks.fracatlas_cv first)")
    oof = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if oof["path"].duplicated().any():
        raise ValueError(f"{folder}: an image appears in more than one fold's OOF file")
    return oof


def fold_metas(folder: Path) -> list[dict]:
    """Each finished fold's ``foldK.json`` (recipe, history, CPU seconds), in fold order; other JSON files ignored."""
    files = [f for f in folder.glob("fold*.json") if f.stem[4:].isdigit()]
    return [json.loads(f.read_text()) for f in sorted(files, key=lambda f: int(f.stem[4:]))]


def _subset(part: pd.DataFrame, column: str, threshold: float, bootstrap: int) -> dict:
    return binary_report(part["label"].to_numpy(), part[column].to_numpy(), threshold=threshold,
                         groups=part["group"].to_numpy(), bootstrap=bootstrap)


def oof_report(oof: pd.DataFrame, column: str = "probability", folds: int = 5, bootstrap: int = 1000) -> dict:
    """Pooled, per-fold, no-hardware and per-region figures of OOF probabilities in ``column``."""
    labels, probs = oof["label"].to_numpy(), oof[column].to_numpy()
    pooled = binary_report(labels, probs, groups=oof["group"].to_numpy(), bootstrap=bootstrap)
    per_fold = {}
    for fold, part in oof.groupby("fold"):
        others = oof[oof["fold"] != fold]
        entry = binary_report(part["label"].to_numpy(), part[column].to_numpy(), bootstrap=0)
        if len(others):  # a threshold the fold has never seen: chosen on the other folds' OOF probabilities
            threshold = choose_threshold(others[column].to_numpy(), others["label"].to_numpy()).threshold
            scores = binary_scores(part[column].to_numpy(), part["label"].to_numpy(), threshold)
            entry["threshold_from_other_folds"] = threshold
            entry.update({f"{k}_at_other_folds_threshold": finite_or_none(scores[k])
                          for k in ("sensitivity", "specificity")})
        per_fold[int(fold)] = entry
    aucs = [v["roc_auc"] for v in per_fold.values() if v["roc_auc"] is not None]
    clean = oof[oof["hardware"] == 0]
    return {
        "screening_point": screening_point(labels, probs),
        "column": column,
        "folds_present": sorted(per_fold),
        "complete": len(per_fold) == folds,
        "pooled": pooled,
        "fold_roc_auc": {"mean": float(np.mean(aucs)), "sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else None,
                         "min": float(np.min(aucs)), "max": float(np.max(aucs))},
        "per_fold": per_fold,
        "without_hardware": _subset(clean, column, pooled["threshold"], bootstrap),
        "by_region": {region: _subset(part, column, pooled["threshold"], bootstrap)
                      for region, part in oof.groupby("region")},
    }


def screening_point(labels: np.ndarray, probs: np.ndarray, specificity: float = 0.80) -> dict:
    """The operating point behind "sensitivity at specificity 0.80": the lowest threshold whose OOF specificity
    stays >= ``specificity`` (midway to the next lower score, like the shipped Youden threshold)."""
    if len(labels) == 0 or labels.min() == labels.max():
        return {"specificity_target": specificity, "threshold": None, "sensitivity": None, "specificity": None}
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    ok = np.flatnonzero(((1 - fpr) >= specificity) & np.isfinite(thresholds))
    if not len(ok):  # ties at the top score: no finite threshold keeps the specificity
        return {"specificity_target": specificity, "threshold": None, "sensitivity": None, "specificity": None}
    index = int(ok[-1])
    lower = float(thresholds[index + 1]) if index + 1 < len(thresholds) else 0.0
    return {"specificity_target": specificity, "threshold": (float(thresholds[index]) + lower) / 2.0,
            "sensitivity": float(tpr[index]), "specificity": float(1 - fpr[index])}


def markdown_row(name: str, report: dict, cpu_s: float | None = None) -> str:
    """One line of the table of tries in docs/validation.md."""
    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    p, f, nh = report["pooled"], report["fold_roc_auc"], report["without_hardware"]
    low, high = p.get("roc_auc_ci95", (None, None))
    cpu = f"{cpu_s / 60:.0f}" if cpu_s else "–"
    spread = " (one fold)" if f["sd"] is None else f" ± {f['sd']:.3f}"
    return (f"| {name} | {','.join(map(str, report['folds_present']))} | {fmt(p['roc_auc'])} ({fmt(low)}–{fmt(high)}) | "
            f"{fmt(f['mean'])}{spread} | {fmt(p['pr_auc'])} | {fmt(p.get('sensitivity_at_specificity_0.80'))} | "
            f"{fmt(p.get('sensitivity_at_specificity_0.90'))} | {fmt(p['ece'])} | {fmt(nh['roc_auc'])} | {cpu} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="recipe name (folder under benchmarks/results/fracatlas_cv)")
    parser.add_argument("--results", type=Path, default=RESULTS_ROOT)
    parser.add_argument("--column", default="probability", choices=["probability", "probability_tta"])
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = args.results / args.name
    oof = load_oof(folder)
    metas = fold_metas(folder)
    folds = metas[0]["recipe"]["folds"] if metas else 5
    report = oof_report(oof, args.column, folds=folds, bootstrap=args.bootstrap)
    report["cpu_s"] = round(sum(m.get("cpu_s", 0.0) for m in metas), 1)
    report["recipe"] = metas[0]["recipe"] if metas else None
    suffix = "" if args.column == "probability" else "_tta"
    (folder / f"summary{suffix}.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    if not report["complete"]:
        logger.warning("only folds %s of %d: not a cross-validated figure yet", report["folds_present"], folds)
    logger.info("%s", markdown_row(args.name + suffix, report, report["cpu_s"]))
    point = report["screening_point"]
    if point["threshold"] is not None:
        logger.info("threshold %.3f (Youden's J); screening point: threshold %.3f gives sensitivity %.3f, "
                    "specificity %.3f", report["pooled"]["threshold"], point["threshold"], point["sensitivity"],
                    point["specificity"])
    from benchmarks.fracatlas_docs import regions  # the page's table (fracatlas_docs imports this module)

    print(regions(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
