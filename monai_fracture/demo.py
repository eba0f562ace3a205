"""``make demo``: the main job end to end on the embedded synthetic data, no dataset or internet needed.

1. trains the bundle exactly as a user would type it (``python -m monai.bundle run training``),
   which generates the synthetic DICOM training set on first use;
2. writes a fresh, unseen synthetic DICOM folder (another seed, other patients);
3. scores it with ``monai-fracture score`` and compares the results with the ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "fracture_classification"
logger = logging.getLogger("monai_fracture.demo")


def _run(cmd: list[str]) -> None:
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)


def train_bundle(extra_overrides: list[str]) -> None:
    """Run the bundle's training as documented in the README."""
    _run(
        [
            sys.executable, "-m", "monai.bundle", "run", "training",
            "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
            "--config_file", str(BUNDLE / "configs" / "train.json"),
            "--logging_file", str(BUNDLE / "configs" / "logging.conf"),
            "--bundle_root", str(BUNDLE),
            "--synthetic", "True",
            *extra_overrides,
        ]
    )


def score_unseen(out_dir: Path, n_images: int, seed: int) -> dict:
    """Generate unseen studies, score them through the CLI, and measure against ground truth."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    studies = out_dir / "unseen_studies"
    scored = out_dir / "scored"
    logger.info("step 2/3: writing %d unseen synthetic images (other seed, other patients)", n_images)
    if not (studies / "labels.csv").is_file():
        _run([sys.executable, "-m", "monai_fracture", "demo-data", str(studies), "--n", str(n_images), "--seed", str(seed)])
    logger.info("step 3/3: scoring them with monai-fracture score and comparing with the ground truth")
    # exit code 1 means "some inputs failed": the demo folder has none, so any non-zero is an error
    _run([sys.executable, "-m", "monai_fracture", "score", str(studies), "--out", str(scored), "--model", str(BUNDLE / "models")])

    truth = pd.read_csv(studies / "labels.csv")
    truth["abs_path"] = [str((studies / p).resolve()) for p in truth["path"]]
    results = pd.read_csv(scored / "results.csv")
    results["abs_path"] = [str(Path(p).resolve()) for p in results["path"]]
    merged = truth.merge(results, on="abs_path", how="inner")
    merged = merged[merged["status"] == "scored"]
    summary = {
        "images_scored": int(len(merged)),
        "roc_auc": float(roc_auc_score(merged["label"], merged["probability"])) if merged["label"].nunique() == 2 else None,
        "accuracy_at_threshold": float((merged["prediction"].astype(int) == merged["label"]).mean()) if len(merged) else None,
        "results_csv": str(scored / "results.csv"),
        "dicom_outputs": str(scored / "dicom"),
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo_output", help="where scoring outputs go")
    parser.add_argument("--n-unseen", type=int, default=60, help="synthetic images to score after training")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the unseen set (training uses the bundle's)")
    parser.add_argument("--skip-training", action="store_true", help="reuse the bundle's existing models/model.pt")
    parser.add_argument("override", nargs="*", help="extra bundle overrides, e.g. --train#trainer#max_epochs 2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    start = time.perf_counter()
    if not (args.skip_training and (BUNDLE / "models" / "model.pt").is_file()):
        logger.info("step 1/3: training the bundle on synthetic DICOM (generated on first use); "
                    "progress lines show iterations done, rate and ETA")
        train_bundle(args.override)
    trained = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = score_unseen(args.out, args.n_unseen, args.seed)
    summary["train_seconds"] = round(trained - start, 1)
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("demo summary:\n%s", json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
