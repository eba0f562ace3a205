"""Fracture boxes in datalists: filled for a FracAtlas layout, kept through JSON, dropped where unused."""

from __future__ import annotations

import json

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import EnsureTyped

from helpers.box_dataset import exif_rotated_jpeg, make_box_dataset
from monai_fracture.data import fracatlas_items, load_datalist, resolve_datalist, write_datalist
from monai_fracture.data.boxes import attach_yolo_boxes
from monai_fracture.training.setup import bundle_preprocessing
from monai_fracture.transforms.presets import build_preprocessing


def test_fracatlas_layout_gets_boxes_for_fractured_images_only(tmp_path):
    root = make_box_dataset(tmp_path / "ds", n=8)
    items = fracatlas_items(root)
    fractured = [it for it in items if it["label"] == 1]
    assert fractured and all(it["boxes"] == str((root / "annotations" / "yolo" / f"{it['image'][-11:-4]}.txt").resolve())
                             for it in fractured)
    # the annotated shape comes from labels.csv (height, width)
    assert all(it["boxes_shape"] in ([90, 120], [120, 90]) for it in fractured)
    assert all("boxes" not in it and "boxes_shape" not in it for it in items if it["label"] == 0)
    # a fractured image whose YOLO file is empty or missing has no boxes
    (root / "annotations" / "yolo" / "IMG0001.txt").write_text("")
    (root / "annotations" / "yolo" / "IMG0002.txt").unlink()
    again = {it["image"].rsplit("/", 1)[-1]: it for it in fracatlas_items(root)}
    assert "boxes" not in again["IMG0001.png"] and "boxes" not in again["IMG0002.png"]
    assert "boxes" in again["IMG0005.png"]
    # no annotations folder: no box keys at all
    (tmp_path / "plain").mkdir()
    bare = [{k: v for k, v in it.items() if k not in ("boxes", "boxes_shape")} for it in fractured]
    assert attach_yolo_boxes([dict(it) for it in bare], tmp_path / "plain") == bare


def test_without_a_size_column_the_stored_size_is_read_from_the_header(tmp_path):
    """Upstream FracAtlas has no width/height: the header's stored size (before EXIF rotation) is the annotated shape."""
    (tmp_path / "annotations" / "yolo").mkdir(parents=True)
    image = exif_rotated_jpeg(tmp_path / "IMG0001.jpg", height=60, width=100)
    (tmp_path / "annotations" / "yolo" / "IMG0001.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    [item] = attach_yolo_boxes([{"image": str(image), "label": 1, "group": "a"}], tmp_path)
    assert item["boxes_shape"] == [60, 100]


def test_boxes_survive_a_json_datalist_and_resolve_relative_to_it(tmp_path):
    root = make_box_dataset(tmp_path / "ds", n=8)
    datalist = resolve_datalist(dataset_dir=root, check_pixels=False, cache_dir=tmp_path / "cache", val_fraction=0.25)
    with_boxes = [it for part in datalist.values() for it in part if "boxes" in it]
    assert len(with_boxes) == 4
    path = write_datalist(datalist, tmp_path / "lists" / "fold.json", check=False)
    written = json.loads(path.read_text())
    relative = [it["boxes"] for part in ("training", "validation") for it in written[part] if "boxes" in it]
    assert relative and all(b.startswith("../ds/annotations/yolo/") for b in relative)
    loaded = load_datalist(path)
    assert sorted(it["boxes"] for part in loaded.values() for it in part if "boxes" in it) == \
        sorted(it["boxes"] for it in with_boxes)
    # a user's own datalist: boxes relative to the JSON file, like the images
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"training": [{"image": "ds/images/IMG0001.png", "label": 1,
                                             "boxes": "ds/annotations/yolo/IMG0001.txt"}]}))
    [item] = resolve_datalist(datalist=own, check_pixels=False, cache_dir=tmp_path / "cache")["training"]
    assert item["boxes"] == str((root / "annotations" / "yolo" / "IMG0001.txt").resolve())


def test_items_with_and_without_boxes_batch_together_in_a_chain_without_box_guidance(tmp_path):
    """Box keys are datalist-only: chains that do not use them drop them, so mixed items still collate."""
    items = sorted(fracatlas_items(make_box_dataset(tmp_path / "ds", n=8)), key=lambda it: "boxes" not in it)
    assert "boxes" in items[0] and "boxes" not in items[-1]
    chain = bundle_preprocessing(build_preprocessing("xr", size=32, load=True),
                                 EnsureTyped(keys="label", dtype=torch.long, track_meta=False))
    batch = next(iter(DataLoader(Dataset(items, chain), batch_size=8)))
    assert batch["image"].shape == (8, 3, 32, 32)
    assert "boxes" not in batch and "boxes_shape" not in batch


def test_plain_collation_of_mixed_items_fails_without_the_drop(tmp_path):
    """Guards the reason for the drop: without it collation fails once a batch starts with an item that has boxes."""
    items = sorted(fracatlas_items(make_box_dataset(tmp_path / "ds", n=8)), key=lambda it: "boxes" not in it)
    chain = build_preprocessing("xr", size=32, load=True)
    with pytest.raises(Exception, match="boxes"):
        next(iter(DataLoader(Dataset(items, chain), batch_size=8)))
