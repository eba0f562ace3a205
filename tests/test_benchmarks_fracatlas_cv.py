"""The cross-validation harness on a tiny FracAtlas-shaped folder: cache, interruption and resume, OOF report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmarks import fracatlas_cv as cv
from benchmarks.common import cpu_model
from benchmarks.fracatlas_docs import regions
from benchmarks.fracatlas_oof import load_oof, oof_report
from monai_fracture.training.metrics import choose_threshold, roc_auc


@pytest.fixture(scope="module")
def tiny_fracatlas(tmp_path_factory):
    """20 greyscale JPEGs (8 fractured, with a box over a bright bar), 2 of them a near-duplicate pair, one truncated."""
    root = tmp_path_factory.mktemp("fracatlas")
    (root / "annotations" / "yolo").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(21):
        label = int(i < 8)
        height, width = (80, 60) if i % 2 else (60, 80)
        pixels = rng.integers(40, 90, size=(height, width)).astype(np.uint8)
        name = f"IMG{i:07d}"
        if label:
            pixels[20:40, 10:30] = 250
            (root / "annotations" / "yolo" / f"{name}.txt").write_text(
                f"0 {20 / width} {30 / height} {20 / width} {20 / height}\n")
        folder = root / "images" / ("fractured" if label else "not_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        if i == 20:  # a truncated file the reader refuses
            path.write_bytes(path.read_bytes()[:200])
        rows.append({"path": str(path.relative_to(root)), "label": label, "region": "hand" if i % 3 else "leg",
                     "hardware": int(i == 1), "group": 1 if i == 2 else i, "width": width, "height": height})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_cache_and_box_files(tiny_fracatlas, tmp_path):
    frame, images = cv.load_cache(tiny_fracatlas, 32, tmp_path, workers=1)
    assert images.shape == (21, 32, 32) and images.dtype == np.uint8
    usable = cv.usable_frame(frame, tiny_fracatlas)
    assert len(usable) == 20 and "IMG0000020" not in "".join(usable["path"])
    assert frame.loc[frame["cache_row"] < 0, "reject_reason"].str.len().gt(0).all()
    ds = cv.FoldImages(images, usable, 32, augment=False, seed=0)
    image, label, mask = ds[0]
    assert image.shape == (3, 32, 32) and label == 1 and 0 < int(mask.sum()) < 32 * 32
    bright = torch.as_tensor(np.array(images[usable["cache_row"][0]])) > 200
    assert bool(mask.bool()[bright].all())  # the box covers the bright bar in the cached image
    assert int(ds[19][2].sum()) == 0  # no box for a not-fractured image


def test_each_epoch_draws_new_augmentations(tiny_fracatlas, tmp_path):
    frame, images = cv.load_cache(tiny_fracatlas, 32, tmp_path, workers=1)
    ds = cv.FoldImages(images, cv.usable_frame(frame, tiny_fracatlas), 32, augment=True, seed=0)
    first, second = (next(iter(cv.epoch_loader(ds, list(range(8)), 8, workers=1)))[0] for _ in range(2))
    assert not torch.equal(first, second)  # same images, same order: only the augmentation differs


class Interrupted(Exception):
    pass


def test_killed_fold_resumes_mid_epoch_and_publishes(tiny_fracatlas, tmp_path, monkeypatch, caplog):
    frame, images = cv.load_cache(tiny_fracatlas, 32, tmp_path / "cache", workers=1)
    usable = cv.usable_frame(frame, tiny_fracatlas)
    recipe = cv.Recipe(size=32, epochs=2, batch_size=8, box_loss_weight=0.5, ema_decay=0.9)
    fold_dir = tmp_path / "run" / "fold0"
    steps_per_epoch = len(cv.fold_indices(usable, recipe.folds, recipe.seed, 0)[0]) // recipe.batch_size

    original_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:  # in the second step of the second epoch
            raise Interrupted
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(Interrupted):
        cv.train_fold(recipe, usable, images, 0, fold_dir, checkpoint_steps=1, workers=0)
    monkeypatch.setattr(torch.optim.AdamW, "step", original_step)
    state = torch.load(fold_dir / "checkpoint.pt", weights_only=True)
    assert (int(state["epoch"]), int(state["step"])) == (1, 1)
    assert json.loads(state["cpus"]) == [cpu_model()]
    del state["cpus"]  # as a checkpoint written before CPUs were recorded: its sitting's CPU is unknown
    torch.save(state, fold_dir / "checkpoint.pt")

    with caplog.at_level("INFO", logger="benchmarks.fracatlas_cv"):
        oof = cv.train_fold(recipe, usable, images, 0, fold_dir, checkpoint_steps=1, workers=0)
    assert "resuming at epoch 2 step 1" in caplog.text
    state = torch.load(fold_dir / "checkpoint.pt", weights_only=True)
    # every optimisation step ran exactly once across the two sittings
    assert state["schedule"]["last_epoch"] == recipe.epochs * steps_per_epoch
    assert [h["epoch"] for h in json.loads(state["history"])] == [1, 2]
    assert oof["probability"].between(0, 1).all() and len(oof) == len(usable) - len(
        cv.fold_indices(usable, recipe.folds, recipe.seed, 0)[0])

    with pytest.raises(RuntimeError, match="another recipe"):
        cv.train_fold(cv.Recipe(size=32, epochs=3, batch_size=8), usable, images, 0, fold_dir, 1, 0)

    published = cv.publish("tiny", 0, fold_dir, results_root=tmp_path / "results", bootstrap=20)
    meta = json.loads((published / "fold0.json").read_text())
    assert meta["fold"] == 0 and meta["cpu_s"] > 0 and meta["train_with_boxes"] > 0
    assert meta["cpus"] == ["not recorded", cpu_model()]
    assert load_oof(published)["path"].tolist() == oof["path"].tolist()


def test_full_fit_trains_on_every_image_and_holds_nothing_out(tiny_fracatlas, tmp_path):
    frame, images = cv.load_cache(tiny_fracatlas, 32, tmp_path / "cache", workers=1)
    usable = cv.usable_frame(frame, tiny_fracatlas)
    recipe = cv.Recipe(size=32, epochs=1, batch_size=8)
    out = cv.train_fold(recipe, usable, images, cv.FULL_FIT, tmp_path / "full", checkpoint_steps=0, workers=0)
    meta = json.loads((tmp_path / "full" / "fold.json").read_text())
    assert len(out) == 0 and not (tmp_path / "full" / "oof.csv").exists()
    assert meta["train_images"] == len(usable) and meta["val_images"] == 0
    assert (tmp_path / "full" / "model.pt").is_file() and "val_auc" not in meta["history"][0]


def test_oof_report_thresholds_come_from_other_folds():
    rng = np.random.default_rng(1)
    n = 300
    labels = (rng.random(n) < 0.3).astype(int)
    probs = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
    oof = pd.DataFrame({"path": [f"p{i}" for i in range(n)], "label": labels, "group": np.arange(n) // 2,
                        "region": np.where(np.arange(n) % 2, "hand", "leg"), "hardware": (np.arange(n) % 10 == 0),
                        "fold": np.arange(n) % 3, "probability": probs})
    report = oof_report(oof, folds=3, bootstrap=50)
    assert report["complete"] and report["folds_present"] == [0, 1, 2]
    assert report["pooled"]["roc_auc"] == pytest.approx(roc_auc(probs, labels))
    others = oof[oof["fold"] != 1]
    expected = choose_threshold(others["probability"], others["label"]).threshold
    assert report["per_fold"][1]["threshold_from_other_folds"] == pytest.approx(expected)
    assert report["without_hardware"]["n"] == int((oof["hardware"] == 0).sum())
    assert set(report["by_region"]) == {"hand", "leg"}
    assert 0 <= report["pooled"]["sensitivity_at_specificity_0.90"] <= report["pooled"]["sensitivity_at_specificity_0.80"]
    assert not oof_report(oof[oof["fold"] < 2], folds=3, bootstrap=0)["complete"]
    # the screening point is the operating point behind "sensitivity at specificity 0.80"
    point = report["screening_point"]
    called = probs >= point["threshold"]
    assert (~called[labels == 0]).mean() == pytest.approx(point["specificity"]) and point["specificity"] >= 0.80
    assert called[labels == 1].mean() == pytest.approx(point["sensitivity"])
    assert point["sensitivity"] == pytest.approx(report["pooled"]["sensitivity_at_specificity_0.80"])
    table = regions(report).splitlines()
    assert len(table) == 2 + 2 + 1 and table[-1].startswith("| **without hardware** |")


def test_a_full_fit_ships_with_the_oof_threshold_and_its_own_heatmap_recipe(tiny_fracatlas, tmp_path, capsys):
    """benchmarks.ship_fracatlas on a cv run: threshold and figures from the pooled OOF file, recipe in model_info."""
    from benchmarks import fracatlas_oof, ship_fracatlas
    from benchmarks.localisation import validation_frame
    from monai_fracture.model import Classifier

    frame, images = cv.load_cache(tiny_fracatlas, 32, tmp_path / "cache", workers=1)
    usable = cv.usable_frame(frame, tiny_fracatlas)
    recipe = cv.Recipe(size=32, epochs=1, batch_size=8)
    cv.train_fold(recipe, usable, images, 0, tmp_path / "run" / "fold0", checkpoint_steps=0, workers=0)
    cv.publish("tiny", 0, tmp_path / "run" / "fold0", results_root=tmp_path / "results", bootstrap=20)
    assert fracatlas_oof.main(["tiny", "--results", str(tmp_path / "results"), "--bootstrap", "20"]) == 0
    summary = json.loads((tmp_path / "results" / "tiny" / "summary.json").read_text())
    cv.train_fold(recipe, usable, images, cv.FULL_FIT, tmp_path / "run" / "full", checkpoint_steps=0, workers=0)

    shipped = tmp_path / "shipped"
    assert ship_fracatlas.main([str(tmp_path / "run" / "full"), "--to", str(shipped), "--version", "9.9.9",
                                "--oof", str(tmp_path / "results" / "tiny" / "summary.json"),
                                "--heatmap", "gradcam@last"]) == 0
    classifier = Classifier(shipped, backend="fp32")
    info = classifier.info
    assert classifier.threshold == pytest.approx(summary["pooled"]["threshold"])
    assert "fold(s) 0 only" in info.threshold_rule and info.metrics["oof_complete"] is False
    assert info.training_data["recipe"]["fold"] == cv.FULL_FIT and info.training_data["train_images"] == len(usable)
    assert (classifier.heatmap_method, classifier.heatmap_layer) == ("gradcam", ("last",))
    with pytest.raises(SystemExit, match="no validation fold"):
        validation_frame(tiny_fracatlas, shipped)
    # the docs' plots: pooled OOF at the pooled (shipped) threshold, heatmaps only from the fold's own network
    from benchmarks import fracatlas_report

    fold_model = tmp_path / "fold0_model"
    other_threshold = tmp_path / "other_threshold.json"
    other_threshold.write_text(json.dumps({**summary, "pooled": {**summary["pooled"], "threshold": 0.4321}}))
    assert ship_fracatlas.main([str(tmp_path / "run" / "fold0"), "--to", str(fold_model), "--version", "9.9.9-fold0",
                                "--oof", str(other_threshold)]) == 0  # packaged with another threshold
    figures = tmp_path / "figures"
    figures.mkdir()
    assert fracatlas_report.main([str(tmp_path / "results" / "tiny"), "--model", str(fold_model),
                                  "--data", str(tiny_fracatlas), "--out", str(figures)]) == 0
    assert {"roc_curve.png", "calibration.png", "confusion_matrix.png", "gradcam_errors.png"} <= {
        p.name for p in figures.iterdir()}
    assert json.loads((figures / "metrics.json").read_text())["threshold"] == pytest.approx(
        summary["pooled"]["threshold"])
    with pytest.raises(SystemExit):  # the full fit trained on every image: no heatmap of it may be shown
        fracatlas_report.main([str(tmp_path / "results" / "tiny"), "--model", str(shipped),
                               "--data", str(tiny_fracatlas), "--out", str(figures)])
    panel_files = {name: (figures / name).read_bytes() for name in ("gradcam_errors.png", "gradcam_errors.json")}
    (figures / "roc_curve.png").unlink()  # ... but its plots need no heatmap: --no-panel keeps the panel there
    assert fracatlas_report.main([str(tmp_path / "results" / "tiny"), "--model", str(shipped), "--no-panel",
                                  "--data", str(tiny_fracatlas), "--out", str(figures)]) == 0
    assert (figures / "roc_curve.png").is_file()
    assert {name: (figures / name).read_bytes() for name in panel_files} == panel_files
    panel = json.loads((figures / "gradcam_errors.json").read_text())
    assert panel["held_out_fold"] == 0 and panel["drawn_at_threshold"] == pytest.approx(
        summary["pooled"]["threshold"], abs=1e-4) and panel["model"].endswith("@9.9.9-fold0")
    # what can be compared of the full fit and the fold network: losses, ranks, calls on the fold's images
    from benchmarks import fracatlas_fullfit_check

    assert fracatlas_fullfit_check.main(["tiny", "--model", str(shipped), "--results", str(tmp_path / "results"),
                                         "--data", str(tiny_fracatlas)]) == 0
    check = json.loads((tmp_path / "results" / "tiny" / "fullfit_check.json").read_text())
    oof = load_oof(tmp_path / "results" / "tiny")
    [fold0] = check["per_fold"].values()
    assert check["folds_present"] == [0] and fold0["images"] == len(oof) == len(usable) // 5 + (len(usable) % 5 > 0)
    assert -1.0 <= fold0["spearman_full_fit_vs_fold_network"] <= 1.0
    assert fold0["called_positive_fold_network"] == int((oof["probability"] >= info.threshold).sum())
    losses = check["training_loss"]
    assert losses["full_fit"]["epochs"] == 1 and set(losses["folds"]) == {"0"}
    # new OOF figures for the same weights: model_info.json only, the weights must match
    summary["pooled"]["threshold"] = 0.4321
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(summary))
    weights = (shipped / "model.pt").read_bytes()
    assert ship_fracatlas.main([str(tmp_path / "run" / "full"), "--to", str(shipped), "--version", "9.9.9",
                                "--oof", str(newer), "--heatmap", "gradcam@last", "--info-only"]) == 0
    assert Classifier(shipped).threshold == pytest.approx(0.4321) and (shipped / "model.pt").read_bytes() == weights
    # ... also with the package as its own source (the run folder is ignored and need not survive)
    before = json.loads((shipped / "model_info.json").read_text())
    summary["pooled"]["threshold"] = 0.3456
    newest = tmp_path / "newest.json"
    newest.write_text(json.dumps(summary))
    assert ship_fracatlas.main([str(shipped), "--to", str(shipped), "--oof", str(newest), "--info-only"]) == 0
    after = json.loads((shipped / "model_info.json").read_text())
    assert after["threshold"] == pytest.approx(0.3456) and (shipped / "model.pt").read_bytes() == weights
    assert {k: v for k, v in after.items() if k not in ("threshold", "metrics", "created")} == {
        k: v for k, v in before.items() if k not in ("threshold", "metrics", "created")}  # version, record, heatmap kept
    capsys.readouterr()
    with pytest.raises(SystemExit):  # a package is no run: new weights cannot come from it
        ship_fracatlas.main([str(shipped), "--to", str(tmp_path / "elsewhere"), "--version", "1", "--oof", str(newest)])
    assert "is a package" in capsys.readouterr().err
    single_split = tmp_path / "single_split"  # a package without a cross-validated recipe has nothing to refresh
    single_split.mkdir()
    (single_split / "model.pt").write_bytes(weights)
    (single_split / "model_info.json").write_text(json.dumps({**after, "training_data": {"dataset": "FracAtlas"}}))
    with pytest.raises(SystemExit):
        ship_fracatlas.main([str(single_split), "--to", str(single_split), "--oof", str(newest), "--info-only"])
    assert "records no benchmarks.fracatlas_cv recipe" in capsys.readouterr().err
    # ... and the bundle's metadata.json eval_metrics from the same file, every other key kept
    metadata = tmp_path / "metadata.json"
    original = json.loads((Path(__file__).resolve().parents[1] / "bundles" / "fracture_classification" / "configs"
                           / "metadata.json").read_text())
    metadata.write_text(json.dumps(original, indent=4))
    assert ship_fracatlas.main([str(tmp_path / "run" / "full"), "--to", str(shipped), "--version", "9.9.9",
                                "--oof", str(newer), "--heatmap", "gradcam@last", "--info-only",
                                "--metadata", str(metadata)]) == 0
    written = json.loads(metadata.read_text())
    assert {k: v for k, v in written.items() if k != "eval_metrics"} == {
        k: v for k, v in original.items() if k != "eval_metrics"}
    assert written["eval_metrics"]["fracatlas_oof_threshold"] == 0.4321
    assert written["eval_metrics"]["fracatlas_oof_folds"] == 1
    with pytest.raises(SystemExit, match="other weights"):
        ship_fracatlas.main([str(tmp_path / "run" / "fold0"), "--to", str(shipped), "--oof", str(newer), "--info-only"])
    with pytest.raises(SystemExit, match="another recipe"):
        other = tmp_path / "other.json"
        other.write_text(json.dumps({**summary, "recipe": {**summary["recipe"], "epochs": 7}}))
        ship_fracatlas.main([str(tmp_path / "run" / "full"), "--to", str(tmp_path / "x"), "--version", "1",
                             "--oof", str(other)])


REPO = Path(__file__).resolve().parents[1]
SHIPPED_RESULTS = REPO / "benchmarks" / "results" / "fracatlas_cv"


def test_validation_tables_are_the_committed_results():
    """docs/validation.md's generated OOF tables hold what benchmarks/results holds (rerun fracatlas_docs if not)."""
    from benchmarks import fracatlas_docs

    assert fracatlas_docs.main(["lite0_320_box0.2", "--check", "--results", str(SHIPPED_RESULTS),
                                "--doc", str(REPO / "docs" / "validation.md")]) == 0


def test_the_shipped_model_carries_the_committed_pooled_oof_figures():
    """model_info.json and metadata.json were rewritten from the same summary.json the docs are generated from."""
    summary = json.loads((SHIPPED_RESULTS / "lite0_320_box0.2" / "summary.json").read_text())
    bundle = REPO / "bundles" / "fracture_classification"
    info = json.loads((bundle / "models" / "fracatlas" / "model_info.json").read_text())
    assert info["threshold"] == pytest.approx(summary["pooled"]["threshold"])
    assert info["metrics"]["validation"] == summary["pooled"]
    assert info["metrics"]["oof_folds"] == summary["folds_present"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["fracatlas_oof_folds"] == len(summary["folds_present"])
    assert meta["eval_metrics"]["fracatlas_oof_roc_auc"] == pytest.approx(summary["pooled"]["roc_auc"], abs=1e-4)


def test_generated_tables_follow_the_results_and_unknown_blocks_are_refused():
    from benchmarks.fracatlas_docs import per_fold, render

    summary = {"per_fold": {"0": {"n": 10, "positives": 3, "roc_auc": 0.91, "pr_auc": 0.8, "ece": 0.02,
                                  "sensitivity_at_specificity_0.80": 0.67},
                            "1": {"n": 9, "positives": 2, "roc_auc": 0.88, "pr_auc": 0.7, "ece": 0.04,
                                  "sensitivity_at_specificity_0.80": 0.5, "threshold_from_other_folds": 0.31,
                                  "sensitivity_at_other_folds_threshold": 0.5,
                                  "specificity_at_other_folds_threshold": 0.857}}}
    table = per_fold(summary, [{"fold": 1, "cpu_s": 3600.0, "cpus": ["CPU A", "CPU B"]}, {"fold": 0, "cpu_s": 60.0}])
    assert table.splitlines()[3] == ("| 1 | 9 | 2 | 0.880 | 0.700 | 0.500 | 0.040 | 0.310: 0.500 / 0.857 | 60 | "
                                     "CPU A, CPU B |")
    assert table.splitlines()[2].endswith("| 1 | not recorded |")  # a fold published before CPUs were recorded
    page = ("intro\n<!-- generated: oof-folds (benchmarks.fracatlas_docs) -->\nold\n"
            "<!-- end generated: oof-folds -->\noutro\n")
    assert render(page, {"oof-folds": "NEW"}) == page.replace("\nold\n", "\nNEW\n")
    with pytest.raises(KeyError, match="oof-folds"):
        render(page, {})
    with pytest.raises(ValueError, match="oof-regions"):  # a table whose markers went missing is not skipped
        render(page, {"oof-folds": "NEW", "oof-regions": "X"})
    # a fold without a threshold from other folds or a CPU time shows dashes
    assert per_fold(summary, []).splitlines()[2] == "| 0 | 10 | 3 | 0.910 | 0.800 | 0.670 | 0.020 | – | – | – |"


def test_a_region_with_few_fractures_shows_no_roc_auc():
    from benchmarks.fracatlas_docs import regions

    entry = {"n": 49, "positives": 2, "roc_auc": 1.0, "roc_auc_ci95": [1.0, 1.0], "sensitivity": 1.0,
             "specificity": 0.979, "ece": 0.03}
    table = regions({"by_region": {"hip": entry}, "without_hardware": {**entry, "positives": 40, "n": 400}})
    assert "| hip | 49 | 2 | – (2 fractured: too few) | 1.000 | 0.979 | 0.030 |" in table
    assert "| **without hardware** | 400 | 40 | 1.000 (1.000–1.000) |" in table


def test_paired_bootstrap_moves_both_models_together():
    from benchmarks.fracatlas_paired import paired_bootstrap

    rng = np.random.default_rng(3)
    labels = (rng.random(200) < 0.3).astype(int)
    weak = np.clip(labels * 0.2 + rng.random(200) * 0.8, 0, 1)
    strong = np.clip(labels * 0.6 + rng.random(200) * 0.4, 0, 1)
    groups = np.arange(200) // 2
    same = paired_bootstrap(labels, weak, weak, groups, resamples=100)
    assert same["roc_auc_difference"] == 0 and same["roc_auc_difference_ci95"] == [0.0, 0.0]
    better = paired_bootstrap(labels, strong, weak, groups, resamples=200)
    assert better["roc_auc_difference"] == pytest.approx(roc_auc(strong, labels) - roc_auc(weak, labels))
    assert 0 < better["roc_auc_difference_ci95"][0] < better["roc_auc_difference"] < better["roc_auc_difference_ci95"][1]


def test_the_error_panel_shows_the_errors_at_the_shipped_threshold():
    """docs/validation's heatmap panel lists what its fold's OOF probabilities select at today's pooled threshold.

    The fold network that drew it lives in an ignored run folder, so after a new fold moves the
    threshold the panel may be kept (``fracatlas_report --no-panel``) only while its images stay the
    same; when they do not, this fails and the panel must be redrawn by a fold network.
    """
    from benchmarks.fracatlas_report import panel_errors

    folder = SHIPPED_RESULTS / "lite0_320_box0.2"
    panel = json.loads((REPO / "docs" / "validation" / "gradcam_errors.json").read_text())
    threshold = json.loads((folder / "summary.json").read_text())["pooled"]["threshold"]
    oof = load_oof(folder)
    picked = panel_errors(oof[oof["fold"] == panel["held_out_fold"]], threshold)
    assert [(kind, row["path"], round(float(row["probability"]), 4)) for kind, row in picked] == [
        (e["kind"], e["path"], e["probability"]) for e in panel["errors"]]
    shipped = json.loads((REPO / "bundles" / "fracture_classification" / "models" / "fracatlas" / "model_info.json")
                         .read_text())  # drawn by a fold network of the shipped model's own recipe and release
    assert panel["model"] == f"{shipped['name']}@{shipped['version']}-fold{panel['held_out_fold']}"
    assert {k: v for k, v in shipped["training_data"]["recipe"].items() if k != "fold"} == json.loads(
        (folder / "summary.json").read_text())["recipe"]
    assert len(panel["errors"]) == 8
