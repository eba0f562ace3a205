"""Is the heatmap pass faster in bf16 autocast or channels_last on this CPU, and are its maps the same?

A measurement, not a test: the batched LayerCAM pass (``model.gradcam.class_activation_maps``) of
the shipped FracAtlas model on ``--n`` phantom radiographs, fp32 (what scoring runs) against bf16
autocast and channels_last, the variants taking turns ``--repeats`` times in one process, so the
ratios hold on a loaded machine. Each variant's source-sized maps are compared with fp32's: the
largest difference (maps in [0, 1]) and how many hot regions (peak and outline, what the SR and
GSPS draw) differ.

    python -m benchmarks.bench_cam_precision --n 16 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

MODEL = "bundles/fracture_classification/models/fracatlas"


def _inputs(classifier, n: int, size: int):
    from monai_fracture.data.synthetic.phantom import ANATOMIES, FRACTURE_TYPES, simulate_radiograph

    rng = np.random.default_rng(0)
    images = [simulate_radiograph((size, size), np.random.default_rng(100 + i), str(rng.choice(ANATOMIES)),
                                  str(rng.choice(FRACTURE_TYPES))).signal for i in range(n)]
    return [classifier.heatmap_input(image, {}) for image in images]


def _maps(classifier, network, inputs, bf16: bool, channels_last: bool) -> list[np.ndarray]:
    from monai_fracture.model.gradcam import class_activation_maps, scale_to_unit

    batch = torch.stack([i.image for i in inputs])
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    with context:
        raw = class_activation_maps(network, batch, classifier.cam_layers(), 1, classifier.heatmap_fusion,
                                    classifier.heatmap_flip).float()
    return [scale_to_unit(classifier._to_source_geometry(r, i.geometry)) for r, i in zip(raw, inputs)]


def main(argv: list[str] | None = None) -> int:
    from monai_fracture.model import Classifier
    from monai_fracture.model.gradcam import hot_region

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="images in the batch (default 16, the scoring batch)")
    parser.add_argument("--size", type=int, default=1024, help="phantom side in pixels (default 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    classifier = Classifier(MODEL, backend="fp32")
    inputs = _inputs(classifier, args.n, args.size)
    last = copy.deepcopy(classifier.model.network).to(memory_format=torch.channels_last)
    variants = {"fp32": (classifier.model.network, False, False), "bf16 autocast": (classifier.model.network, True, False),
                "channels_last": (last, False, True), "bf16 + channels_last": (last, True, True)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    maps: dict[str, list[np.ndarray]] = {}
    for name, (network, bf16, channels_last) in variants.items():  # warm-up (kernels, allocator)
        maps[name] = _maps(classifier, network, inputs[:2], bf16, channels_last)
    for _ in range(args.repeats):
        for name, (network, bf16, channels_last) in variants.items():
            started = time.perf_counter()
            maps[name] = _maps(classifier, network, inputs, bf16, channels_last)
            seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["fp32"])
    report = {}
    for name in variants:
        diff = max(float(np.abs(a - b).max()) for a, b in zip(maps[name], maps["fp32"]))
        regions = sum(hot_region(a) != hot_region(b) for a, b in zip(maps[name], maps["fp32"]))
        peaks = sum(hot_region(a).peak != hot_region(b).peak for a, b in zip(maps[name], maps["fp32"]))
        median = statistics.median(seconds[name])
        report[name] = {"seconds": seconds[name], "speedup_vs_fp32": base / median, "max_abs_diff": diff,
                        "regions_differing": int(regions), "peaks_differing": int(peaks)}
        sys.stdout.write(f"{name:22s} {median / args.n * 1000:7.1f} ms/image  x{base / median:4.2f} vs fp32  "
                         f"max |diff| {diff:.1e}  regions differing {regions}/{args.n} (peaks {peaks})\n")
    sys.stdout.write(json.dumps({"n": args.n, "threads": torch.get_num_threads(), "variants": report}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
