"""Helpers shared by the scoring and report tests: a small synthetic study folder, a small model
whose outputs vary (BatchNorm calibrated on the folder), corrupt inputs, dciodvfy. No tests here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from needs import tool

MODEL_SIZE = 64  # network input: small enough for CPU tests, large enough for EfficientNet's strides


def make_demo_folder(folder: Path, n: int = 10, seed: int = 3, size: int = 96) -> Path:
    """Synthetic radiograph studies (DICOM with and without .dcm, several transfer syntaxes, MONOCHROME1/2)."""
    from monai_fracture.data import generate_demo_dataset

    generate_demo_dataset(folder, n=n, modality="xr", seed=seed, size=size)
    return folder


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("image_*") if p.is_file())


def make_model(model_dir: Path, calibration_files: list[Path], threshold: float | None = None) -> Path:
    """An untrained EfficientNet-B0 whose BatchNorm statistics are calibrated on real inputs, so its
    probabilities differ between images; the threshold defaults to the median of those probabilities,
    which gives both positive and negative decisions."""
    import torch

    from monai_fracture.io import read_image
    from monai_fracture.model_package import ModelInfo, save_model
    from monai_fracture.networks import build_network
    from monai_fracture.scoring.classifier import channel_first
    from monai_fracture.transforms.presets import build_preprocessing

    torch.manual_seed(0)
    network_kwargs = {"name": "efficientnet-b0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    net = build_network(**network_kwargs, pretrained=False)
    preprocessing = build_preprocessing("xr", MODEL_SIZE, load=False)
    batch = torch.stack(
        [torch.as_tensor(preprocessing({"image": channel_first(*read_image(f))})["image"]).as_subclass(torch.Tensor) for f in calibration_files]
    )
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    net.train()
    with torch.no_grad():
        net(batch)
    net.eval()
    with torch.no_grad():
        probabilities = torch.softmax(net(batch), 1)[:, 1].numpy()
    if threshold is None:
        ordered = np.sort(probabilities)
        middle = len(ordered) // 2
        threshold = float((ordered[middle - 1] + ordered[middle]) / 2)
    info = ModelInfo(
        name="test-fracture",
        version="0.0.1",
        network=network_kwargs,
        preprocessing={"modality": "xr", "size": MODEL_SIZE},
        threshold=round(threshold, 6),
        threshold_rule="median of calibration probabilities (test model)",
        modality="xr",
    )
    save_model(model_dir, net, info)
    return model_dir


def add_bad_inputs(folder: Path, source_image: Path, corpus: Path | None) -> dict[str, str]:
    """Corrupt and non-image inputs next to the studies; returns {path: expected status}."""
    expected: dict[str, str] = {}
    bad = folder / "bad"
    bad.mkdir(exist_ok=True)
    data = source_image.read_bytes()
    truncated = bad / "truncated.dcm"
    truncated.write_bytes(data[: max(600, len(data) // 3)])
    expected[str(truncated)] = "failed"
    rng = np.random.default_rng(0)
    random_dcm = bad / "random.dcm"
    random_dcm.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expected[str(random_dcm)] = "failed"
    random_blob = bad / "blob"
    random_blob.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expected[str(random_blob)] = "skipped"
    readme = bad / "README.txt"
    readme.write_text("not an image\n")
    expected[str(readme)] = "skipped"
    (bad / ".hidden_file").write_text("hidden files are not listed\n")
    if corpus is not None:
        for name in ("pydicom_test_files/rtplan.dcm", "highdicom_testdata/sr_document.dcm"):
            target = bad / Path(name).name
            shutil.copyfile(corpus / name, target)
            expected[str(target)] = "skipped"
    return expected


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines of dciodvfy for one file ([] when clean); skips (here) or fails (CI) without dciodvfy."""
    out = subprocess.run([tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


#: Batched CPU kernels give a sample slightly different float results depending on its position in
#: the batch (measured up to 6.5e-6 here), so probabilities are compared within this tolerance and
#: every other column exactly.
PROBABILITY_TOLERANCE = 2e-5


def assert_same_results(csv_a, csv_b) -> None:
    """Two results.csv files (or two {sop: probability} dicts) agree: exactly, but probabilities within tolerance."""
    if isinstance(csv_a, dict):
        assert csv_a.keys() == csv_b.keys() and csv_a
        assert all(abs(float(csv_a[k]) - float(csv_b[k])) <= PROBABILITY_TOLERANCE for k in csv_a)
        return
    a = pd.read_csv(csv_a, dtype=str, keep_default_na=False)
    b = pd.read_csv(csv_b, dtype=str, keep_default_na=False)
    assert list(a.columns) == list(b.columns)
    assert list(a["path"]) == list(b["path"]) == sorted(a["path"])
    exact = [c for c in a.columns if c != "probability"]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    assert (a["probability"] == "").equals(b["probability"] == "")
    scored = a["probability"] != ""
    diff = (a.loc[scored, "probability"].astype(float) - b.loc[scored, "probability"].astype(float)).abs()
    assert diff.max() <= PROBABILITY_TOLERANCE, diff.max()


def sr_probabilities(out: Path) -> dict[str, str]:
    """{referenced SOP Instance UID: probability} from every SR under ``out/dicom``."""
    values = {}
    for path in out.glob("dicom/*/SR_*.dcm"):
        sr = pydicom.dcmread(path)
        stack = list(sr.ContentSequence)
        while stack:
            item = stack.pop()
            stack.extend(getattr(item, "ContentSequence", []))
            if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007":
                group = list(item.ContentSequence)
                # the image: a direct IMAGE item (TID 1501), or the one an Image Region SCOORD is selected from (TID 1410)
                images = [i for i in group if i.ValueType == "IMAGE"] + [
                    j for i in group if i.ValueType == "SCOORD" for j in i.ContentSequence if j.ValueType == "IMAGE"]
                ref = images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                num = next(i for i in group if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "122157")
                values[ref] = f"{float(num.MeasuredValueSequence[0].NumericValue):.6f}"
    return values
