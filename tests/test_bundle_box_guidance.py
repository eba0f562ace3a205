"""Box-guided training through the bundle: the FracAtlas recipe override, weight 0 = today's training, a real run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import EnsureTyped
from monai.utils import set_determinism

from helpers.box_dataset import make_box_dataset
from monai_fracture.training.box_iteration import BoxGuidedIteration
from monai_fracture.training.schedules import WarmupCosine
from monai_fracture.training.setup import bundle_preprocessing
from monai_fracture.transforms.presets import build_augmentation, build_preprocessing

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "fracture_classification" / "configs"
META = CONFIGS / "metadata.json"
RECIPE = CONFIGS / "train_fracatlas.json"


def _parser(tmp_path: Path, *configs: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_meta(str(META))
    parser.read_config([str(c) for c in configs])
    values = {"bundle_root": str(tmp_path), "dataset_dir": str(make_box_dataset(tmp_path / "ds", n=24)),
              "check_pixels": False, "val_fraction": 0.25, "image_size": 48, "batch_size": 4, "pretrained": False,
              **overrides}
    for key, value in values.items():
        parser[key] = value
    parser.parse()
    return parser


def test_the_fracatlas_override_sets_the_candidate_recipe(tmp_path):
    raw = json.loads(RECIPE.read_text())
    assert raw["image_size"] == 320 and raw["normalization"] == "tf" and raw["network_name"] == "efficientnet-lite0"
    assert raw["max_epochs"] == 10 and raw["batch_size"] == 32
    assert (raw["head_lr"], raw["backbone_lr"], raw["weight_decay"]) == (1e-3, 4e-4, 1e-4)
    assert raw["label_smoothing"] == 0.05 and raw["box_loss_weight"] == 0.2 and raw["class_weighting"] is False
    assert raw["warmup_epochs"] == 0 and raw["lr_warmup_epochs"] == 0.5  # learning-rate warm-up, backbone never frozen

    # merged after train.json (tiny sizes so it instantiates here): what the trainer really gets
    parser = _parser(tmp_path, CONFIGS / "train.json", RECIPE, image_size=48, batch_size=4)
    assert parser.get_parsed_content("preprocessing_kwargs") == {"modality": "xr", "size": 48, "normalization": "tf",
                                                                  "in_channels": 3}
    trainer = parser.get_parsed_content("train#trainer")
    assert isinstance(trainer._process_function, BoxGuidedIteration)
    assert trainer._process_function.box_loss_weight == 0.2
    loss = parser.get_parsed_content("loss")
    assert loss.label_smoothing == 0.05 and loss.weight is None
    groups = {g["name"]: g for g in parser.get_parsed_content("optimizer").param_groups}
    assert groups["head"]["initial_lr"] == 1e-3 and groups["backbone"]["initial_lr"] == 4e-4
    assert groups["head"]["weight_decay"] == 1e-4
    assert parser.get_parsed_content("validate#early_stop").patience == 10
    assert parser.get_parsed_content("validate#handlers")[0].selection == "last"  # no epoch picked on validation
    handler = parser.get_parsed_content("train#handlers")[1]
    assert handler.epoch_level is False  # stepped every iteration

    # the schedule: linear warm-up over half an epoch, then one cosine to zero, no restarts
    steps = len(parser.get_parsed_content("train#dataloader"))
    schedule = parser.get_parsed_content("lr_scheduler")
    factor = schedule.lr_lambdas[0]
    assert isinstance(factor, WarmupCosine) and factor.total_steps == 10 * steps
    values = [factor(s) for s in range(factor.total_steps + 1)]
    peak = max(1, int(0.5 * steps)) - 1
    assert values[0] < values[peak] and values[peak] == pytest.approx(max(values), rel=1e-6)
    assert all(b <= a for a, b in zip(values[peak:], values[peak + 1:]))  # never rises again
    assert values[-1] == pytest.approx(0.0, abs=1e-9)


def test_weight_zero_trains_exactly_as_before(tmp_path):
    """Default train.json: MONAI's own iteration and the same augmented pixels as the chain without box support."""
    parser = _parser(tmp_path, CONFIGS / "train.json")
    # the bundle's `initialize` seeds MONAI before anything is built (Compose draws its seeds from it)
    set_determinism(seed=0)
    chain = parser.get_parsed_content("train#preprocessing")
    set_determinism(seed=0)
    before = bundle_preprocessing(
        build_preprocessing(modality="xr", size=48, normalization="imagenet", in_channels=3, load=True,
                            augmentation=build_augmentation(modality="xr", seed=0)),
        EnsureTyped(keys="label", dtype=torch.long, track_meta=False))
    items = parser.get_parsed_content("train_items")
    assert any("boxes" in it for it in items)
    for _ in range(2):
        for item in items[:8]:
            got, want = chain(dict(item)), before(dict(item))
            torch.testing.assert_close(got["image"], want["image"], rtol=0, atol=0)
            assert "box_mask" not in got and "boxes" not in got
    set_determinism(seed=None)
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer._process_function == trainer._iteration
    assert parser.get_parsed_content("heatmap_recipe") == {}  # image-label models keep the family default
    assert parser.get_parsed_content("validate#handlers")[0].selection == "best"
    assert not [h for h in parser.get_parsed_content("train#handlers") if getattr(h, "tag_name", None) == "box_loss"]


@pytest.mark.slow
def test_one_bundle_epoch_with_boxes_logs_a_finite_box_loss(tmp_path):
    dataset = make_box_dataset(tmp_path / "ds", n=24)
    root = tmp_path / "root"
    root.mkdir()
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", str(META),
           "--config_file", str([str(CONFIGS / "train.json"), str(RECIPE)]), "--bundle_root", str(root),
           "--dataset_dir", str(dataset), "--image_size", "64", "--batch_size", "6", "--max_epochs", "1",
           "--val_fraction", "0.25", "--check_pixels", "False", "--export_formats", "[]", "--tensorboard_images", "0"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "box-guided training: loss + 0.2 x box attention" in log
    logged = [float(line.rsplit("box_loss:", 1)[1]) for line in log.splitlines() if "-- box_loss:" in line]
    assert len(logged) == 3 and all(math.isfinite(v) and v > 0 for v in logged), logged
    [epoch] = json.loads((root / "logs" / "history.json").read_text())
    assert math.isfinite(epoch["train_box_loss"]) and epoch["train_box_loss"] > 0
    # the logged total is the classification loss plus 0.2 x the box loss
    assert epoch["train_loss"] == pytest.approx(epoch["train_class_loss"] + 0.2 * epoch["train_box_loss"], rel=1e-5)
    info = json.loads((root / "models" / "model_info.json").read_text())
    assert info["preprocessing"]["normalization"] == "tf" and info["preprocessing"]["size"] == 64
    assert (root / "models" / "model.pt").is_file()
    # a box-guided model carries the heatmap recipe that points for such models: Grad-CAM on the last convolution
    assert (info["heatmap"]["method"], info["heatmap"]["layers"]) == ("gradcam", ["last"])
    from monai_fracture.model import Classifier

    assert Classifier(root / "models").heatmap_method == "gradcam"
