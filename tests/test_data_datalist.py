"""Datalist builders, group-aware splits and the refusal of leaky splits."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from monai_fracture.data import (
    LeakageError,
    assign_groups,
    build_datalist,
    check_datalist,
    csv_items,
    detect_layout,
    dicom_folder_items,
    folder_items,
    fracatlas_items,
    load_datalist,
    resolve_datalist,
    split_items,
    write_datalist,
)
from monai_fracture.data.synthetic import generate_demo_dataset
from monai_fracture.data.synthetic.dicom_writer import save_dataset


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(out, n=40, seed=7, size=128)
    return out


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _groups(datalist: dict, key: str) -> set[str]:
    return {it["group"] for it in datalist.get(key, [])}


def _assert_grouped(datalist: dict) -> None:
    keys = [k for k in ("training", "validation", "test") if datalist.get(k)]
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not _groups(datalist, a) & _groups(datalist, b), (a, b)


# ----------------------------------------------------------------------------- splits


def test_split_keeps_groups_whole_and_balances_labels() -> None:
    rng = np.random.default_rng(0)
    groups = [f"p{int(g)}" for g in rng.integers(0, 300, size=1000)]
    labels = [int(rng.random() < 0.2) for _ in groups]
    items = [{"image": f"/x/{i}.dcm", "label": lab, "group": g} for i, (lab, g) in enumerate(zip(labels, groups))]
    dl = split_items(items, val_fraction=0.2, test_fraction=0.1, seed=1)
    _assert_grouped(dl)
    assert sum(len(dl[k]) for k in dl) == 1000
    for key, share in (("training", 0.7), ("validation", 0.2), ("test", 0.1)):
        assert abs(len(dl[key]) / 1000 - share) < 0.03, key
        pos = np.mean([it["label"] for it in dl[key]])
        assert abs(pos - np.mean(labels)) < 0.03, key
    assert split_items(items, val_fraction=0.2, test_fraction=0.1, seed=1) == dl
    assert split_items(items, val_fraction=0.2, test_fraction=0.1, seed=2) != dl


def test_k_fold_validation_parts_cover_everything_once() -> None:
    items = [{"image": f"/x/{i}", "label": i % 3 == 0, "group": f"g{i // 3}"} for i in range(120)]
    seen = Counter()
    tests = None
    for fold in range(4):
        dl = split_items(items, test_fraction=0.25, seed=3, fold=fold, num_folds=4)
        _assert_grouped(dl)
        seen.update(it["image"] for it in dl["validation"])
        test_images = {it["image"] for it in dl["test"]}
        assert tests is None or tests == test_images  # the same test part for every fold
        tests = test_images
        assert {it["fold"] for it in dl["validation"]} == {fold}
    assert set(seen.values()) == {1} and len(seen) + len(tests) == 120
    with pytest.raises(ValueError, match="fold"):
        split_items(items, fold=4, num_folds=4)


def test_assign_groups_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        assign_groups([0, 1], ["a"], [0.5, 0.5])
    with pytest.raises(ValueError, match="empty"):
        split_items([])


# ----------------------------------------------------------------------------- leakage


def test_leaky_hand_made_datalists_are_refused(demo: Path, tmp_path: Path, cache: Path) -> None:
    table = pd.read_csv(demo / "labels.csv")
    a, b, c = (str(demo / p) for p in table.path[:3])
    same_group = {"training": [{"image": a, "label": 0, "group": "P1"}], "validation": [{"image": b, "label": 1, "group": "P1"}]}
    with pytest.raises(LeakageError, match="group P1"):
        check_datalist(same_group, cache_dir=cache)
    copy = tmp_path / "copy_without_extension"
    shutil.copyfile(a, copy)
    byte_copy = {"training": [{"image": a, "label": 0, "group": "P1"}], "validation": [{"image": str(copy), "label": 0, "group": "P2"}]}
    with pytest.raises(LeakageError, match="identical bytes"):
        check_datalist(byte_copy, check_pixels=False, cache_dir=cache)
    # the same pixels re-encoded (RLE instead of uncompressed): other bytes, same image
    ds = pydicom.dcmread(c)
    was_rle = ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    recoded = tmp_path / "recoded.dcm"
    save_dataset(ds, recoded, "explicit" if was_rle else "rle")
    assert recoded.read_bytes() != Path(c).read_bytes()
    pixel_copy = {"training": [{"image": c, "label": 0, "group": "P3"}], "test": [{"image": str(recoded), "label": 0, "group": "P4"}]}
    with pytest.raises(LeakageError, match="identical pixels"):
        check_datalist(pixel_copy, cache_dir=cache)
    check_datalist(pixel_copy, check_pixels=False, cache_dir=cache)  # switchable
    clean = {"training": [{"image": a, "label": 0, "group": "P1"}], "validation": [{"image": b, "label": 1, "group": "P2"}]}
    check_datalist(clean, cache_dir=cache)
    # the refusal also stops writing and the CLI exits non-zero
    with pytest.raises(LeakageError):
        write_datalist(same_group, tmp_path / "leaky.json", cache_dir=cache)
    assert not (tmp_path / "leaky.json").exists()
    write_datalist(same_group, tmp_path / "leaky.json", check=False)
    from monai_fracture.cli import main

    assert main(["datalist", "check", str(tmp_path / "leaky.json"), "--cache-dir", str(cache)]) == 3
    write_datalist(clean, tmp_path / "clean.json", cache_dir=cache)
    assert main(["datalist", "check", str(tmp_path / "clean.json"), "--cache-dir", str(cache)]) == 0


def test_builder_refuses_a_byte_copy_under_another_group(demo: Path, tmp_path: Path, cache: Path) -> None:
    table = pd.read_csv(demo / "labels.csv")
    copies = tmp_path / "dup"
    copies.mkdir()
    rows = []
    for i, row in enumerate(table.itertuples()):
        rows.append({"path": str(demo / row.path), "label": row.label, "patient": row.patient_id})
    for i, row in enumerate(table.head(15).itertuples()):  # copies of 15 images under a new patient each
        dst = copies / f"copy{i}.dcm"
        shutil.copyfile(demo / row.path, dst)
        rows.append({"path": str(dst), "label": row.label, "patient": f"OTHER{i}"})
    pd.DataFrame(rows).to_csv(tmp_path / "files.csv", index=False)
    items = csv_items(tmp_path / "files.csv")
    with pytest.raises(LeakageError, match="identical bytes"):
        build_datalist(items, val_fraction=0.5, seed=0, check_pixels=False, cache_dir=cache)


# ----------------------------------------------------------------------------- builders on generated data


def test_csv_builder_round_trips_through_monai(demo: Path, tmp_path: Path, cache: Path) -> None:
    from monai.data import load_decathlon_datalist

    table = pd.read_csv(demo / "labels.csv")
    table[["path", "label", "patient_id"]].rename(columns={"path": "file", "label": "fractured"}).to_csv(tmp_path / "list.csv", index=False)
    items = csv_items(tmp_path / "list.csv", base_dir=demo)
    assert {it["group"] for it in items} == set(table.patient_id)
    dl = build_datalist(items, val_fraction=0.25, seed=0, cache_dir=cache)
    _assert_grouped(dl)
    out = write_datalist(dl, tmp_path / "lists" / "datalist.json", cache_dir=cache)
    raw = json.loads(out.read_text())
    assert not Path(raw["training"][0]["image"]).is_absolute()
    monai_items = load_decathlon_datalist(out, is_segmentation=False, data_list_key="validation")
    assert [it["image"] for it in monai_items] == [it["image"] for it in dl["validation"]]
    assert all(Path(it["image"]).is_file() and it["label"] in (0, 1) for it in monai_items)


def test_folder_builder_maps_class_names_and_groups_by_patient(demo: Path, tmp_path: Path, cache: Path) -> None:
    table = pd.read_csv(demo / "labels.csv")
    for row in table.itertuples():
        cls = "broken" if row.label else "normal"
        dst = tmp_path / "tree" / cls / row.path.replace("/", "_")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / row.path, dst)
    items = folder_items(tmp_path / "tree", positive=["broken"])
    assert len(items) == len(table) and sum(it["label"] for it in items) == table.label.sum()
    assert {it["group"] for it in items} == set(table.patient_id)  # PatientID from the DICOM headers
    dl = build_datalist(items, seed=1, cache_dir=cache)
    _assert_grouped(dl)
    from monai_fracture.cli import main

    out = tmp_path / "folders.json"
    assert main(["datalist", "folders", str(tmp_path / "tree"), "--positive", "broken", "--out", str(out), "--cache-dir", str(cache)]) == 0
    assert load_datalist(out)["training"]


def test_dicom_folder_builder_keys_labels_by_study_or_accession(demo: Path, tmp_path: Path, cache: Path) -> None:
    table = pd.read_csv(demo / "labels.csv", dtype={"accession_number": str})
    studies = table.groupby("study_uid").agg(label=("label", "max"), acc=("accession_number", "first")).reset_index()
    studies[["study_uid", "label"]].rename(columns={"study_uid": "StudyInstanceUID"}).to_csv(tmp_path / "by_study.csv", index=False)
    keep = studies.iloc[: len(studies) // 2]
    keep[["acc", "label"]].rename(columns={"acc": "AccessionNumber", "label": "fractured"}).to_csv(tmp_path / "by_acc.csv", index=False)
    items = dicom_folder_items(demo, tmp_path / "by_study.csv")
    assert len(items) == len(table)
    truth = dict(zip((str((demo / p).resolve()) for p in table.path), table.label))
    assert all(truth[it["image"]] == it["label"] for it in items)
    assert {it["group"] for it in items} == set(table.patient_id)
    partial = dicom_folder_items(demo, tmp_path / "by_acc.csv", key="AccessionNumber")
    assert len(partial) == int(table.study_uid.isin(keep.study_uid).sum())
    _assert_grouped(build_datalist(items, seed=2, cache_dir=cache))


def test_dicom_folder_builder_makes_one_item_per_ct_series(tmp_path: Path, cache: Path) -> None:
    generate_demo_dataset(tmp_path / "ct", n=3, modality="ct", seed=4, size=16)
    table = pd.read_csv(tmp_path / "ct" / "labels.csv")
    table[["accession_number", "label"]].to_csv(tmp_path / "acc.csv", index=False)
    items = dicom_folder_items(tmp_path / "ct", tmp_path / "acc.csv")
    assert sorted(it["image"] for it in items) == sorted(str((tmp_path / "ct" / p).resolve()) for p in table.path)


# ----------------------------------------------------------------------------- FracAtlas


def test_fracatlas_labels_csv(fracatlas: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level("WARNING")
    items = fracatlas_items(fracatlas)
    labels = pd.read_csv(fracatlas / "labels.csv")
    assert len(items) == int((labels.decodes.astype(str).str.lower() == "true").sum()) == len(labels) - 45
    assert "dropping 45 files" in caplog.text
    dl = build_datalist(items, val_fraction=0.15, seed=0, cache_dir=tmp_path / "cache")
    _assert_grouped(dl)
    # the seed paper's leak: radiographs with copies (same group) stay on one side
    val_images = {Path(it["image"]).name for it in dl["validation"]}
    for pair in (("IMG0002617", "IMG0004028"), ("IMG0002738", "IMG0004121")):
        assert (f"{pair[0]}.jpg" in val_images) == (f"{pair[1]}.jpg" in val_images)
    for key in ("training", "validation"):
        share = np.mean([it["label"] for it in dl[key]])
        assert abs(share - 575 / 3265) < 0.02


def test_fracatlas_upstream_layout(fracatlas: Path, tmp_path: Path, cache: Path) -> None:
    labels = pd.read_csv(fracatlas / "labels.csv")
    labels = labels[labels.decodes.astype(str).str.lower() == "true"]
    chosen = pd.concat([labels[labels.label == 1].head(6), labels[labels.label == 0].head(10)])
    rows = []
    for row in chosen.itertuples():
        name = Path(row.path).name
        folder = tmp_path / "up" / "images" / ("Fractured" if row.label else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fracatlas / row.path, folder / name)
        rows.append({"image_id": name, "hand": 0, "leg": 1, "hip": 0, "shoulder": 0, "mixed": 0, "hardware": 0, "fractured": row.label})
    pd.DataFrame(rows).to_csv(tmp_path / "up" / "dataset.csv", index=False)
    assert detect_layout(tmp_path / "up") == "fracatlas"
    items = fracatlas_items(tmp_path / "up")
    assert len(items) == 16 and sum(it["label"] for it in items) == 6
    _assert_grouped(build_datalist(items, val_fraction=0.25, seed=0, cache_dir=cache))


# ----------------------------------------------------------------------------- resolve_datalist


def test_resolve_prefers_explicit_datalist_then_folder_then_demo(demo: Path, tmp_path: Path, cache: Path) -> None:
    explicit = resolve_datalist(None, str(demo / "datalist.json"), cache_dir=cache)
    assert explicit == load_datalist(demo / "datalist.json")
    from_folder = resolve_datalist(str(demo), None, seed=3, val_fraction=0.3, cache_dir=cache)
    _assert_grouped(from_folder)
    assert len(from_folder["training"]) + len(from_folder["validation"]) == 40
    generated = resolve_datalist(None, "", n=12, seed=9, cache_dir=cache, synthetic=True, synthetic_dir=tmp_path / "gen")
    assert (tmp_path / "gen" / "labels.csv").is_file() and detect_layout(tmp_path / "gen") == "labels_csv"
    assert not list(tmp_path.glob(".gen.partial*"))
    assert len(generated["training"]) + len(generated["validation"]) == 12
    assert all(Path(it["image"]).is_absolute() for it in generated["training"])
    again = resolve_datalist(None, "", n=12, seed=9, cache_dir=cache, synthetic=True, synthetic_dir=tmp_path / "gen")
    assert again == generated


def test_resolve_refuses_missing_or_empty_data_instead_of_generating(tmp_path: Path, cache: Path) -> None:
    """A mistyped path must not quietly turn into a synthetic run (issue 16)."""
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'typo'}: dataset_dir not found"):
        resolve_datalist(str(tmp_path / "typo"), None, cache_dir=cache, synthetic=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'}: dataset_dir is empty"):
        resolve_datalist(str(tmp_path / "empty"), None, cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="nolist.json: datalist not found"):
        resolve_datalist(None, str(tmp_path / "nolist.json"), cache_dir=cache)
    (tmp_path / "blank.json").write_text(json.dumps({"training": [], "validation": []}))
    with pytest.raises(ValueError, match="blank.json: the datalist has no items"):
        resolve_datalist(None, str(tmp_path / "blank.json"), cache_dir=cache)
    with pytest.raises(ValueError, match="no dataset configured"):
        resolve_datalist(None, None, cache_dir=cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.json", "empty"], "nothing generated"
    assert not any((tmp_path / "empty").iterdir())


def test_resolve_from_bundle_config_expression(demo: Path, cache: Path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "imports": ["$import monai_fracture", "$import monai_fracture.data"],
            "dataset_dir": str(demo),
            "datalist": "",
            "data": f"$monai_fracture.data.resolve_datalist(@dataset_dir, @datalist, modality='xr', seed=0, cache_dir='{cache}')",
        }
    )
    data = parser.get_parsed_content("data")
    assert set(data) >= {"training", "validation"} and data["training"]
    _assert_grouped(data)
