"""MONAI datalists (``{"training": [...], "validation": [...], "test": [...]}``) from common layouts.

Items are ``{"image": path, "label": 0|1, "group": str}``, optionally with ``"boxes"`` (a YOLO label
file with the fracture boxes of a fractured image, for box-guided training) and ``"boxes_shape"``
(``[rows, cols]`` of the image the boxes were drawn on; when the image as read has another shape,
e.g. after an EXIF rotation, its boxes are not used). In a written JSON file the image and box paths
are relative to the file's folder, which is what ``monai.data.load_decathlon_datalist`` assumes
when ``base_dir`` is not given; in memory (what the builders and :func:`resolve_datalist` return)
they are absolute. Every split is checked by :mod:`monai_fracture.data.leakage` before it is
written or returned.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from monai_fracture.cache import cache_dir as default_cache_dir
from monai_fracture.data.boxes import BOXES_KEY, attach_yolo_boxes
from monai_fracture.data.leakage import HashCache, check_no_leakage
from monai_fracture.data.split import SPLIT_KEYS, log_summary, split_items
from monai_fracture.io.sniff import has_image_suffix
from monai_fracture.sources.folder import is_hidden, walk_files

logger = logging.getLogger(__name__)

POSITIVE_NAMES = ("fractured", "fracture", "positive", "pos", "abnormal", "1", "yes", "true")
NEGATIVE_NAMES = (
    "not_fractured", "non_fractured", "nonfractured", "not-fractured", "non-fractured", "normal", "negative", "neg",
    "no_fracture", "0", "no", "false",
)
IMAGE_COLUMNS = ("image", "path", "file", "filename", "filepath", "image_path")
LABEL_COLUMNS = ("label", "fractured", "fracture", "target", "class", "y")
GROUP_COLUMNS = ("group", "patient_id", "patientid", "patient", "subject", "subject_id")
DICOM_KEYS = {"studyinstanceuid": "StudyInstanceUID", "study_uid": "StudyInstanceUID", "accessionnumber": "AccessionNumber", "accession_number": "AccessionNumber", "accession": "AccessionNumber"}


def parse_label(value, positive: Sequence[str] = POSITIVE_NAMES) -> int:
    """0/1 from numbers, booleans and class names; raises ValueError for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and not pd.isna(value):
        if value in (0, 1):
            return int(value)
        raise ValueError(f"label {value!r} is not 0 or 1")
    text = str(value).strip().lower()
    if text in {p.lower() for p in positive}:
        return 1
    if text in NEGATIVE_NAMES:
        return 0
    raise ValueError(f"cannot read {value!r} as a fracture label (expected 0/1, true/false or a class name)")


def _pick_column(columns: Iterable[str], wanted: str | None, candidates: Sequence[str], what: str) -> str | None:
    lower = {c.lower(): c for c in columns}
    if wanted:
        if wanted in columns:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise ValueError(f"column {wanted!r} ({what}) not found; columns are {list(columns)}")
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    if is_hidden(name):
        return False
    if has_image_suffix(name):
        return True
    if "." in name:
        return False
    # extensionless: DICOM if it carries the preamble magic
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_patient(path: Path) -> str | None:
    if not path.is_file():
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # noqa: BLE001 - not DICOM (or unreadable): no patient to group by
        return None
    value = str(ds.get("PatientID", "") or "").strip()
    return value or None


# --------------------------------------------------------------------------- builders (items)


def items_from_table(
    table: pd.DataFrame,
    base_dir: str | os.PathLike,
    image_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    positive: Sequence[str] = POSITIVE_NAMES,
    group_from_dicom: bool = True,
) -> list[dict]:
    """Datalist items from a table of files; paths relative to ``base_dir`` become absolute.

    Without a group column, DICOM files are grouped by PatientID (headers only) and other files
    are each their own group, so only the byte/pixel checks protect them from duplicates.
    """
    base = Path(base_dir).resolve()
    image_col = _pick_column(table.columns, image_col, IMAGE_COLUMNS, "image path")
    label_col = _pick_column(table.columns, label_col, LABEL_COLUMNS, "label")
    group_col = _pick_column(table.columns, group_col, GROUP_COLUMNS, "group")
    if image_col is None or label_col is None:
        raise ValueError(f"need an image-path column {IMAGE_COLUMNS} and a label column {LABEL_COLUMNS}; got {list(table.columns)}")
    items = []
    no_group = 0
    for row in table.itertuples(index=False):
        rec = dict(zip(table.columns, row))
        path = Path(str(rec[image_col]))
        path = path if path.is_absolute() else base / path
        try:
            label = parse_label(rec[label_col], positive)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        group = rec.get(group_col) if group_col else None
        if group is None or (isinstance(group, float) and pd.isna(group)) or str(group).strip() == "":
            group = (_dicom_patient(path) if group_from_dicom else None) or f"file:{path}"
            no_group += 1
        items.append({"image": str(path), "label": label, "group": str(group)})
    if no_group:
        logger.info("%d items had no group id: grouped by DICOM PatientID or kept alone", no_group)
    return items


def fracatlas_items(root: str | os.PathLike) -> list[dict]:
    """FracAtlas: our ``labels.csv`` (path,label,group,decodes) or upstream ``dataset.csv`` + class folders."""
    root = Path(root)
    labels = root / "labels.csv"
    if labels.is_file():
        table = pd.read_csv(labels)
        if "decodes" in table.columns:
            bad = ~table["decodes"].astype(str).str.lower().isin(["true", "1"])
            if bad.any():
                logger.warning("%s: dropping %d files that do not decode (decodes=false)", labels, int(bad.sum()))
            table = table[~bad]
        items = items_from_table(table, root, group_from_dicom=False)
        shapes = (table[["height", "width"]].to_numpy().tolist()
                  if {"height", "width"} <= set(table.columns) else None)
        return attach_yolo_boxes(items, root, shapes)
    upstream = root / "dataset.csv"
    if upstream.is_file():
        table = pd.read_csv(upstream)
        folders = {1: root / "images" / "Fractured", 0: root / "images" / "Non_fractured"}
        items = []
        missing = 0
        for row in table.itertuples(index=False):
            label = int(getattr(row, "fractured"))
            path = folders[label] / str(getattr(row, "image_id"))
            if not path.is_file():
                missing += 1
                continue
            items.append({"image": str(path.resolve()), "label": label, "group": f"file:{getattr(row, 'image_id')}"})
        if missing:
            logger.warning("%s: %d listed images are missing from images/Fractured|Non_fractured", upstream, missing)
        logger.warning(
            "%s: upstream FracAtlas has no near-duplicate groups; only exact byte/pixel copies are caught. "
            "Prefer a labels.csv with a 'group' column.",
            upstream,
        )
        return attach_yolo_boxes(items, root)
    raise FileNotFoundError(f"{root}: neither labels.csv nor dataset.csv (FracAtlas layout) found")


def folder_items(
    root: str | os.PathLike, positive: Sequence[str] = POSITIVE_NAMES, negative: Sequence[str] | None = None
) -> list[dict]:
    """Class-per-folder tree: ``root/<class>/**/file``; ``positive`` names the fractured classes.

    Other class folders are label 0 when ``negative`` is None (logged), else must be listed in it.
    DICOM files are grouped by PatientID, other files are their own group.
    """
    root = Path(root)
    pos = {p.lower() for p in positive}
    neg = {n.lower() for n in negative} if negative is not None else None
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))
    if not classes:
        raise FileNotFoundError(f"{root}: no class folders found")
    rows = []
    for folder in classes:
        name = folder.name.lower()
        if name in pos:
            label = 1
        elif neg is None or name in neg:
            label = 0
            if neg is None and name not in NEGATIVE_NAMES:
                logger.warning("%s: class folder %r is not a known negative name; using label 0", root, folder.name)
        else:
            logger.warning("%s: ignoring folder %r (neither positive nor negative class)", root, folder.name)
            continue
        files = [p for p in map(Path, walk_files(folder, list_unreadable=False)) if _is_image_file(p)]
        logger.info("%s: class %r -> label %d, %d files", root, folder.name, label, len(files))
        rows += [{"image": str(p.resolve()), "label": label} for p in files]
    if not rows:
        raise FileNotFoundError(f"{root}: class folders hold no image files")
    return items_from_table(pd.DataFrame(rows, columns=["image", "label"]), root)


def csv_items(
    csv_path: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    image_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    positive: Sequence[str] = POSITIVE_NAMES,
) -> list[dict]:
    """A CSV of files (DICOM, NIfTI, PNG/JPEG) with labels and optional group/patient ids."""
    csv_path = Path(csv_path)
    table = pd.read_csv(csv_path)
    return items_from_table(table, base_dir or csv_path.parent, image_col, label_col, group_col, positive)


def dicom_folder_items(
    dicom_dir: str | os.PathLike, labels_csv: str | os.PathLike, key: str | None = None, label_col: str | None = None
) -> list[dict]:
    """A DICOM folder + a CSV of labels keyed by StudyInstanceUID or AccessionNumber; groups = PatientID.

    Only headers are read. Multi-slice series (CT/MR) that fill a folder of their own become one
    item (the folder); other files are one item each.
    """
    import pydicom

    dicom_dir, labels_csv = Path(dicom_dir), Path(labels_csv)
    table = pd.read_csv(labels_csv, dtype=str)
    key_col = None
    for c in table.columns:
        if (key and c.lower() == key.lower()) or (not key and c.lower() in DICOM_KEYS):
            key_col = c
            break
    if key_col is None:
        raise ValueError(f"{labels_csv}: no key column (StudyInstanceUID or AccessionNumber); columns {list(table.columns)}")
    tag = DICOM_KEYS.get(key_col.lower(), key or key_col)
    label_col = _pick_column(table.columns, label_col, LABEL_COLUMNS, "label")
    if label_col is None:
        raise ValueError(f"{labels_csv}: no label column {LABEL_COLUMNS}")
    labels = {str(k).strip(): parse_label(v) for k, v in zip(table[key_col], table[label_col])}
    per_series: dict[tuple[str, str], list[Path]] = {}
    info: dict[tuple[str, str], tuple[int, str]] = {}
    skipped = {"not_dicom": 0, "no_image": 0, "unlabelled": 0}
    for path in map(Path, walk_files(dicom_dir, list_unreadable=False)):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - anything unreadable as DICOM is skipped and counted
            skipped["not_dicom"] += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped["no_image"] += 1
            continue
        value = str(ds.get(tag, "") or "").strip()
        if value not in labels:
            skipped["unlabelled"] += 1
            continue
        series = str(ds.get("SeriesInstanceUID", path))
        per_series.setdefault((value, series), []).append(path)
        info[(value, series)] = (labels[value], str(ds.get("PatientID", "") or "").strip() or f"study:{ds.get('StudyInstanceUID', value)}")
    if any(skipped.values()):
        logger.warning("%s: skipped %s", dicom_dir, ", ".join(f"{v} {k}" for k, v in skipped.items() if v))
    items = []
    for key_value, paths in per_series.items():
        label, group = info[key_value]
        folder = paths[0].parent
        if len(paths) > 1 and all(p.parent == folder for p in paths) and len([p for p in folder.iterdir() if p.is_file()]) == len(paths):
            items.append({"image": str(folder.resolve()), "label": label, "group": group})
        else:
            items += [{"image": str(p.resolve()), "label": label, "group": group} for p in paths]
    if not items:
        raise ValueError(f"{dicom_dir}: no labelled DICOM images (keyed by {tag} from {labels_csv})")
    return items


# --------------------------------------------------------------------------- split, check, write


def build_datalist(
    items: Sequence[dict],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    check_pixels: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, list[dict]]:
    """Split ``items`` by group and label, refuse leaks (:class:`LeakageError`), log the balance."""
    datalist = split_items(items, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, fold=fold, num_folds=num_folds)
    check_datalist(datalist, check_pixels=check_pixels, cache_dir=cache_dir)
    log_summary(datalist)
    return datalist


def check_datalist(datalist: dict, *, check_pixels: bool = True, cache_dir: str | os.PathLike | None = None) -> None:
    """Raise LeakageError when groups, byte-identical or pixel-identical files cross splits."""
    cache = HashCache(Path(cache_dir) / "hashes.json") if cache_dir else HashCache(default_cache_dir() / "hashes.json")
    check_no_leakage(datalist, check_pixels=check_pixels, cache=cache)


def write_datalist(
    datalist: dict[str, list[dict]],
    path: str | os.PathLike,
    *,
    check: bool = True,
    check_pixels: bool = True,
    cache_dir: str | os.PathLike | None = None,
    description: str = "",
) -> Path:
    """Write ``datalist`` as JSON with image paths relative to the file's folder (checked first).

    Empty validation/test parts are left out (``load_decathlon_datalist`` cannot read an empty list).
    """
    path = Path(path)
    if check:
        check_datalist(datalist, check_pixels=check_pixels, cache_dir=cache_dir)
    base = path.parent.resolve()

    def rel(image):
        if isinstance(image, (list, tuple)):
            return [rel(i) for i in image]
        return Path(os.path.relpath(Path(image).resolve(), base)).as_posix()

    out = {"description": description or "monai-fracture datalist", "labels": {"0": "not fractured", "1": "fractured"}}
    for key in SPLIT_KEYS:
        # MONAI's loader fails on an empty "test" list: write only the parts that hold items
        if datalist.get(key) or key == "training":
            out[key] = [_relative_item(it, rel) for it in datalist.get(key, [])]
    out["numTraining"] = len(out["training"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    logger.info("wrote %s", path)
    return path


def _relative_item(item: dict, rel) -> dict:
    out = dict(item, image=rel(item["image"]))
    if item.get(BOXES_KEY):
        out[BOXES_KEY] = rel(item[BOXES_KEY])
    return out


def load_datalist(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Read a datalist JSON through MONAI; image (and ``boxes``) paths come back absolute."""
    from monai.data import load_decathlon_datalist

    path = Path(path)
    raw = json.loads(path.read_text())
    out = {}
    for key in SPLIT_KEYS:
        out[key] = load_decathlon_datalist(path, is_segmentation=False, data_list_key=key) if raw.get(key) else []
        for item in out[key]:
            if item.get(BOXES_KEY):  # MONAI makes only image paths absolute; boxes follow the same rule
                item[BOXES_KEY] = str((path.parent / item[BOXES_KEY]).resolve())
    return out


# --------------------------------------------------------------------------- layout detection


def detect_layout(dataset_dir: str | os.PathLike) -> str | None:
    """Name of the layout in ``dataset_dir``: labels_csv, fracatlas, datalist, dicom, csv, folders; None if empty."""
    root = Path(dataset_dir)
    if not root.is_dir() or not any(root.iterdir()):
        return None
    if (root / "labels.csv").is_file():
        return "labels_csv"  # FracAtlas as shipped in shared/data, and the demo set
    if (root / "dataset.csv").is_file() and (root / "images" / "Fractured").is_dir():
        return "fracatlas"  # upstream FracAtlas
    if (root / "datalist.json").is_file():
        return "datalist"
    csvs = sorted(root.glob("*.csv"))
    for csv in csvs:
        cols = {c.lower() for c in pd.read_csv(csv, nrows=0).columns}
        if cols & set(DICOM_KEYS):
            return "dicom"
        if cols & set(IMAGE_COLUMNS) and cols & set(LABEL_COLUMNS):
            return "csv"
    subdirs = [p.name.lower() for p in root.iterdir() if p.is_dir()]
    if any(d in POSITIVE_NAMES or d in NEGATIVE_NAMES for d in subdirs):
        return "folders"
    raise ValueError(
        f"{root}: unknown dataset layout. Expected labels.csv (path,label[,group]), FracAtlas dataset.csv + "
        "images/Fractured|Non_fractured, datalist.json, a CSV of files with labels, a DICOM folder with a CSV keyed "
        "by StudyInstanceUID/AccessionNumber, or class folders (fractured/not_fractured)."
    )


def items_from_layout(dataset_dir: str | os.PathLike, layout: str) -> list[dict]:
    root = Path(dataset_dir)
    if layout in ("labels_csv", "fracatlas"):
        return fracatlas_items(root)
    if layout == "folders":
        return folder_items(root)
    for csv in sorted(root.glob("*.csv")):
        cols = {c.lower() for c in pd.read_csv(csv, nrows=0).columns}
        if layout == "dicom" and cols & set(DICOM_KEYS):
            return dicom_folder_items(root, csv)
        if layout == "csv" and cols & set(IMAGE_COLUMNS):
            return csv_items(csv)
    raise ValueError(f"{root}: no items for layout {layout!r}")
