"""Ignite handlers the bundle configs attach to MONAI's engines.

- ``BestModelSaver`` (validator): on each new best key metric (or after every validation with
  ``selection="last"``), writes ``model.pt`` and ``model_info.json`` together (rank 0 only), with
  the threshold chosen on that validation.
- ``TrainingHistory`` (trainer): per-epoch mean loss and validation metrics, a log line on every
  rank and ``history.json`` on rank 0.
- ``EvaluationWriter`` / ``PredictionWriter`` (evaluator): collect P(fracture) per image and write
  the evaluation outputs or an inference predictions CSV when the run completes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from monai.utils import is_scalar

from monai_fracture.model.package import MODEL_INFO, ModelInfo, save_model
from monai_fracture.training.evaluation import write_evaluation, write_predictions_csv
from monai_fracture.training.metrics import as_probability_and_label

logger = logging.getLogger(__name__)


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if is_scalar(value):
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
            out[key] = value if math.isfinite(value) else None
    return out


def _filename(item: Mapping[str, Any], image_key: str, path_key: str = "path") -> str | None:
    """The source path of one decollated output item (its ``path`` key, else the image's MONAI metadata)."""
    if isinstance(item.get(path_key), str):
        return item[path_key]
    image = item.get(image_key)
    meta = getattr(image, "meta", None) or item.get(f"{image_key}_meta_dict") or {}
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return str(name) if name is not None else (image if isinstance(image, str) else None)


class BestModelSaver:
    """Save the model package whenever the validator's key metric improves (``selection="best"``), or after
    every validation (``selection="last"``: the last validated network is the network, as in the
    cross-validated FracAtlas recipe, where picking the best epoch on the split that also sets the
    threshold would make both figures optimistic). With ``val_interval`` 1 (the recipe's) that is the
    network after the last epoch; with a larger interval, the last epoch that was validated.

    ``info`` is the template ``ModelInfo`` (network and preprocessing kwargs, data description);
    the threshold (``{prefix}threshold`` metric from ``ThresholdedMetrics``), its rule, the scalar
    validation metrics and the epoch are filled in at save time. With ``resume=True`` the best
    metric so far is read back from an existing ``model_info.json`` so a resumed run does not
    overwrite a better model with a worse one.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        model_dir: str | PathLike,
        info: ModelInfo | Mapping[str, Any],
        key_metric_name: str = "val_roc_auc",
        threshold_metric_name: str = "val_threshold",
        resume: bool = False,
        selection: str = "best",
    ) -> None:
        if selection not in ("best", "last"):
            raise ValueError(f"model selection {selection!r}: expected 'best' (best {key_metric_name}) or 'last'")
        self.selection = selection
        self.network = network
        self.model_dir = Path(model_dir)
        self.info = info if isinstance(info, ModelInfo) else ModelInfo.from_dict(info)
        self.key_metric_name = key_metric_name
        self.threshold_metric_name = threshold_metric_name
        self.resume = resume

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._restore_best)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _restore_best(self, engine: Engine) -> None:
        if self.selection == "last" or not self.resume or getattr(engine.state, "best_metric_epoch", -1) != -1:
            return
        path = self.model_dir / MODEL_INFO
        if path.is_file():
            previous = ModelInfo.load(path)
            best = previous.metrics.get(self.key_metric_name)
            if best is not None:
                engine.state.best_metric = float(best)
                engine.state.best_metric_epoch = int(previous.epoch or 0)
                logger.info("resume: best %s so far %.4f (epoch %s)", self.key_metric_name, best, previous.epoch)

    def __call__(self, engine: Engine) -> None:
        if self.selection == "best" and getattr(engine.state, "best_metric_epoch", None) != engine.state.epoch:
            return
        if idist.get_rank() != 0:
            return
        metrics = _scalar_metrics(engine.state.metrics)
        info = ModelInfo.from_dict(self.info.to_dict())
        info.threshold = float(metrics.get(self.threshold_metric_name, info.threshold))
        info.threshold_rule = getattr(engine.state, "threshold_rule", "") or info.threshold_rule
        info.metrics = metrics
        info.epoch = int(engine.state.epoch)
        save_model(self.model_dir, self.network, info)
        logger.info(
            "epoch %d: %s %s %.4f, saved %s (threshold %.4f)",
            info.epoch, "new best" if self.selection == "best" else "latest", self.key_metric_name,
            metrics.get(self.key_metric_name) or float("nan"), self.model_dir, info.threshold,
        )


class TrainingHistory:
    """Per-epoch training loss (every rank logs its own line) and validation metrics (``history.json``).

    ``extra_keys``: further scalars of the trainer output (e.g. the parts of a box-guided loss)
    whose epoch means are recorded as ``train_<key>`` when the output has them.
    """

    def __init__(
        self,
        log_dir: str | PathLike,
        validator: Engine | None = None,
        output_transform: Callable[[Any], Any] = from_engine(["loss"], first=True),
        filename: str = "history.json",
        extra_keys: Sequence[str] = ("class_loss", "box_loss"),
    ) -> None:
        self.log_dir = Path(log_dir)
        self.validator = validator
        self.output_transform = output_transform
        self.filename = filename
        self.extra_keys = tuple(extra_keys)
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._extra: dict[str, list[float]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_started(self, engine: Engine) -> None:
        self._losses, self._extra = [], {}

    def _iteration_completed(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        self._losses.append(float(loss.item() if isinstance(loss, torch.Tensor) else loss))
        output = engine.state.output
        first = output[0] if isinstance(output, list) and output else output
        for key in self.extra_keys:
            if isinstance(first, Mapping) and first.get(key) is not None:
                value = first[key]
                self._extra.setdefault(key, []).append(float(value.item() if isinstance(value, torch.Tensor) else value))

    def _epoch_completed(self, engine: Engine) -> None:
        rank, world = idist.get_rank(), idist.get_world_size()
        mean_loss = float(np.mean(self._losses)) if self._losses else float("nan")
        record: dict[str, Any] = {
            "epoch": int(engine.state.epoch),
            "train_loss": mean_loss,
            "iterations": len(self._losses),
            **{f"train_{key}": float(np.mean(values)) for key, values in self._extra.items()},
            "lr": [float(g["lr"]) for g in getattr(engine, "optimizer").param_groups] if hasattr(engine, "optimizer") else None,
        }
        if self.validator is not None and getattr(self.validator.state, "metrics", None):
            record["validation"] = _scalar_metrics(self.validator.state.metrics)
        extra = "".join(f", {key} {np.mean(values):.4f}" for key, values in self._extra.items())
        logger.info(
            "rank %d/%d epoch %d/%s: mean train loss %.4f over %d iterations%s",
            rank, world, record["epoch"], engine.state.max_epochs, mean_loss, len(self._losses), extra,
        )
        self.history.append(record)
        if rank == 0:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            path = self.log_dir / self.filename
            # on resume, keep the epochs logged before the interruption
            previous = []
            if path.is_file() and len(self.history) == 1:
                try:
                    previous = [r for r in json.loads(path.read_text()) if r.get("epoch", 0) < record["epoch"]]
                except (json.JSONDecodeError, AttributeError):
                    previous = []
                self.history = previous + self.history
            path.write_text(json.dumps(self.history, indent=2) + "\n", encoding="utf-8")


class _ProbabilityCollector(ABC):
    """Collects P(fracture), labels (when present) and file names from evaluator outputs."""

    def __init__(self, pred_key: str = "pred", label_key: str = "label", image_key: str = "image") -> None:
        self.pred_key, self.label_key, self.image_key = pred_key, label_key, image_key
        self.probs: list[float] = []
        self.labels: list[int] = []
        self.filenames: list[str | None] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _reset(self, engine: Engine) -> None:
        self.probs, self.labels, self.filenames = [], [], []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        # The input path travels in the batch (MONAI's engine output holds only image, label, pred).
        batch = engine.state.batch
        batch_items = batch if isinstance(batch, list) and len(batch) == len(items) else [{}] * len(items)
        for item, source in zip(items, batch_items):
            label = item.get(self.label_key)
            prob, lab = as_probability_and_label([item[self.pred_key]], [label if label is not None else -1])
            self.probs.append(float(prob[0]))
            self.labels.append(int(lab[0]))
            name = _filename(source, self.image_key) if isinstance(source, Mapping) and source else None
            self.filenames.append(name or _filename(item, self.image_key))

    @abstractmethod
    def _completed(self, engine: Engine) -> None:
        """Write what was collected (each writer decides what)."""


class EvaluationWriter(_ProbabilityCollector):
    """Write metrics.json, predictions.csv and ROC / confusion / calibration PNGs at the saved threshold."""

    def __init__(
        self,
        output_dir: str | PathLike,
        threshold: float,
        n_bootstrap: int = 1000,
        seed: int = 0,
        extra: Mapping[str, Any] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
    ) -> None:
        super().__init__(pred_key, label_key, image_key)
        self.output_dir = Path(output_dir)
        self.threshold = float(threshold)
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.extra = dict(extra or {})
        self.metrics: dict[str, Any] = {}

    def _completed(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        if any(label < 0 for label in self.labels):
            raise ValueError("evaluation needs a label for every image (use inference.json for unlabelled data)")
        self.metrics = write_evaluation(
            self.output_dir, self.probs, self.labels, self.filenames, self.threshold,
            n_bootstrap=self.n_bootstrap, seed=self.seed, extra=self.extra,
        )


class PredictionWriter(_ProbabilityCollector):
    """Write an inference predictions CSV (path, probability, prediction, threshold, status, reason).

    ``skipped`` lists the input files that were not scored (``{"path", "status", "reason"}``, see
    ``monai_fracture.training.inference_inputs``); they get a row with their reason.
    """

    def __init__(
        self,
        output_file: str | PathLike,
        threshold: float,
        pred_key: str = "pred",
        image_key: str = "image",
        skipped: Sequence[Mapping[str, str]] = (),
    ) -> None:
        super().__init__(pred_key, "label", image_key)
        self.output_file = Path(output_file)
        self.threshold = float(threshold)
        self.skipped = list(skipped)

    def _completed(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        write_predictions_csv(self.output_file, self.filenames, self.probs, self.threshold, skipped=self.skipped)
        logger.info("wrote %d predictions and %d skipped files to %s", len(self.probs), len(self.skipped),
                    self.output_file)
