"""Driver run inside a private network namespace: our DICOM outputs into a real Orthanc, and what its REST shows.

``python tests/orthanc_outputs.py SPEC.json`` (started by ``tests/test_reports_orthanc.py`` under
``unshare --net``): starts Orthanc (``tests/orthanc.py``), C-STOREs the source images and then our
objects, and writes ``driver.json`` with, per stored object, the Orthanc study it was filed in,
its modality, and the REST view of the SR region and the GSPS reference; last, it re-sends one
object under an existing SOP Instance UID with other content, to record what Orthanc keeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from orthanc import ORTHANC_AET, ORTHANC_DICOM_PORT, Orthanc, store_files  # noqa: E402


def _lookup(orthanc: Orthanc, uid: str, kind: str) -> str | None:
    request = urllib.request.Request(orthanc.url + "/tools/lookup", data=uid.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        matches = [m for m in json.loads(response.read()) if m["Type"] == kind]
    return matches[0]["ID"] if matches else None


def _scoords(tags: dict[str, Any]) -> list[dict[str, Any]]:
    """SCOORD content items anywhere in an Orthanc ``/tags?simplify`` SR tree."""
    found, stack = [], list(tags.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "SCOORD":
            refs = [ref.get("ReferencedSOPSequence", [{}])[0].get("ReferencedSOPInstanceUID")
                    for ref in item.get("ContentSequence", [])]
            found.append({"GraphicType": item.get("GraphicType"), "GraphicData": item.get("GraphicData"),
                          "references": refs})
        stack.extend(item.get("ContentSequence", []))
    return found


def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    out = Path(spec["out_dir"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    orthanc = Orthanc(out / "orthanc")
    orthanc.start()
    log: dict[str, Any] = {"objects": {}}
    try:
        sources = [Path(p) for p in spec["sources"]]
        log["source_status"] = store_files(sources, ORTHANC_DICOM_PORT, ORTHANC_AET)
        outputs = [Path(p) for p in spec["outputs"]]
        log["output_status"] = store_files(outputs, ORTHANC_DICOM_PORT, ORTHANC_AET)
        import pydicom

        for path in outputs:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            instance = _lookup(orthanc, str(ds.SOPInstanceUID), "Instance")
            entry: dict[str, Any] = {"file": path.name, "modality": ds.Modality, "instance": instance}
            if instance is not None:
                study = orthanc.rest("GET", f"/instances/{instance}/study")
                series = orthanc.rest("GET", f"/instances/{instance}/series")
                tags = orthanc.rest("GET", f"/instances/{instance}/tags?simplify")
                entry.update({
                    "study_uid": study["MainDicomTags"]["StudyInstanceUID"],
                    "series_number": series["MainDicomTags"].get("SeriesNumber"),
                    "series_description": series["MainDicomTags"].get("SeriesDescription"),
                    "series_date": series["MainDicomTags"].get("SeriesDate"),
                })
                if ds.Modality == "SR":
                    entry["scoords"] = _scoords(tags)
                if ds.Modality == "PR":
                    entry["referenced"] = [image.get("ReferencedSOPInstanceUID")
                                           for s in tags.get("ReferencedSeriesSequence", [])
                                           for image in s.get("ReferencedImageSequence", [])]
                    entry["text"] = [t.get("UnformattedTextValue") for a in tags.get("GraphicAnnotationSequence", [])
                                     for t in a.get("TextObjectSequence", [])]
            log["objects"][str(ds.SOPInstanceUID)] = entry
        # Same SOP Instance UID, other content: what does a default Orthanc keep?
        if spec.get("overwrite_probe"):
            probe = Path(spec["overwrite_probe"])
            ds = pydicom.dcmread(probe, stop_before_pixels=True)
            log["overwrite_status"] = store_files([probe], ORTHANC_DICOM_PORT, ORTHANC_AET)
            instance = _lookup(orthanc, str(ds.SOPInstanceUID), "Instance")
            tags = orthanc.rest("GET", f"/instances/{instance}/tags?simplify")
            log["overwrite_kept_description"] = tags.get("SeriesDescription")
        log["study_count"] = len(orthanc.rest("GET", "/studies"))
    finally:
        orthanc.stop()
    return log


if __name__ == "__main__":
    _spec = json.loads(Path(sys.argv[1]).read_text())
    Path(_spec["out_dir"], "driver.json").write_text(json.dumps(_drive(_spec), indent=1))
