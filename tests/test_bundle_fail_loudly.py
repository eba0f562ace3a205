"""The bundle refuses to do quiet wrong work: mistyped or empty data, zero iterations, unreadable files.

Runs ``monai.bundle.run`` in-process (what ``python -m monai.bundle run`` calls), so an exception
here is a non-zero exit there.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pydicom
import pytest
from monai.bundle import run

from monai_fracture.bundle_files import bundle_path, shipped_model_dir
from monai_fracture.model.package import ModelInfo

CONFIGS = bundle_path() / "configs"


def _run(run_id: str, config: str, root: Path, **overrides) -> None:
    run(run_id=run_id, meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / config),
        logging_file=False, bundle_root=str(root), **overrides)


def _fails(error: type[Exception], pattern: str, run_id: str, config: str, root: Path, **overrides) -> None:
    """The run raises ``error`` matching ``pattern`` (MONAI wraps config errors: look down the cause chain)."""
    with pytest.raises(Exception) as info:
        _run(run_id, config, root, **overrides)
    chain, cause = [], info.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert any(isinstance(e, error) and re.search(pattern, str(e)) for e in chain), [repr(e)[:300] for e in chain]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from monai_fracture.data.synthetic import generate_demo_dataset

    folder = tmp_path_factory.mktemp("tiny") / "data"
    generate_demo_dataset(folder, n=8, modality="xr", seed=5)
    return folder


def test_a_mistyped_dataset_dir_is_an_error_naming_it_and_nothing_is_generated(tmp_path):
    typo = tmp_path / "fracatlsa"
    for run_id, config in (("evaluating", "evaluate.json"), ("training", "train.json")):
        _fails(FileNotFoundError, f"{typo}: dataset_dir not found", run_id, config, tmp_path / "root",
               dataset_dir=str(typo), check_pixels=False)
    assert not typo.exists()
    typo.mkdir()
    _fails(ValueError, f"{typo}: dataset_dir is empty", "evaluating", "evaluate.json", tmp_path / "root",
           dataset_dir=str(typo))
    assert not any(typo.iterdir()) and not (tmp_path / "root" / "data").exists()


def test_no_dataset_is_an_error_unless_synthetic_is_asked_for(tmp_path):
    _fails(ValueError, "no dataset configured", "training", "train.json", tmp_path)
    assert not (tmp_path / "data").exists()


def test_zero_training_iterations_is_an_error(tiny, tmp_path):
    _fails(ValueError, r"zero iterations: \d+ training items with batch_size 64", "training", "train.json", tmp_path,
           dataset_dir=str(tiny), batch_size=64, image_size=32, check_pixels=False, export_formats=[])
    assert not (tmp_path / "models" / "model.pt").exists()


def test_inference_skips_our_own_sr_with_a_reason_and_scores_the_images(tiny, tmp_path):
    from monai_fracture.reports import ImageResult
    from monai_fracture.reports.study import write_study_outputs_from_files

    folder = tmp_path / "incoming"
    folder.mkdir()
    images = []
    for number, source in enumerate(sorted(tiny.rglob("*.dcm"))[:2]):
        images.append(folder / f"{number}_{source.name}")
        images[-1].write_bytes(source.read_bytes())
    header = pydicom.dcmread(images[0], stop_before_pixels=True)
    result = ImageResult((str(header.SOPInstanceUID),), 0.9, 0.5, str(header.SeriesInstanceUID))
    written = write_study_outputs_from_files([images[0]], [result], ModelInfo(), folder / "previous_run")
    # bundle_root without models/: the shipped model is used
    _run("inference", "inference.json", tmp_path / "root", dataset_dir=str(folder))
    with open(tmp_path / "root" / "eval" / "inference" / "predictions.csv", newline="") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert sorted(rows) == sorted([p.name for p in images] + [p.name for p in written])
    for image in images:
        row = rows[image.name]
        assert row["status"] == "scored" and 0.0 <= float(row["probability"]) <= 1.0
        assert float(row["threshold"]) == pytest.approx(ModelInfo.load(shipped_model_dir() / "model_info.json").threshold, abs=1e-6)
    for path in written:
        row = rows[path.name]
        assert row["status"] == "skipped" and row["reason"] and not row["probability"], row
