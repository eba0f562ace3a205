"""Package a finished FracAtlas training run as the bundle's shipped model (weights, model_info.json, exports).

A cross-validated recipe (``benchmarks.fracatlas_cv``): the full fit (or one fold's network), the
threshold and the reported figures from the recipe's pooled out-of-fold (OOF) predictions
(``benchmarks.fracatlas_oof`` writes ``summary.json``), and the heatmap recipe chosen for it
(``benchmarks.localisation_report --out``; ``--heatmap`` names the row)::

    .venv/bin/python -m benchmarks.ship_fracatlas benchmarks/out/cv/lite0_320_box0.2/full \
        --oof benchmarks/results/fracatlas_cv/lite0_320_box0.2/summary.json \
        --heatmap gradcam@last --heatmap-report docs/validation/localisation_box.json --version 0.2.0

A single-split run (``benchmarks.fracatlas``, the first shipped model): the threshold chosen on its
validation fold::

    .venv/bin/python -m benchmarks.ship_fracatlas benchmarks/out/fracatlas/lite0_224 \
        --to bundles/fracture_classification/models/fracatlas --version 0.1.0

Both write ``model.pt`` (state dict) and ``model_info.json``; ``--export`` adds ONNX and TorchScript
(each checked against the PyTorch probabilities).

New OOF figures for weights already shipped (a fold finished after the full fit): ``--info-only``
rewrites ``model_info.json`` (and ``--metadata``'s ``eval_metrics``) only. Its source may be the
shipped package itself, whose training record stands in for the run folder's ``fold.json``, so
the refresh does not depend on an ignored run folder surviving::

    .venv/bin/python -m benchmarks.ship_fracatlas bundles/fracture_classification/models/fracatlas --info-only \
        --oof benchmarks/results/fracatlas_cv/lite0_320_box0.2/summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.fracatlas_cv import FULL_FIT
from monai_fracture.model.gradcam import check_heatmap_layers
from monai_fracture.model.package import MODEL_INFO, MODEL_WEIGHTS, ModelInfo, safe_torch_load, save_model
from monai_fracture.networks import build_network

FRACATLAS_CITATION = (
    "Abedeen I., Rahman M.A., Prottyasha F.Z., Ahmed T., Chowdhury T.M., Shatabda S. FracAtlas: A Dataset for "
    "Fracture Classification, Localization and Segmentation of Musculoskeletal Radiographs. Scientific Data 10, "
    "521 (2023). doi:10.1038/s41597-023-02432-4"
)


def heatmap_entry(spec: str, report: Path | None) -> dict:
    """``METHOD@LAYER[+LAYER][,option]`` (``benchmarks.localisation`` syntax) -> ``ModelInfo.heatmap``, with its figures."""
    from benchmarks.localisation import parse_recipe
    from monai_fracture.model.gradcam import heatmap_settings

    settings = parse_recipe(spec)
    if not settings:
        raise SystemExit("--heatmap needs a recipe (METHOD@LAYER...), not 'default': leave it out for the defaults")
    entry = {"method": settings["heatmap_method"], "layers": list(settings["heatmap_layer"] or []) or None,
             "fusion": settings["heatmap_fusion"], "flip": settings["heatmap_flip"], "scale": settings["heatmap_scale"],
             "recipe": spec}
    if entry["layers"] is None:
        del entry["layers"]  # the family's layers
    heatmap_settings(entry)  # the check model loading applies: a bad recipe never reaches disk
    if report is not None:
        figures = json.loads(report.read_text())
        row = next((r for r in figures["recipes"] if r["recipe"] == spec), None)
        if row is None:
            raise SystemExit(f"{report}: no row for heatmap recipe {spec!r}")
        if figures.get("chosen") != spec:
            print(f"note: {report} chose {figures.get('chosen')!r} by its rule, not {spec!r}")
        else:
            entry["chosen_by"] = figures["rule"]
        entry["localisation"] = {k: row[k] for k in ("n", "hit_0.0", "hit_0.0_ci95", "hit_0.1", "hit_0.1_ci95",
                                                      "energy_mean") if k in row}
        entry["localisation"]["measured_on"] = (f"FracAtlas validation true positives with boxes "
                                                f"({figures.get('checkpoint') or figures.get('model')}); {report}")
    return entry


def cv_run_meta(run_dir: Path) -> dict | None:
    """``fold.json`` of a ``benchmarks.fracatlas_cv`` run folder, or the same record out of a package it made."""
    if (run_dir / "fold.json").is_file():
        return json.loads((run_dir / "fold.json").read_text())
    if not (run_dir / MODEL_INFO).is_file():
        return None
    trained = ModelInfo.load(run_dir / MODEL_INFO).training_data or {}
    recipe = dict(trained.get("recipe") or {})
    if "fold" not in recipe:  # a single-split run's package: no cross-validated recipe to refresh
        return None
    fold = recipe.pop("fold")
    return {"fold": fold, "recipe": recipe, "train_images": trained["train_images"],
            "train_with_boxes": trained["train_fractured_with_boxes"], "cpu_s": trained["cpu_s"],
            "history": trained["history"]}


def cv_model_info(meta: dict, oof_summary: Path, version: str) -> tuple[dict, ModelInfo]:
    """The network kwargs and ``ModelInfo`` of a ``benchmarks.fracatlas_cv`` full fit (or fold): ``cv_run_meta``'s record."""
    from benchmarks.fracatlas_cv import NORMALIZATION

    summary = json.loads(oof_summary.read_text())
    recipe = meta["recipe"]
    if summary.get("recipe") != recipe:
        raise SystemExit(f"{oof_summary} pools another recipe than fold {meta['fold']}'s run")
    pooled = summary["pooled"]
    folds = summary["folds_present"]
    scope = (f"all {recipe['folds']} folds" if summary["complete"]
             else f"fold(s) {', '.join(map(str, folds))} only (more pending)")
    network_kwargs = {"name": recipe["network"], "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    trained_on = ("every usable development image (full fit)" if meta["fold"] == FULL_FIT
                  else f"grouped fold {meta['fold']}'s training part")
    info = ModelInfo(
        name="fracture_classification_fracatlas",
        version=version,
        network=network_kwargs,
        preprocessing={"modality": "xr", "size": recipe["size"], "normalization": NORMALIZATION},
        threshold=float(pooled["threshold"]),
        threshold_rule=(f"Youden's J maximum on the recipe's pooled out-of-fold probabilities ({scope}; "
                        "benchmarks.fracatlas_oof), placed midway to the next lower score; never on images "
                        "the reporting model trained on"),
        modality="xr",
        training_data={
            "dataset": "FracAtlas (development part), CC BY 4.0",
            "citation": FRACATLAS_CITATION,
            "trained_on": trained_on,
            "train_images": meta["train_images"],
            "train_fractured_with_boxes": meta["train_with_boxes"],
            "split": f"StratifiedGroupKFold(n_splits={recipe['folds']}, shuffle, seed={recipe['seed']}) on 'group'",
            "recipe": {**recipe, "fold": meta["fold"]},  # -1: the full fit, no validation fold of its own
            "cpu_s": meta["cpu_s"],
            "history": meta["history"],
        },
        metrics={
            "validation": pooled,
            "validation_what": f"pooled out-of-fold predictions of the same recipe, {scope}: models that never saw "
                               "the images they scored (this network is trained like them on more images)",
            "oof_folds": folds,
            "oof_complete": summary["complete"],
            "oof_fold_roc_auc": summary["fold_roc_auc"],
            "validation_without_hardware": summary["without_hardware"],
            "validation_by_region": summary["by_region"],
            "calibration_ece": pooled["ece"],
        },
        epoch=recipe["epochs"],
    )
    return network_kwargs, info


def eval_metrics(summary: dict) -> dict[str, float | int]:
    """The bundle's ``metadata.json`` ``eval_metrics`` from a pooled OOF summary (rounded as quoted)."""
    pooled, clean = summary["pooled"], summary["without_hardware"]
    low, high = pooled.get("roc_auc_ci95", (None, None))
    figures = {
        "fracatlas_oof_folds": len(summary["folds_present"]),
        "fracatlas_oof_images": pooled["n"],
        "fracatlas_oof_roc_auc": pooled["roc_auc"],
        "fracatlas_oof_roc_auc_ci95_low": low,
        "fracatlas_oof_roc_auc_ci95_high": high,
        "fracatlas_oof_pr_auc": pooled["pr_auc"],
        "fracatlas_oof_sensitivity_at_specificity_0.80": pooled["sensitivity_at_specificity_0.80"],
        "fracatlas_oof_sensitivity_at_specificity_0.90": pooled["sensitivity_at_specificity_0.90"],
        "fracatlas_oof_ece": pooled["ece"],
        "fracatlas_oof_without_hardware_roc_auc": clean["roc_auc"],
        "fracatlas_oof_threshold": pooled["threshold"],
        "fracatlas_oof_sensitivity_at_threshold": pooled["sensitivity"],
        "fracatlas_oof_specificity_at_threshold": pooled["specificity"],
    }
    # an undefined figure (no interval without a bootstrap, no ROC-AUC with one class) is left out, not invented
    return {k: v if isinstance(v, int) else round(float(v), 4) for k, v in figures.items() if v is not None}


def write_eval_metrics(metadata: Path, summary: dict) -> None:
    """Replace ``eval_metrics`` in a bundle's metadata.json, keeping every other key and its order."""
    meta = json.loads(metadata.read_text())
    meta["eval_metrics"] = eval_metrics(summary)
    metadata.write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a benchmarks.fracatlas run, a benchmarks.fracatlas_cv full/foldK "
                                                   "folder, or (--info-only) a package made from one")
    parser.add_argument("--to", type=Path, default=Path("bundles/fracture_classification/models/fracatlas"))
    parser.add_argument("--version", help="the package's version (with --info-only: the shipped one's if not given)")
    parser.add_argument("--oof", type=Path, help="benchmarks.fracatlas_oof summary.json of the recipe (cv runs)")
    parser.add_argument("--heatmap", help="the model's heatmap recipe (benchmarks.localisation syntax)")
    parser.add_argument("--heatmap-report", type=Path, help="benchmarks.localisation_report --out JSON with its row")
    parser.add_argument("--export", action="store_true", help="also write model.onnx and model.ts, checked")
    parser.add_argument("--info-only", action="store_true",
                        help="rewrite model_info.json only (new OOF figures for the same weights): the weights "
                             "in --to must be run_dir's; their exports stay valid")
    parser.add_argument("--metadata", type=Path,
                        help="also write the OOF figures into this bundle metadata.json's eval_metrics (cv runs)")
    args = parser.parse_args(argv)
    if args.metadata and args.oof is None:
        parser.error("--metadata takes its figures from --oof SUMMARY")
    packaged = not (args.run_dir / "fold.json").is_file() and (args.run_dir / MODEL_INFO).is_file()
    if packaged and not args.info_only:
        parser.error(f"{args.run_dir} is a package: it can only be the source of --info-only (same weights)")
    meta = cv_run_meta(args.run_dir)
    if packaged and meta is None:
        parser.error(f"{args.run_dir}: its model_info.json records no benchmarks.fracatlas_cv recipe to refresh")
    before = ModelInfo.load(args.to / MODEL_INFO) if args.info_only else None
    version = args.version or (before.version if before is not None else None)
    if version is None:
        parser.error("--version: name the new package's version")
    if meta is not None:
        if args.oof is None:
            parser.error("a benchmarks.fracatlas_cv run needs --oof SUMMARY (its threshold and figures)")
        network_kwargs, info = cv_model_info(meta, args.oof, version)
    else:
        network_kwargs, info = single_split_model_info(args.run_dir, version)
    if args.heatmap_report and not args.heatmap:
        parser.error("--heatmap-report documents the recipe given with --heatmap: name it")
    network = build_network(**network_kwargs, pretrained=False)
    network.load_state_dict(safe_torch_load(args.run_dir / "model.pt"), strict=True)
    if args.heatmap:
        info.heatmap = heatmap_entry(args.heatmap, args.heatmap_report)
        check_heatmap_layers(network, info.heatmap)
    if args.info_only:
        shipped = safe_torch_load(args.to / MODEL_WEIGHTS)
        if shipped.keys() != network.state_dict().keys() or not all(
                shipped[k].equal(v) for k, v in network.state_dict().items()):
            raise SystemExit(f"--info-only: {args.to / MODEL_WEIGHTS} holds other weights than {args.run_dir}")
        info.exports = before.exports  # same weights: the checked exports still hold
        if not args.heatmap:  # same weights: the heatmap recipe chosen for them still holds
            info.heatmap = before.heatmap
        info.save(args.to / MODEL_INFO)
        print(f"rewrote {args.to / MODEL_INFO}, threshold {info.threshold:.4f}")
        if args.metadata:
            write_eval_metrics(args.metadata, json.loads(args.oof.read_text()))
        return 0
    for stale in ("model.onnx", "model.ts"):  # exports of the previous weights must not survive beside new ones
        (args.to / stale).unlink(missing_ok=True)
    folder = save_model(args.to, network, info)
    size_mb = (folder / "model.pt").stat().st_size / 2**20
    print(f"wrote {folder} (model.pt {size_mb:.1f} MB), threshold {info.threshold:.4f}")
    if args.metadata:
        write_eval_metrics(args.metadata, json.loads(args.oof.read_text()))
    if args.export:
        from monai_fracture.model.export import export_model

        for fmt, path in export_model(folder, ["onnx", "torchscript"]).items():
            print(f"{fmt}: {path} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0


def single_split_model_info(run_dir: Path, version: str) -> tuple[dict, ModelInfo]:
    """The network kwargs and ``ModelInfo`` of a ``benchmarks.fracatlas`` run (threshold from its validation fold)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    recipe, overall = summary["recipe"], summary["metrics"]["overall"]
    network_kwargs = {"name": recipe["network"], "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    info = ModelInfo(
        name="fracture_classification_fracatlas",
        version=version,
        network=network_kwargs,
        preprocessing={"modality": "xr", "size": recipe["size"], "normalization": "tf"},
        threshold=float(overall["threshold"]),
        threshold_rule="Youden's J maximum on the group-aware validation fold (ties: higher threshold)",
        modality="xr",
        training_data={
            "dataset": "FracAtlas (development part), CC BY 4.0",
            "citation": FRACATLAS_CITATION,
            **summary["data"],
            "recipe": recipe,
        },
        metrics={"validation": overall, "validation_flip_tta": summary["metrics_tta"]["overall"],
                 "validation_without_hardware": summary["metrics"]["without_hardware"],
                 "calibration_ece": overall["ece"]},
        epoch=recipe["epochs"],
    )
    return network_kwargs, info


if __name__ == "__main__":
    raise SystemExit(main())
