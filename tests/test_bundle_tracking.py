"""What a training run tells the people watching it: TensorBoard (LR, Grad-CAM images) and MLflow.

One tiny real run of the bundle (`python -m monai.bundle run training ... --tracking mlflow`), as a
user types it, then the TensorBoard event files and the MLflow store are read back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "fracture_classification" / "configs"
TINY = ["--synthetic", "True", "--synthetic_n", "32", "--val_fraction", "0.25", "--image_size", "64", "--batch_size", "8",
        "--warmup_epochs", "1", "--max_epochs", "2", "--check_pixels", "False", "--export_formats", "[]",
        "--tensorboard_images", "3"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> tuple[Path, str]:
    pytest.importorskip("mlflow", reason="MLflow not installed (pip install 'monai-fracture[tracking]')")
    root = tmp_path_factory.mktemp("tracked")
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", str(CONFIGS / "metadata.json"),
               "--config_file", str(CONFIGS / "train.json"), "--bundle_root", str(root), "--tracking", "mlflow",
               "--experiment_name", "fracture_test", *TINY]
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return root, output


def _events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulators = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        accumulators.append(accumulator)
    return accumulators


def test_tensorboard_gets_learning_rate_per_group_and_epoch(tracked_run) -> None:
    root, _ = tracked_run
    scalars = {tag: acc.Scalars(tag) for acc in _events(root / "logs") for tag in acc.Tags()["scalars"]}
    lr_tags = sorted(t for t in scalars if t.startswith("lr/"))
    assert {"lr/head", "lr/backbone"} <= set(lr_tags), sorted(scalars)
    for tag in lr_tags:
        assert [e.step for e in scalars[tag]] == [1, 2]
    # what the optimizer was told: head 1e-3, backbone 3e-4 in epoch 1, then the cosine schedule
    assert scalars["lr/head"][0].value == pytest.approx(1e-3)
    assert scalars["lr/backbone"][0].value == pytest.approx(3e-4)
    assert scalars["lr/head"][1].value < scalars["lr/head"][0].value


def test_tensorboard_gets_gradcam_images_of_validation(tracked_run) -> None:
    root, _ = tracked_run
    images = {tag: acc.Images(tag) for acc in _events(root / "logs") for tag in acc.Tags()["images"]}
    cams = sorted(t for t in images if t.startswith("validation_gradcam/"))
    assert len(cams) == 3, sorted(images)
    from io import BytesIO

    from PIL import Image

    colour = []
    for tag in cams:
        assert [e.step for e in images[tag]] == [1, 2]
        picture = np.asarray(Image.open(BytesIO(images[tag][-1].encoded_image_string)).convert("RGB")).astype(int)
        assert picture.shape == (64, 64, 3)
        assert picture.max() > 100  # the radiograph shows
        colour.append((picture.max(axis=2) - picture.min(axis=2)).max())
    # heatmap overlays, not grey images (an image whose Grad-CAM is all zero stays grey, so not every one)
    assert max(colour) > 60, colour


def test_tracking_mlflow_records_the_run_in_a_local_store(tracked_run) -> None:
    root, _ = tracked_run
    store = root / "eval" / "mlruns.db"
    assert store.is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("fracture_test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs, "no MLflow run recorded"
    metrics = set().union(*(run.data.metrics for run in runs))
    assert {"train_loss", "val_roc_auc"} <= metrics, metrics
    history = [m.step for run in runs for m in client.get_metric_history(run.info.run_id, "val_roc_auc")]
    assert sorted(history) == [1, 2]
