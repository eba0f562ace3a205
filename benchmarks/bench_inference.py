"""Model forward throughput of every inference backend on the same model, against eager fp32.

The model is the shipped FracAtlas EfficientNet-Lite0 (320 px) unless ``--model`` says otherwise.
Agreement is measured on an evaluation set: the FracAtlas validation fold (645 images, from the
cache ``benchmarks/fracatlas.py`` builds) when ``../shared/data/fracatlas`` is present, else
generated radiographs; each backend's max |P - P_fp32| and whether every decision at the model's
threshold is identical. Throughput is the median over repeats of one batch (default 16) of real
images, after a warm-up call (for ``compile`` the warm-up holds the compilation, reported apart).

    python -m benchmarks.bench_inference [--quick]
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import BenchContext, Row, Section, measure
from monai_fracture.model.package import LoadedModel, load_model
from monai_fracture.model.backend_table import BackendUnavailable
from monai_fracture.model.backends import build_backend

logger = logging.getLogger("benchmarks.inference")
FRACATLAS = Path("../shared/data/fracatlas")
VARIANTS = ("fp32", "channels_last", "bf16", "compile", "torchscript", "onnx")
BATCH_SIZE = 16


def default_model() -> Path:
    return Path("bundles/fracture_classification/models/fracatlas")


def evaluation_set(model: LoadedModel, ctx: BenchContext) -> tuple[torch.Tensor, str]:
    """Preprocessed network inputs (N, 3, S, S) and a description of where they came from."""
    size = int(model.info.preprocessing.get("size", 224))
    normalization = model.info.preprocessing.get("normalization", "imagenet")
    if (FRACATLAS / "labels.csv").is_file() and normalization == "tf" and not ctx.quick:
        from benchmarks.fracatlas import CachedImages, Recipe, build_cache, split_indices

        frame = build_cache(FRACATLAS, size, ctx.out_dir / "cache" / f"fracatlas_{size}.npz")
        usable = frame[frame["cache_index"].notna()].reset_index(drop=True)
        usable["cache_index"] = usable["cache_index"].astype(int)
        _, val = split_indices(usable, Recipe(size=size))
        rows = usable.iloc[val]
        dataset = CachedImages(frame.attrs["images"][rows["cache_index"].to_numpy()], rows["label"].to_numpy(),
                               augment=False, seed=0)
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        return images, f"FracAtlas validation fold 0 ({len(images)} images, {size} px)"
    from monai_fracture.data.synthetic import generate_demo_dataset
    from monai_fracture.io import read_image
    from monai_fracture.model import Classifier

    folder = ctx.data_dir / "inference_eval"
    n = 32 if ctx.quick else 96
    marker = folder / f".n{n}"
    if not marker.is_file():
        generate_demo_dataset(folder, n=n, modality="xr", seed=11, size="512x512")
        marker.write_text("ok\n")
    classifier = Classifier(model)
    files = sorted(p for p in folder.rglob("image_*") if p.is_file())
    images = torch.stack([classifier.preprocess(*read_image(p)) for p in files])
    return images, f"generated radiographs ({len(images)} images, {size} px)"


def _probabilities(backend, images: torch.Tensor, batch_size: int) -> np.ndarray:
    return np.concatenate([backend.predict_proba(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def run(ctx: BenchContext, model_path: Path | None = None, variants=VARIANTS, batch_size: int = BATCH_SIZE) -> Section:
    started = time.perf_counter()
    model = load_model(model_path or default_model(), device=ctx.device)
    images, source = evaluation_set(model, ctx)
    threshold = float(model.info.threshold)
    batch = images[:batch_size].contiguous()
    reference_probabilities = None
    rows: list[Row] = []
    details: dict = {"model": str(model.path), "evaluation_set": source, "batch_size": batch_size,
                     "threshold": threshold, "variants": {}}
    for name in variants:
        record: dict = {}
        try:
            build_started = time.perf_counter()
            backend = build_backend(name, model, ctx.device, threads=torch.get_num_threads())
            backend.predict_proba(batch)  # warm-up; torch.compile compiles here
            record["build_and_first_call_s"] = time.perf_counter() - build_started
        except (BackendUnavailable, RuntimeError) as err:
            details["variants"][name] = {"unavailable": str(err).splitlines()[0]}
            logger.info("%s unavailable: %s", name, err)
            continue
        timing = measure(lambda: backend.predict_proba(batch), repeats=ctx.repeats, warmup=1)
        probabilities = _probabilities(backend, images, batch_size)
        if reference_probabilities is None:
            reference_probabilities = probabilities  # fp32 comes first
        difference = float(np.max(np.abs(probabilities - reference_probabilities)))
        identical = bool(np.array_equal(probabilities >= threshold, reference_probabilities >= threshold))
        flips = int(np.sum((probabilities >= threshold) != (reference_probabilities >= threshold)))
        record.update({"max_abs_difference": difference, "decisions_identical": identical, "decision_flips": flips,
                       "timing_s_per_batch": timing.to_dict()})
        details["variants"][name] = record
        acceptable = difference <= 1e-3 and identical
        rows.append(Row.rate(name, timing, len(batch), baseline="fp32", extra={
            "max_abs_difference": difference, "decisions_identical": identical, "decision_flips": flips},
            target="|dP| <= 1e-3, same decisions", passed=acceptable))
        logger.info("%s: %.1f img/s, max |dP| %.2e, flips %d", name, rows[-1].median, difference, flips)
    # images per network call: the same 16 images, fed 1 or 4 at a time (scoring measures this too)
    for name in ("fp32", "onnx"):
        if name not in details["variants"] or "unavailable" in details["variants"][name]:
            continue
        backend = build_backend(name, model, ctx.device, threads=torch.get_num_threads())
        for size in (1, 4):
            backend.micro_batch = size
            timing = measure(lambda: backend.predict_proba(batch), repeats=ctx.repeats, warmup=1)
            rows.append(Row.rate(f"{name}, {size} image(s) per call", timing, len(batch), baseline="fp32"))
    base = next((r for r in rows if r.case == "fp32"), None)
    for row in rows:
        if base is not None:
            row.ratio = row.median / base.median
            row.ratio_meaning = "x fp32 throughput"
    accepted = [r for r in rows if r.passed]
    if accepted:
        details["fastest_acceptable"] = max(accepted, key=lambda r: r.median).case
    return Section("inference", f"Model forward, {model.info.network.get('name')} "
                   f"{model.info.preprocessing.get('size')} px, batch {batch_size}, {ctx.device}", rows, details,
                   seconds=time.perf_counter() - started)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    section = run(BenchContext(quick=args.quick, device=args.device, repeats=3 if args.quick else 5), args.model)
    for row in section.rows:
        print(f"{row.case:14s} {row.median:8.1f} {row.unit} ({row.low:.1f}-{row.high:.1f}) x{row.ratio or 0:.2f} "
              f"dP {row.extra['max_abs_difference']:.1e} flips {row.extra['decision_flips']}")
    print(section.details.get("fastest_acceptable"))
