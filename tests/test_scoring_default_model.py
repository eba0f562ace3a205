"""The shipped FracAtlas model is what ``monai-fracture score`` uses without ``--model``, on JPEG and DICOM."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from monai_fracture.model.package import ModelInfo
from monai_fracture.scoring import score_paths
from monai_fracture.model.classifier import default_model_path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "bundles" / "fracture_classification" / "models" / "fracatlas"


def test_shipped_model_is_complete_and_documented():
    info = ModelInfo.load(SHIPPED / "model_info.json")
    assert (SHIPPED / "model.pt").stat().st_size < 25 * 2**20
    assert 0.0 < info.threshold < 1.0 and "Youden" in info.threshold_rule
    assert "FracAtlas" in info.training_data["dataset"] and "CC BY 4.0" in info.training_data["dataset"]
    assert "group" in info.training_data["split"]
    assert info.metrics["validation"]["roc_auc"] > 0.8


def test_default_model_prefers_the_shipped_real_data_model(monkeypatch):
    monkeypatch.delenv("MONAI_FRACTURE_MODEL", raising=False)
    assert default_model_path() == SHIPPED


def test_score_without_model_uses_it_on_jpeg_and_dicom(fracatlas, tmp_path, monkeypatch):
    from monai_fracture.data.synthetic import generate_demo_dataset

    monkeypatch.delenv("MONAI_FRACTURE_MODEL", raising=False)
    labels = pd.read_csv(fracatlas / "labels.csv")
    usable = labels[(labels["decodes"].astype(str).str.lower() == "true") & (labels["hardware"] == 0)]
    picked = pd.concat([usable[usable["label"] == 1].sample(12, random_state=0),
                        usable[usable["label"] == 0].sample(12, random_state=0)])
    jpegs = [str(fracatlas / p) for p in picked["path"]]
    generate_demo_dataset(tmp_path / "dicom", n=4, seed=3, size=256)

    summary = score_paths([*jpegs, tmp_path / "dicom"], tmp_path / "out", progress=False)
    results = summary.results.copy()
    results["probability"] = pd.to_numeric(results["probability"])  # the CSV is read as text
    scored = results[results["status"] == "scored"]
    assert set(scored["model"]) == {"fracture_classification_fracatlas@0.2.0"}
    n_dicom = len(pd.read_csv(tmp_path / "dicom" / "labels.csv"))  # some demo files have no extension
    assert scored["path"].str.startswith(str(tmp_path / "dicom")).sum() == n_dicom
    assert scored["path"].str.endswith(".jpg").sum() == 24
    assert scored["probability"].between(0, 1).all()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "fracatlas" in json.dumps(manifest)

    # a real model, not a constant: fractured radiographs score higher on average
    by_path = scored.set_index("path")["probability"]
    p = picked.assign(prob=[by_path[str(Path(j))] for j in jpegs])
    assert p[p["label"] == 1]["prob"].mean() > p[p["label"] == 0]["prob"].mean()
