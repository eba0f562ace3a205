"""SR, KOS, GSPS and SC land in the source study of a real Orthanc (private network namespace), and
Orthanc's REST shows the SR's image region and the GSPS referencing the right image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_fracture.reports import Heatmap, ImageResult, write_study_outputs
from monai_fracture.scoring.saliency import hot_region
from orthanc import _unshare_prefix, namespace_unavailable_reason
from test_scoring_support import dciodvfy_errors, image_files, make_demo_folder

pytestmark = [pytest.mark.network]

MODEL = types.SimpleNamespace(name="test-fracture", version="0.0.1")
DRIVER = Path(__file__).resolve().parent / "orthanc_outputs.py"


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> dict:
    reason = namespace_unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("outputs_orthanc")
    folder = make_demo_folder(root / "data", n=8, seed=0, size=96)
    by_study: dict[str, list[Path]] = {}
    for path in image_files(folder):
        by_study.setdefault(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID, []).append(path)
    sources = next(paths for paths in by_study.values() if len(paths) >= 2)
    datasets = [pydicom.dcmread(p) for p in sources]
    positive, negative = datasets[0], datasets[1]
    rows, cols = int(positive.Rows), int(positive.Columns)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cam = np.exp(-((yy - rows / 3) ** 2 + (xx - cols / 2) ** 2) / (2 * (rows / 10) ** 2)).astype(np.float32)

    def results(threshold: float) -> list[ImageResult]:
        return [ImageResult((positive.SOPInstanceUID,), 0.9, threshold, positive.SeriesInstanceUID, hot_region(cam)),
                ImageResult((negative.SOPInstanceUID,), 0.1, threshold, negative.SeriesInstanceUID)]

    image = positive.pixel_array.astype(np.float32)
    image = (image - image.min()) / max(float(np.ptp(image)), 1.0)
    heatmap = Heatmap(positive.SOPInstanceUID, image, cam, 0.9)
    first = write_study_outputs(datasets, results(0.5), MODEL, root / "out", heatmaps=[heatmap],
                                outputs=["sr", "kos", "pr", "sc"])
    second = write_study_outputs(datasets, results(0.05), MODEL, root / "out2", outputs=["sr"])
    probe = root / "probe.dcm"
    altered = pydicom.dcmread(first[0])
    altered.SeriesDescription = "ALTERED CONTENT, SAME UID"
    altered.save_as(probe)
    spec = {"out_dir": str(root / "driver"), "sources": [str(p) for p in sources],
            "outputs": [str(p) for p in first + second], "overwrite_probe": str(probe)}
    (root / "driver").mkdir()
    (root / "driver" / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(_unshare_prefix() + [sys.executable, str(DRIVER), str(root / "driver" / "spec.json")],
                          capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    log = json.loads((root / "driver" / "driver.json").read_text())
    return {"log": log, "first": first, "second": second, "positive": positive, "study_uid": positive.StudyInstanceUID}


def test_every_object_lands_in_the_source_study(landed):
    log = landed["log"]
    assert set(log["source_status"]) == {0} and set(log["output_status"]) == {0}
    objects = log["objects"]
    assert sorted(o["file"][:2] for o in objects.values()) == ["KO", "PR", "SC", "SR", "SR"]
    assert {o["study_uid"] for o in objects.values()} == {landed["study_uid"]}
    assert log["study_count"] == 1
    assert all(o["series_date"] for o in objects.values()), "SeriesDate set (Orthanc Explorer lists by it)"
    numbers = {o["file"][:2]: o["series_number"] for o in objects.values()}
    assert len(set(numbers.values())) == 4
    # the rerun at another threshold is a new SR instance beside the first, not silently dropped
    assert len([o for o in objects.values() if o["modality"] == "SR"]) == 2


def test_rest_shows_the_sr_region_and_the_gsps_reference(landed):
    objects = landed["log"]["objects"]
    positive = landed["positive"]
    for sr in (o for o in objects.values() if o["modality"] == "SR"):
        (scoord,) = sr["scoords"]
        assert scoord["GraphicType"] == "POLYLINE" and scoord["references"] == [positive.SOPInstanceUID]
        values = scoord["GraphicData"]  # Orthanc's simplified JSON gives FL values as one backslash-joined string
        values = values.split("\\") if isinstance(values, str) else values
        points = np.asarray([float(v) for v in values]).reshape(-1, 2)
        assert 0 < points[:, 0].min() and points[:, 0].max() <= positive.Columns + 0.5
        assert 0 < points[:, 1].min() and points[:, 1].max() <= positive.Rows + 0.5
    (pr,) = [o for o in objects.values() if o["modality"] == "PR"]
    assert pr["referenced"] == [positive.SOPInstanceUID]
    assert pr["text"] == ["Fracture suspected, p=0.90"]


def test_orthanc_keeps_the_first_instance_of_a_reused_uid(landed):
    """Why UIDs must follow content: by default (OverwriteInstances false) the second store is ignored."""
    log = landed["log"]
    assert log["overwrite_status"] == [0]  # accepted on the wire ...
    assert log["overwrite_kept_description"] != "ALTERED CONTENT, SAME UID"  # ... but not stored


def test_every_object_is_dciodvfy_clean(landed):
    for path in landed["first"] + landed["second"]:
        assert dciodvfy_errors(path) == [], path.name
