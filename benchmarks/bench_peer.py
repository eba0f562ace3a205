"""Against what a MONAI user would write instead: a plain MONAI pipeline vs ``monai-fracture score``.

Same files, same machine, same trained network (the shipped model's ``model.pt``), one process
run after the other, interleaved per repeat:

- ``plain MONAI``: what a MONAI user would write from the tutorials: ``LoadImage`` with MONAI's
  ``PydicomReader`` (``swap_ij=False``: the network was trained on images as stored, rows first,
  and MONAI's default transposes them; a user scoring this network sets it),
  ``EnsureChannelFirst``, ``ScaleIntensity`` to the model's [-1, 1] input range, ``Resize`` to
  the model's square input, ``RepeatChannel`` to its 3 channels, the
  network in eager PyTorch (fp32, ``torch.no_grad``), a ``DataLoader`` with workers, and the
  probabilities and decisions (the model's threshold) written to a CSV;
- ``monai-fracture score``: the CLI with its default DICOM outputs (TID 1500 SR per study, KOS
  and GSPS for positive studies), same worker count.

Where the preprocessing differs (so decisions may differ): ours applies the modality LUT,
the file's VOI window, MONOCHROME1 inversion and keeps the aspect ratio (pad to square), the
plain pipeline min-max scales the stored values and stretches to a square. Decision agreement
is reported, not required, overall and per group of files by how far the two inputs differ
(``preprocessing_group``: no file is fully equivalent, since ours clips at percentiles).

    python -m benchmarks.bench_peer [--repeats 3] [--quick] [--workers 1] [--data DIR]
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BenchContext, Row, Section, Timing, machine, standalone

logger = logging.getLogger("benchmarks.bench_peer")

N_IMAGES = 500
N_QUICK = 32
SIZE = "2048x2048"
SEED = 0

#: The plain MONAI pipeline, run as its own process (argv: data dir, model.pt, out CSV, workers, batch size).
PLAIN = r'''
import csv, json, sys
from pathlib import Path
import torch
from monai.data import DataLoader, Dataset, PydicomReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RepeatChanneld, Resized, ScaleIntensityd
from monai_fracture.model.package import load_model

data, model_path, out, workers, batch_size = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
loaded = load_model(model_path)
info = json.loads((Path(model_path).parent / "model_info.json").read_text())
size, channels = int(info["preprocessing"]["size"]), int(info["network"]["in_channels"])
files = sorted(str(p) for p in data.rglob("image_*") if p.is_file())
transform = Compose([
    # the network was trained on images as stored (rows first); MONAI's reader puts columns first unless told
    LoadImaged("image", reader=PydicomReader(swap_ij=False)),
    EnsureChannelFirstd("image"),
    ScaleIntensityd("image", minv=-1.0, maxv=1.0),
    Resized("image", (size, size)),
    RepeatChanneld("image", channels),
])
loader = DataLoader(Dataset([{"image": f, "path": f} for f in files], transform), batch_size=batch_size,
                    num_workers=workers)
network = loaded.network.eval()
with open(out, "w", newline="") as handle, torch.no_grad():
    writer = csv.writer(handle)
    writer.writerow(["path", "probability", "prediction"])
    for batch in loader:
        images = batch["image"].as_tensor() if hasattr(batch["image"], "as_tensor") else batch["image"]
        p = torch.softmax(network(images.float()), dim=1)[:, 1].numpy()
        for path, value in zip(batch["path"], p):
            writer.writerow([path, f"{value:.6f}", int(value >= loaded.threshold)])
'''


def prepare_data(root: Path, n: int) -> Path:
    """``n`` generated 2048x2048 DX files (uncompressed, studies of 1-4 images), made once."""
    from monai_fracture.data.synthetic import generate_demo_dataset

    folder = root / f"dx-{n}"
    marker = root / f".generated-{n}-{SIZE}-{SEED}"
    if not marker.is_file():
        if folder.exists():
            shutil.rmtree(folder)
        generate_demo_dataset(folder, n=n, modality="xr", seed=SEED, size=SIZE, compress=False)
        marker.write_text("ok\n")
    return folder


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')[-3000:]}")
    return seconds


def _decisions(csv_path: Path, column: str = "prediction") -> dict[str, int]:
    with open(csv_path, newline="") as handle:
        return {os.path.realpath(r["path"]): int(r[column]) for r in csv.DictReader(handle) if r.get(column, "") != ""}


def _probabilities(csv_path: Path) -> dict[str, float]:
    with open(csv_path, newline="") as handle:
        return {os.path.realpath(r["path"]): float(r["probability"]) for r in csv.DictReader(handle)
                if r.get("probability", "") != ""}


def preprocessing_group(path: str) -> str:
    """How far the plain pipeline's input is from ours for this file (same network, same size).

    ``closest``: MONOCHROME2 without a VOI window, where the only difference left is our
    0.5-99.5 percentile clip against its min-max; ``VOI window`` / ``MONOCHROME1``: ours applies
    the file's window or inverts, the plain pipeline does neither.
    """
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    if str(header.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        return "MONOCHROME1 (ours inverts)"
    if "WindowCenter" in header or "VOILUTSequence" in header:
        return "VOI window (ours applies it)"
    return "closest (MONOCHROME2, no window: percentile clip vs min-max)"


def run(ctx: BenchContext, data: Path | None = None, workers: int = 1) -> Section:
    from monai_fracture.model.classifier import default_model_path

    model_dir = default_model_path()
    model_pt = model_dir / "model.pt"
    n = N_QUICK if ctx.quick else N_IMAGES
    folder = data or prepare_data(ctx.data_dir / "peer", n)
    n = sum(1 for p in folder.rglob("image_*") if p.is_file())
    work = ctx.out_dir / "peer-runs"
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {"plain MONAI": [], "monai-fracture score": []}
    repeats = max(1, ctx.repeats)
    for _ in range(repeats):
        plain_csv = work / "plain.csv"
        seconds["plain MONAI"].append(_timed([sys.executable, "-c", PLAIN, str(folder), str(model_pt), str(plain_csv),
                                              str(workers), "16"]))
        out = work / "ours"
        shutil.rmtree(out, ignore_errors=True)
        seconds["monai-fracture score"].append(_timed([sys.executable, "-m", "monai_fracture", "score", str(folder),
                                                       "--out", str(out), "--model", str(model_dir), "--workers",
                                                       str(workers), "--no-progress"]))
    load_after = os.getloadavg()
    plain, ours = _decisions(plain_csv), _decisions(out / "results.csv")
    common = sorted(set(plain) & set(ours))
    agree = sum(plain[k] == ours[k] for k in common)
    groups: dict[str, list[int]] = {}
    for key in common:
        counts = groups.setdefault(preprocessing_group(key), [0, 0])
        counts[0] += plain[key] == ours[key]
        counts[1] += 1
    p_plain, p_ours = _probabilities(plain_csv), _probabilities(out / "results.csv")
    differences = sorted(abs(p_plain[k] - p_ours[k]) for k in common if k in p_plain and k in p_ours)
    dicom_files = sum(1 for _ in (out / "dicom").rglob("*.dcm")) if (out / "dicom").is_dir() else 0
    rates = {name: Timing([n / s for s in values]) for name, values in seconds.items()}
    ratio = rates["monai-fracture score"].median / rates["plain MONAI"].median
    rows = [
        Row(case="plain MONAI (PydicomReader, ScaleIntensity, Resize, eager fp32, DataLoader, CSV)",
            metric="throughput", median=rates["plain MONAI"].median, low=rates["plain MONAI"].low,
            high=rates["plain MONAI"].high, unit="img/s"),
        Row(case="monai-fracture score, default DICOM outputs", metric="throughput",
            median=rates["monai-fracture score"].median, low=rates["monai-fracture score"].low,
            high=rates["monai-fracture score"].high, unit="img/s", baseline="plain MONAI", ratio=ratio,
            ratio_meaning="ours / plain MONAI (target >= 5)"),
    ]
    details = {
        "machine": machine(),
        "images": n,
        "workers": workers,
        "repeats": repeats,
        "seconds": seconds,
        "decisions_compared": len(common),
        "decisions_agree": agree,
        "decisions_agree_by_preprocessing": {name: f"{a} of {n}" for name, (a, n) in sorted(groups.items())},
        "probability_difference_median_max": [differences[len(differences) // 2], differences[-1]] if differences else None,
        "dicom_files_written_by_ours": dicom_files,
        "load_average_before_after": [list(load_before), list(load_after)],
        "preprocessing_differences": "ours: modality LUT, VOI window, MONOCHROME1 inversion, aspect kept (pad to "
                                     "square); plain: min-max of stored values, stretched to a square",
    }
    shutil.rmtree(work, ignore_errors=True)
    return Section(name="peer", title="Against a plain MONAI pipeline (same files, same network)", rows=rows,
                   details=details)


def main(argv: list[str] | None = None) -> None:
    def add(parser):
        parser.add_argument("--data", type=Path, default=None, help="score this folder instead of generated DX files")
        parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for both (default 1)")

    section = standalone(__doc__.splitlines()[0], lambda ctx, args: run(ctx, args.data, args.workers), argv,
                         repeats=3, add_arguments=add)
    print(section.details)


if __name__ == "__main__":
    main()
