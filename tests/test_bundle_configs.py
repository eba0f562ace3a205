"""Bundle metadata and configs: offline schema verification, network in/out (the model zoo steps: test_bundle_zoo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "fracture_classification"
CONFIGS = BUNDLE / "configs"
SCHEMA = BUNDLE / "schema" / "meta_schema.json"


def _bundle_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)


def test_bundle_layout():
    for name in ("metadata.json", "train.json", "evaluate.json", "inference.json", "multi_gpu_train.json",
                 "train_ct.json", "train_fracatlas.json", "logging.conf"):
        assert (CONFIGS / name).is_file(), name
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
    card = (BUNDLE / "docs" / "README.md").read_text()
    assert "not a medical device" in card.lower()
    for name in ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "train_ct.json",
                 "train_fracatlas.json"):
        json.loads((CONFIGS / name).read_text())


def test_verify_metadata_passes_offline_against_the_schema_in_the_repository():
    result = _bundle_cli("verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"), "--filepath", str(SCHEMA))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_schema_rejects_incomplete_metadata():
    schema = json.loads(SCHEMA.read_text())
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    jsonschema.validate(meta, schema)
    broken = {k: v for k, v in meta.items() if k != "network_data_format"}
    with pytest.raises(jsonschema.ValidationError, match="network_data_format"):
        jsonschema.validate(broken, schema)
    no_shape = json.loads(json.dumps(meta))
    del no_shape["network_data_format"]["inputs"]["image"]["spatial_shape"]
    with pytest.raises(jsonschema.ValidationError, match="spatial_shape"):
        jsonschema.validate(no_shape, schema)


def test_metadata_content():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert any("2406.15958" in ref for ref in meta["references"])
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "no fracture", "1": "fracture"}
    assert "not a medical device" in meta["intended_use"].lower()


@pytest.mark.parametrize("config", ["train.json"])  # inference.json: test_bundle_zoo.py, in-process
def test_verify_net_in_out(config, tmp_path):
    result = _bundle_cli("verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"),
                         "--config_file", str(CONFIGS / config), "--bundle_root", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr
