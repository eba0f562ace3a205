"""Which network a bundle run saves: the best validation epoch (default) or the last one (the FracAtlas recipe)."""

from __future__ import annotations

import json

import pytest
from ignite.engine import Engine

from monai_fracture.model.package import ModelInfo
from monai_fracture.networks import build_network
from monai_fracture.training.handlers import BestModelSaver

NETWORK = {"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2, "pretrained": False}


def _validate(saver: BestModelSaver, engine: Engine, epoch: int, auc: float, best: tuple[float, int]) -> None:
    """One validation as MONAI's evaluator leaves it: this epoch's metrics, the best so far (key metric)."""
    engine.state.epoch = epoch
    engine.state.metrics = {"val_roc_auc": auc, "val_threshold": auc / 2}
    engine.state.best_metric, engine.state.best_metric_epoch = best
    saver(engine)


@pytest.mark.parametrize(("selection", "saved_epoch"), [("best", 2), ("last", 3)])
def test_the_saved_network_is_the_best_or_the_last_epoch(tmp_path, selection, saved_epoch):
    saver = BestModelSaver(build_network(**NETWORK), tmp_path / "models", ModelInfo(network=NETWORK), selection=selection)
    engine = Engine(lambda e, b: None)
    _validate(saver, engine, 1, 0.70, (0.70, 1))
    _validate(saver, engine, 2, 0.90, (0.90, 2))
    _validate(saver, engine, 3, 0.80, (0.90, 2))  # worse than epoch 2: only "last" saves it
    info = json.loads((tmp_path / "models" / "model_info.json").read_text())
    assert info["epoch"] == saved_epoch
    assert info["metrics"]["val_roc_auc"] == {2: 0.90, 3: 0.80}[saved_epoch]
    assert info["threshold"] == pytest.approx(info["metrics"]["val_roc_auc"] / 2)  # the saved epoch's own threshold


def test_an_unknown_selection_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'first'.*'best'.*'last'"):
        BestModelSaver(build_network(**NETWORK), tmp_path, ModelInfo(network=NETWORK), selection="first")
