"""The embedded synthetic dataset: DICOM validity, variety, determinism, lossless compression, no shortcuts."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from monai_fracture.data import load_datalist
from monai_fracture.data.synthetic import generate_demo_dataset
from monai_fracture.data.synthetic import LABEL_COLUMNS
from helpers.needs import tool


@pytest.fixture(scope="module")
def xr_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_xr")
    generate_demo_dataset(out, n=160, seed=3, size=256)
    return out


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_ct")
    generate_demo_dataset(out, n=6, modality="ct", seed=1, size=32)
    return out


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_labels_table_describes_every_file(xr_set: Path) -> None:
    table = pd.read_csv(xr_set / "labels.csv", keep_default_na=False)
    assert list(table.columns) == LABEL_COLUMNS
    assert len(table) == 160
    for row in table.itertuples():
        ds = pydicom.dcmread(xr_set / row.path, stop_before_pixels=True)
        assert ds.SOPInstanceUID == row.sop_uid and ds.StudyInstanceUID == row.study_uid
        assert ds.SeriesInstanceUID == row.series_uid and ds.PatientID == row.patient_id == row.group
        assert ds.PhotometricInterpretation == row.photometric and ds.BitsStored == row.bits_stored
        assert ds.file_meta.TransferSyntaxUID == row.transfer_syntax and ds.Modality == row.modality
    positives = table[table.label == 1]
    assert 0.35 < table.label.mean() < 0.65
    assert set(positives.fracture_type) == {"transverse", "oblique", "comminuted", "displaced", "hairline"}
    assert (positives.fracture_type == "hairline").mean() <= 0.2
    assert set(table[table.label == 0].fracture_type) == {"none"}
    # fracture location lies inside the image
    rows = positives.fracture_row.astype(float)
    cols = positives.fracture_col.astype(float)
    assert ((rows > 0) & (rows < positives.rows) & (cols > 0) & (cols < positives.cols)).all()
    assert positives.fracture_position.astype(float).between(0, 1).all()


def test_archive_like_variety(xr_set: Path) -> None:
    table = pd.read_csv(xr_set / "labels.csv")
    assert set(table.modality) == {"DX", "CR"}
    assert set(table.photometric) == {"MONOCHROME1", "MONOCHROME2"}
    assert table.bits_stored.min() >= 10 and table.bits_stored.max() <= 16 and table.bits_stored.nunique() >= 3
    assert {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1"} <= set(table.transfer_syntax)
    assert set(table.window) >= {"window", "none", "voi_lut"}
    assert table.pixel_spacing.between(0.1, 0.2).all() and table.pixel_spacing.nunique() >= 3
    assert (~table.path.str.endswith(".dcm")).any(), "some files should be extensionless"
    per_patient = table.groupby("patient_id").study_uid.nunique()
    per_study = table.groupby("study_uid").sop_uid.nunique()
    assert per_patient.max() >= 2 and per_study.max() >= 2
    assert table.sop_uid.is_unique


def test_generated_datalist_is_grouped_and_loads_with_monai(xr_set: Path) -> None:
    datalist = load_datalist(xr_set / "datalist.json")
    train = {it["group"] for it in datalist["training"]}
    val = {it["group"] for it in datalist["validation"]}
    assert train and val and not train & val
    assert all(Path(it["image"]).is_file() for it in datalist["training"] + datalist["validation"])
    assert len(datalist["training"]) + len(datalist["validation"]) == 160


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_demo_dataset(tmp_path / name, n=8, seed=seed, size=160)
    a, b, c = (_tree_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert set(a.values()).isdisjoint(
        v for k, v in c.items() if not k.endswith(".json")
    ), "another seed must give other files"


def test_compressed_files_decode_to_the_pixels_written(tmp_path: Path) -> None:
    """Same seed with and without compression: same pixels, whatever the transfer syntax."""
    plain = generate_demo_dataset(tmp_path / "plain", n=30, seed=11, size=192, compress=False)
    packed = generate_demo_dataset(tmp_path / "packed", n=30, seed=11, size=192, compress=True)
    assert set(plain.transfer_syntax) <= {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
    compressed = packed[packed.transfer_syntax.isin(["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"])]
    assert compressed.transfer_syntax.nunique() >= 2
    for row in compressed.itertuples():
        ref = plain[plain.sop_uid == row.sop_uid].iloc[0]
        a = pydicom.dcmread(tmp_path / "plain" / ref.path).pixel_array
        b = pydicom.dcmread(tmp_path / "packed" / row.path).pixel_array
        assert a.dtype == b.dtype and np.array_equal(a, b), row.path


def test_global_statistics_do_not_predict_the_label(xr_set: Path) -> None:
    """Only bone tells the classes apart: intensity histogram, image and file size stay near chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = pd.read_csv(xr_set / "labels.csv")
    features = []
    for path in table.path:
        ds = pydicom.dcmread(xr_set / path)
        a = ds.pixel_array.astype(np.float32)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            a = a.max() - a
        a = (a - a.min()) / (np.ptp(a) + 1e-6)
        features.append([a.mean(), a.std(), *np.percentile(a, [1, 5, 25, 50, 75, 95, 99]), *a.shape, (xr_set / path).stat().st_size])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(model, np.array(features), table.label, cv=cv, groups=table.group, method="predict_proba")[:, 1]
    auc = roc_auc_score(table.label, scores)
    assert auc < 0.65, f"global features predict the label (ROC-AUC {auc:.3f}): the set has a shortcut"


def test_ct_series_geometry_and_hounsfield_units(ct_set: Path) -> None:
    table = pd.read_csv(ct_set / "labels.csv")
    assert len(table) == 6 and set(table.modality) == {"CT"} and (table.slices == 32).all()
    assert table.label.sum() >= 1
    for row in table.itertuples():
        files = sorted((ct_set / row.path).iterdir())
        assert len(files) == 32
        slices = [pydicom.dcmread(f) for f in files]
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
        assert np.allclose(np.diff(z), float(slices[0].SliceThickness))
        assert {ds.SeriesInstanceUID for ds in slices} == {row.series_uid}
        assert len({ds.SOPInstanceUID for ds in slices}) == 32
        assert [float(v) for v in slices[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
        assert hu.min() < -900  # air
        assert (hu > 700).sum() > 50  # cortical bone
        assert ((hu > -20) & (hu < 100)).sum() > 300  # soft tissue
        if row.label == 1:
            assert 0 <= row.fracture_slice < 32


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run([tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_dciodvfy_finds_no_errors(xr_set: Path, ct_set: Path) -> None:
    table = pd.read_csv(xr_set / "labels.csv")
    samples = []
    for keys, group in table.groupby(["modality", "window", "photometric"]):
        samples.append(group.path.iloc[0])
    for _, group in table.groupby("transfer_syntax"):
        samples.append(group.path.iloc[0])
    assert {p for p in samples if table.set_index("path").loc[p, "modality"] == "DX"}
    assert {p for p in samples if table.set_index("path").loc[p, "modality"] == "CR"}
    checked = [xr_set / p for p in samples]
    ct_table = pd.read_csv(ct_set / "labels.csv")
    checked += [sorted((ct_set / p).iterdir())[5] for p in ct_table.path[:2]]
    for path in checked:
        assert _dciodvfy_errors(path) == [], path


def test_demo_data_cli(tmp_path: Path, capsys) -> None:
    from monai_fracture.cli import main

    assert main(["demo-data", str(tmp_path / "cli"), "--n", "6", "--size", "128x96", "--seed", "2", "--no-compress"]) == 0
    table = pd.read_csv(tmp_path / "cli" / "labels.csv")
    assert len(table) == 6 and (table.rows == 128).all() and (table.cols == 96).all()
    assert set(table.transfer_syntax) <= {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
    assert "training" in capsys.readouterr().out


def test_fractures_stay_visible_after_downscaling_to_128_px() -> None:
    """Same phantom with and without the break: the difference survives an area resize to 128 px."""
    import torch
    import torch.nn.functional as F

    from monai_fracture.data.synthetic.phantom import ANATOMIES, FRACTURE_TYPES, simulate_radiograph

    contrast: dict[str, list[float]] = {}
    for i in range(24):
        kind, anatomy = FRACTURE_TYPES[i % 5], ANATOMIES[(i // 5) % 4]
        broken = simulate_radiograph((512, 416), np.random.default_rng([i, 1]), anatomy, kind, np.random.default_rng([i, 2]))
        clean = simulate_radiograph((512, 416), np.random.default_rng([i, 1]), anatomy, None)
        assert broken.fracture is not None and clean.fracture is None
        diff = torch.from_numpy(broken.signal - clean.signal)[None, None]
        small = F.interpolate(diff, size=(128, 104), mode="area").abs().max().item()
        contrast.setdefault(kind, []).append(small)
        # the recorded fracture location is where the images differ
        r, c = int(broken.fracture.row), int(broken.fracture.col)
        near = np.abs(broken.signal - clean.signal)[max(r - 16, 0) : r + 16, max(c - 16, 0) : c + 16]
        assert near.max() > 0.2, (kind, anatomy, r, c)
    for kind, values in contrast.items():
        if kind != "hairline":
            assert min(values) > 0.3, (kind, values)
    assert np.median(contrast["hairline"]) < np.median(contrast["transverse"])
