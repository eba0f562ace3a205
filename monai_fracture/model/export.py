"""Export a trained model to ONNX (and TorchScript) beside its ``model.pt``.

ONNX uses ``torch.onnx.export(..., dynamo=True)`` after ``prepare_for_export`` (MONAI's
memory-efficient swish does not export), with a dynamic batch axis. TorchScript normally comes
from ``python -m monai.bundle ckpt_export`` (it embeds metadata and configs, see docs/training.md);
``export_torchscript`` is the same trace for code that has no bundle config at hand.

Command line: ``python -m monai_fracture.model.export MODEL_DIR_OR_BUNDLE [--format onnx|torchscript|both]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from monai_fracture.model.package import (
    MODEL_INFO,
    MODEL_ONNX,
    MODEL_TORCHSCRIPT,
    LoadedModel,
    ModelInfo,
    file_digest,
    load_model,
)

logger = logging.getLogger(__name__)


def example_input(info: ModelInfo, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random input of the shape the model was trained on (from ``info.network`` and ``info.preprocessing``)."""
    spatial_dims = int(info.network.get("spatial_dims", 2))
    channels = int(info.network.get("in_channels", 3))
    size = info.preprocessing.get("size", 224)
    shape = tuple(size) if isinstance(size, (list, tuple)) else (int(size),) * spatial_dims
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, channels, *shape), generator=generator)


def _torch_network(model: LoadedModel) -> torch.nn.Module:
    if model.format != "pytorch":
        raise ValueError(f"{model.path}: export starts from model.pt, got a {model.format} model")
    from monai_fracture.networks import prepare_for_export

    return prepare_for_export(model.network).cpu()


@contextlib.contextmanager
def _quiet_exporter_logs():
    """The dynamo exporter logs a warning per missing torchvision op and onnx_ir an INFO per pass."""
    names = ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)


def export_onnx(
    network: torch.nn.Module,
    path: str | PathLike,
    example: torch.Tensor,
    opset_version: int | None = None,
) -> Path:
    """Write ``network`` (call ``prepare_for_export`` first) to ONNX with a dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = network.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    kwargs = {"opset_version": opset_version} if opset_version else {}
    with torch.no_grad(), _quiet_exporter_logs():
        program = torch.onnx.export(
            network, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
            dynamic_shapes=({0: batch},), verbose=False, **kwargs,
        )
    program.save(str(path))
    logger.info("wrote ONNX model %s", path)
    return path


def export_torchscript(network: torch.nn.Module, path: str | PathLike, example: torch.Tensor) -> Path:
    """Trace ``network`` to TorchScript (without bundle metadata; prefer ``monai.bundle ckpt_export``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        traced = torch.jit.trace(network.eval(), example)
    traced.save(str(path))
    logger.info("wrote TorchScript model %s", path)
    return path


def max_probability_difference(reference: LoadedModel, other: LoadedModel, example: torch.Tensor) -> float:
    """Largest |P(fracture)| difference between two loaded models on ``example``."""
    return float(np.max(np.abs(reference.predict_proba(example) - other.predict_proba(example))))


def export_model(model_path: str | PathLike, formats: Sequence[str] = ("onnx",), check: bool = True) -> dict[str, Path]:
    """Export the model at ``model_path`` (bundle, model folder or model.pt) to ``model.onnx`` / ``model.ts``.

    With ``check`` the exported file is loaded back and must give the checkpoint's probabilities
    within 1e-4, otherwise ``RuntimeError`` names the file and the difference. Each export is
    recorded in ``model_info.json`` (``exports``: its SHA-256 and that of the ``model.pt`` it came
    from), which is how scoring knows an export is current (``model.backends``).
    """
    model = load_model(model_path)
    network = _torch_network(model)
    example = example_input(model.info)
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "onnx":
            written[fmt] = export_onnx(network, model.path.parent / MODEL_ONNX, example)
        elif fmt == "torchscript":
            written[fmt] = export_torchscript(network, model.path.parent / MODEL_TORCHSCRIPT, example)
        else:
            raise ValueError(f"unknown export format {fmt!r} (expected 'onnx' or 'torchscript')")
        diff = None
        if check:
            diff = max_probability_difference(model, load_model(written[fmt]), example)
            if diff >= 1e-4:
                raise RuntimeError(f"{written[fmt]}: probabilities differ from {model.path} by {diff:.2e}")
            logger.info("%s: max |P(fracture)| difference to %s: %.2e", written[fmt], model.path.name, diff)
        model.info.exports[fmt] = {
            "file": written[fmt].name,
            "sha256": file_digest(written[fmt]),
            "source_sha256": file_digest(model.path),
            "max_abs_difference": diff,
        }
    if written:
        model.info.save(model.path.parent / MODEL_INFO)
    return written


def _rank() -> int:
    """This process's rank under torch.distributed (0 when not distributed); no import of ``training/``."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def export_after_training(model_dir: str | PathLike, formats: Sequence[str] = ("onnx", "torchscript")) -> dict[str, Path]:
    """The bundle's last training step: export the best model beside ``model.pt`` (rank 0 only).

    Scoring then runs the fastest export that agrees with the checkpoint (``model.backends``).
    Nothing happens when no model was saved or ``formats`` is empty.
    """
    from monai_fracture.model.package import MODEL_WEIGHTS

    model_file = Path(model_dir) / MODEL_WEIGHTS
    if _rank() != 0 or not formats or not model_file.is_file():
        return {}
    return export_model(model_file, list(formats))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_fracture.model.export", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="bundle folder, model folder or model.pt (with model_info.json beside it)")
    parser.add_argument("--format", choices=["onnx", "torchscript", "both"], default="onnx")
    parser.add_argument("--no-check", action="store_true", help="skip the probability parity check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    formats = ["onnx", "torchscript"] if args.format == "both" else [args.format]
    for fmt, path in export_model(args.model, formats, check=not args.no_check).items():
        logger.info("%s -> %s", fmt, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
