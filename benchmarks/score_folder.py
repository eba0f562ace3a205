"""Benchmark of `monai-fracture score` on generated 2048x2048 DX files (a benchmark, not a test).

Measures, in one run on the same files and model:
- end to end: ``score_paths`` (walk, header scan, decode + preprocess in workers, model, CSV,
  SR/KOS per study), images/s over its total time;
- preprocessing only: ``read_image`` + the model's preprocessing, one process, per image;
- model only: the network on already preprocessed tensors at ``--batch-size``;
- a naive loop: pydicom ``dcmread`` + ``pixel_array``, numpy min-max scaling, a torch resize and
  the model at batch size 1, one image after another.
and prints the ratios against the targets: end to end >= 0.9 x 1 / (t_model + t_preprocess) per
image, >= 5 x the naive loop, and with the default DICOM outputs (SR with region, KOS, GSPS for
positives) >= 0.9 x the ``--no-dicom`` rate of the same run. That last ratio depends on the share
of positive images (each needs a heatmap), so it is printed with the share and the seconds spent
in heatmaps; ``--positive-share 0.2`` adds a pair of runs whose threshold makes that share of
the images positive (the model's own threshold stays the first pair's). Results go to ``--json``.

    python -m benchmarks.score_folder --n 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import BenchContext, Row, Section, Timing

logger = logging.getLogger("benchmarks.score_folder")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("image_*") if p.is_file())


def prepare_data(folder: Path, n: int, size: int, compress: bool) -> list[Path]:
    """Generate (or reuse) ``n`` synthetic DX/CR studies of ``size`` x ``size`` pixels."""
    from monai_fracture.data.synthetic import generate_demo_dataset

    marker = folder / f".benchmark-{n}-{size}-{int(compress)}"
    if not marker.is_file():
        if folder.exists():
            shutil.rmtree(folder)
        started = time.perf_counter()
        generate_demo_dataset(folder, n=n, modality="xr", seed=0, size=f"{size}x{size}", compress=compress,
                              workers=max(1, (os.cpu_count() or 1)))
        logger.info("generated %d images in %.1f s", n, time.perf_counter() - started)
        marker.write_text("ok\n")
    return _images(folder)


def benchmark_model(model_dir: Path | None, calibration: list[Path], work: Path) -> Path:
    """The bundle's trained model when present; else an EfficientNet-B0 with BatchNorm calibrated on
    the data (untrained weights would shrink activations and time an unrealistic network)."""
    from monai_fracture.model.classifier import default_model_path

    chosen = model_dir or default_model_path()
    if chosen is not None:
        return Path(chosen)
    from monai_fracture.io import read_image
    from monai_fracture.model.package import ModelInfo, save_model
    from monai_fracture.networks import build_network
    from monai_fracture.model.classifier import channel_first
    from monai_fracture.transforms.presets import build_preprocessing

    network = {"name": "efficientnet-b0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    net = build_network(**network, pretrained=False)
    preprocessing = build_preprocessing("xr", 224, load=False)
    batch = torch.stack([torch.as_tensor(preprocessing({"image": channel_first(*read_image(p))})["image"]).as_subclass(torch.Tensor)
                         for p in calibration])
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(batch)
    info = ModelInfo(name="benchmark-b0", version="bn-calibrated", network=network,
                     preprocessing={"modality": "xr", "size": 224}, threshold=0.5, modality="xr")
    return save_model(work / "model", net.eval(), info)


def time_preprocessing(classifier, files: list[Path]) -> tuple[float, list[torch.Tensor]]:
    from monai_fracture.io import read_image

    tensors = []
    started = time.perf_counter()
    for path in files:
        tensors.append(classifier.preprocess(*read_image(path)))
    return (time.perf_counter() - started) / len(files), tensors


def time_model(classifier, tensors: list[torch.Tensor], batch_size: int, repeats: int = 2) -> float:
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    classifier.predict(batches[0])  # warm-up (allocator, kernels)
    started = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            classifier.predict(batch)
    return (time.perf_counter() - started) / (repeats * len(tensors))


def time_naive(classifier, files: list[Path], size: int) -> float:
    """What a first script does: read, scale, resize and score one image at a time."""
    import pydicom

    network = classifier.model.network
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    started = time.perf_counter()
    for path in files:
        pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
        pixels = (pixels - pixels.min()) / max(float(pixels.max() - pixels.min()), 1e-6)
        tensor = torch.from_numpy(pixels)[None, None]
        tensor = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
        tensor = ((tensor.repeat(1, 3, 1, 1) - mean) / std).to(classifier.device)
        with torch.no_grad():
            torch.softmax(network(tensor), 1).cpu()
    return (time.perf_counter() - started) / len(files)


def _score_once(data_dir: Path, model_path: Path, device: str, backend: str, batch_size: int, workers: int,
                write_dicom: bool, threshold: float | None = None) -> dict:
    """One fresh ``score_paths`` run: its rate, positive share, heatmap seconds and probabilities."""
    from monai_fracture.model import Classifier
    from monai_fracture.scoring import score_paths

    work = Path(tempfile.mkdtemp(prefix="score-bench-"))
    try:
        run_classifier = Classifier(model_path, device=device, backend=backend, threshold=threshold)
        summary = score_paths([data_dir], work / "scored", model=run_classifier, batch_size=batch_size,
                              workers=workers, write_dicom=write_dicom, progress=sys.stderr.isatty())
        manifest = json.loads(summary.manifest.read_text())
        table = summary.results
        scored = table[table["status"] == "scored"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"write_dicom": write_dicom, "manifest": manifest,
            "images_per_second": summary.counts["scored"] / manifest["timings"]["total_s"],
            "positive_share": float((scored["prediction"] == "1").mean()) if len(scored) else 0.0,
            "heatmaps_s": float(manifest["timings"].get("heatmaps_s", 0.0)),
            "total_s": float(manifest["timings"]["total_s"]),
            "probabilities": scored["probability"].astype(float).to_numpy()}


def _pair_summary(runs: list[dict]) -> dict:
    """Median rates with and without DICOM outputs of runs taken in turns, their ratio, share and heatmap time."""
    import statistics

    dicom = [r for r in runs if r["write_dicom"]]
    plain = [r for r in runs if not r["write_dicom"]]
    rate, rate_plain = (statistics.median(r["images_per_second"] for r in dicom),
                        statistics.median(r["images_per_second"] for r in plain))
    return {"dicom_images_per_second": rate, "no_dicom_images_per_second": rate_plain,
            "ratio_dicom_vs_no_dicom": rate / rate_plain,
            "dicom_runs_images_per_second": [r["images_per_second"] for r in dicom],
            "no_dicom_runs_images_per_second": [r["images_per_second"] for r in plain],
            "positive_share": dicom[0]["positive_share"],
            "heatmaps_s": [r["heatmaps_s"] for r in dicom], "dicom_total_s": [r["total_s"] for r in dicom]}


def measure_scoring(files: list[Path], data_dir: Path, model_path: Path, *, batch_size: int = 16, workers: int = 2,
                    device: str = "cpu", sample: int = 48, repeats: int = 1, backend: str = "auto",
                    positive_shares: tuple[float, ...] = ()) -> dict:
    """End to end over ``files`` (``repeats`` fresh runs) and its components, all in this process."""
    import statistics

    from monai_fracture.model import Classifier

    sample_files = files[: min(sample, len(files))]
    classifier = Classifier(model_path, device=device, backend=backend)
    input_size = int(classifier.info.preprocessing.get("size", 224))

    t_pre, tensors = time_preprocessing(classifier, sample_files)
    classifier.prepare(torch.stack(tensors[:batch_size]), expected_images=len(files))  # as a run does
    t_model = time_model(classifier, tensors, batch_size)
    t_naive = time_naive(classifier, sample_files[: min(16, len(sample_files))], input_size)

    rates, rates_no_dicom, manifests, runs = [], [], [], []
    for _ in range(max(1, repeats)):  # with and without the DICOM outputs, taking turns
        for write_dicom, sink in ((True, rates), (False, rates_no_dicom)):
            run = _score_once(data_dir, model_path, device, backend, batch_size, workers, write_dicom)
            sink.append(run["images_per_second"])
            runs.append(run)
            if write_dicom:
                manifests.append(run["manifest"])
    shares = {"model threshold": _pair_summary(runs)}
    for share in positive_shares:
        probabilities = np.sort(runs[-1]["probabilities"])  # the last no-dicom run's
        threshold = float(probabilities[int(round((1.0 - share) * (len(probabilities) - 1)))])
        pair = [_score_once(data_dir, model_path, device, backend, batch_size, workers, write_dicom, threshold)
                for _ in range(max(1, repeats)) for write_dicom in (True, False)]
        shares[f"{share:.0%} positive"] = {**_pair_summary(pair), "threshold": threshold}
    e2e = statistics.median(rates)
    e2e_no_dicom = statistics.median(rates_no_dicom)
    bound = 1.0 / (t_model + t_pre)
    naive = 1.0 / t_naive
    manifest = manifests[-1]
    return {
        "n": len(files),
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "model": manifest["model"],
        "scored": manifest["counts"]["scored"],
        "end_to_end_images_per_second": e2e,
        "end_to_end_runs_images_per_second": rates,
        "end_to_end_no_dicom_images_per_second": e2e_no_dicom,
        "end_to_end_no_dicom_runs_images_per_second": rates_no_dicom,
        "ratio_end_to_end_no_dicom_vs_serial_bound": e2e_no_dicom / bound,
        "end_to_end_timings_s": manifest["timings"],
        "preprocess_only_images_per_second": 1.0 / t_pre,
        "model_only_images_per_second": 1.0 / t_model,
        "model_backend": classifier.backend.name,
        "serial_bound_images_per_second": bound,
        "naive_loop_images_per_second": naive,
        "ratio_end_to_end_vs_serial_bound": e2e / bound,
        "ratio_end_to_end_vs_naive": e2e / naive,
        "ratio_dicom_vs_no_dicom": e2e / e2e_no_dicom,
        "positive_share": shares["model threshold"]["positive_share"],
        "heatmaps_s": shares["model threshold"]["heatmaps_s"],
        "by_positive_share": shares,
        "targets": {"vs_serial_bound": 0.9, "vs_naive": 5.0, "dicom_vs_no_dicom": 0.9},
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": manifest["versions"],
    }


def run(ctx: BenchContext) -> Section:
    """The ``scoring`` section of ``make bench`` (2048^2 DX; 500 files, 64 with ``--quick``)."""
    started = time.perf_counter()
    n = 64 if ctx.quick else 500
    data_dir = ctx.data_dir / "score_folder_2048"
    files = prepare_data(data_dir, n, 2048, compress=False)
    model_path = benchmark_model(None, files[:16], ctx.out_dir)
    report = measure_scoring(files, data_dir, model_path, device=ctx.device,
                             workers=min(2, os.cpu_count() or 1), repeats=1 if ctx.quick else 3)
    e2e_runs = [1.0 / r for r in report["end_to_end_runs_images_per_second"]]
    rows = [
        Row.rate("end to end (score_paths)", Timing(e2e_runs), 1, baseline="serial bound",
                 ratio=report["ratio_end_to_end_vs_serial_bound"], ratio_meaning="x 1/(t_model + t_preprocess)",
                 target=">= 0.9", passed=report["ratio_end_to_end_vs_serial_bound"] >= 0.9),
        Row.rate("end to end, --no-dicom (CSV only)", Timing([1.0 / r for r in report["end_to_end_no_dicom_runs_images_per_second"]]), 1,
                 baseline="serial bound", ratio=report["ratio_end_to_end_no_dicom_vs_serial_bound"],
                 ratio_meaning="x 1/(t_model + t_preprocess)", target=">= 0.9",
                 passed=report["ratio_end_to_end_no_dicom_vs_serial_bound"] >= 0.9),
        *(Row(f"default DICOM outputs vs --no-dicom ({name}: {pair['positive_share']:.0%} positive)", "ratio",
              pair["ratio_dicom_vs_no_dicom"], min(pair["dicom_runs_images_per_second"]) / max(pair["no_dicom_runs_images_per_second"]),
              max(pair["dicom_runs_images_per_second"]) / min(pair["no_dicom_runs_images_per_second"]), "x",
              baseline="--no-dicom, same run", target=">= 0.9", passed=pair["ratio_dicom_vs_no_dicom"] >= 0.9)
          for name, pair in report["by_positive_share"].items()),
        Row("end to end vs naive loop", "ratio", report["ratio_end_to_end_vs_naive"],
            report["ratio_end_to_end_vs_naive"], report["ratio_end_to_end_vs_naive"], "x", baseline="naive loop",
            target=">= 5", passed=report["ratio_end_to_end_vs_naive"] >= 5.0),
        Row("preprocess only", "throughput", report["preprocess_only_images_per_second"],
            report["preprocess_only_images_per_second"], report["preprocess_only_images_per_second"], "img/s"),
        Row(f"model only ({report['model_backend']})", "throughput", report["model_only_images_per_second"],
            report["model_only_images_per_second"], report["model_only_images_per_second"], "img/s"),
        Row("serial bound 1/(t_model+t_pre)", "throughput", report["serial_bound_images_per_second"],
            report["serial_bound_images_per_second"], report["serial_bound_images_per_second"], "img/s"),
        Row("naive loop (pydicom, bs 1, fp32)", "throughput", report["naive_loop_images_per_second"],
            report["naive_loop_images_per_second"], report["naive_loop_images_per_second"], "img/s"),
    ]
    return Section("scoring", f"End-to-end scoring of {n} generated 2048x2048 DX files", rows, report,
                   seconds=time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="images to generate and score (default 500)")
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--sample", type=int, default=48, help="images for the component timings (default 48)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    parser.add_argument("--backend", default="auto", help="inference backend (default auto)")
    parser.add_argument("--repeats", type=int, default=1, help="end-to-end runs (the median is reported)")
    parser.add_argument("--model", type=Path, help="model to time (default: the bundle's, else a BN-calibrated B0)")
    parser.add_argument("--data-dir", type=Path, help="where the generated files live (reused between runs)")
    parser.add_argument("--compress", action="store_true", help="mixed compressed transfer syntaxes (slower decode)")
    parser.add_argument("--positive-share", type=float, action="append", default=[],
                        help="also time a pair of runs whose threshold makes this share of images positive (repeatable)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/score_folder.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("highdicom").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="score-bench-model-"))
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / f"monai-fracture-bench-{args.size}"
    files = prepare_data(data_dir, args.n, args.size, args.compress)
    model_path = benchmark_model(args.model, files[: min(16, len(files))], work)
    report = measure_scoring(files, data_dir, model_path, batch_size=args.batch_size, workers=args.workers,
                             device=args.device, sample=args.sample, repeats=args.repeats, backend=args.backend,
                             positive_shares=tuple(args.positive_share))
    report["size"] = args.size
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    e2e, bound, naive = (report["end_to_end_images_per_second"], report["serial_bound_images_per_second"],
                         report["naive_loop_images_per_second"])
    lines = [
        f"images: {len(files)} x {args.size}^2, batch {args.batch_size}, workers {args.workers}, device {args.device}, "
        f"model {report['model']['id']}, backend {report['model_backend']}",
        f"end to end        {e2e:8.2f} img/s",
        f"preprocess only   {report['preprocess_only_images_per_second']:8.2f} img/s",
        f"model only        {report['model_only_images_per_second']:8.2f} img/s",
        f"1/(t_model+t_pre) {bound:8.2f} img/s",
        f"naive loop        {naive:8.2f} img/s",
        f"end to end / serial bound = {e2e / bound:.2f} (target >= 0.9)",
        f"end to end / naive        = {e2e / naive:.2f} (target >= 5)",
        *(f"{name}: {pair['positive_share']:.0%} of images positive, default outputs "
          f"{pair['dicom_images_per_second']:.2f} img/s vs --no-dicom {pair['no_dicom_images_per_second']:.2f} img/s "
          f"= {pair['ratio_dicom_vs_no_dicom']:.2f} (target >= 0.9), heatmaps "
          f"{', '.join(f'{h:.1f}' for h in pair['heatmaps_s'])} s of {', '.join(f'{t:.1f}' for t in pair['dicom_total_s'])} s"
          for name, pair in report["by_positive_share"].items()),
        f"json: {args.json}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
