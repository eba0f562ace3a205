"""Driver for the DICOMweb-source tests, run inside a private network namespace (see tests/orthanc.py).

Starts Orthanc with its DICOMweb plugin, C-STOREs the given studies into it, then runs
``monai-fracture score dicomweb+http://...`` as subprocesses: a full run with ``--send`` (STOW-RS),
a run SIGKILLed midway and rerun, and a run against a port where nothing listens. Writes
``driver.json`` (return codes, stderr tails, the WADO-RS instance requests Orthanc logged per run,
what QIDO finds afterwards) for the test to check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orthanc import ORTHANC_AET, ORTHANC_DICOM_PORT, Orthanc, _study_files, _study_uid, _wait_for, run_as_driver, store_files

WADO_INSTANCE = re.compile(r"GET /dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/([0-9.]+)\b")


def fetched_instances(orthanc: Orthanc) -> list[str]:
    """SOP Instance UIDs of the WADO-RS instance requests Orthanc logged so far."""
    orthanc.log.flush()
    return WADO_INSTANCE.findall((orthanc.root / "orthanc.log").read_text(errors="replace"))


def _score(spec: dict[str, Any], url: str, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "monai_fracture", "score", url, "--out", str(out), "--model", spec["model"],
            "--batch-size", "2", "--backend", "fp32", "--no-progress", *extra]


def _count(path: Path, marker: bytes) -> int:
    return path.read_bytes().count(marker) if path.is_file() else 0


def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    out = Path(spec["out_dir"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    log: dict[str, Any] = {}
    orthanc = Orthanc(out / "orthanc", verbose=True)
    orthanc.start()
    url = f"dicomweb+{orthanc.url}/dicom-web"
    try:
        for folder in spec["studies"]:
            statuses = store_files(_study_files(folder), ORTHANC_DICOM_PORT, ORTHANC_AET)
            assert all(s == 0 for s in statuses), f"Orthanc refused {folder}: {statuses}"

        # full: QIDO query, WADO into the spool, results sent back by STOW-RS
        seen = len(fetched_instances(orthanc))
        t0 = time.monotonic()
        run = subprocess.run(_score(spec, url, out / "full", ["--query", "ModalitiesInStudy=DX",
                                                              "--send", f"stowrs+{orthanc.url}/dicom-web"]),
                             capture_output=True, text=True, timeout=300)
        log["full"] = {"rc": run.returncode, "stderr": run.stderr[-3000:], "seconds": round(time.monotonic() - t0, 2),
                       "fetched": fetched_instances(orthanc)[seen:]}
        found: dict[str, list[str]] = {}
        client = orthanc.dicomweb()
        for item in client.search_for_instances(fields=["00080016", "0020000D", "00080060"]):
            study = item["0020000D"]["Value"][0]
            found.setdefault(study, []).append(item.get("00080060", {}).get("Value", [""])[0])
        log["modalities_after_send"] = found

        # the Ray engine: the same query, two-image chunks scored on one local cluster (inside this namespace)
        env = dict(os.environ, RAY_TMPDIR=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        run = subprocess.run(_score(spec, url, out / "ray", ["--query", "ModalitiesInStudy=DX", "--engine", "ray",
                                                             "--chunk-images", "2", "--no-dicom"]),
                             capture_output=True, text=True, timeout=600, env=env)
        log["ray"] = {"rc": run.returncode, "stderr": run.stderr[-3000:]}
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)

        # resume: explicit study list; SIGKILL once the first study is finished, then the same command again
        resume_out = out / "resume"
        study_list = out / "studies.txt"
        study_list.write_text("# every stored study\n" + "".join(_study_uid(_study_files(f)) + "\n" for f in spec["studies"]))
        cmd = _score(spec, url, resume_out, ["--study-list", str(study_list), "--chunk-images", "2"])
        seen = len(fetched_instances(orthanc))
        with open(out / "killed.log", "w") as handle:
            proc = subprocess.Popen(cmd, stdout=handle, stderr=handle)
            try:
                _wait_for(lambda: proc.poll() is not None or _count(resume_out / "dicomweb.jsonl", b'"study_done"') >= 1,
                          300, 0.02, "a finished study")
            finally:  # also when the wait times out: no scorer outlives the driver
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        log["killed"] = {"rows_at_kill": _count(resume_out / "journal.jsonl", b'"type": "row"'),
                         "fetched": fetched_instances(orthanc)[seen:], "journal": (resume_out / "journal.jsonl").read_text()}
        seen = len(fetched_instances(orthanc))
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        log["resumed"] = {"rc": run.returncode, "stderr": run.stderr[-3000:], "fetched": fetched_instances(orthanc)[seen:],
                          "spool_left": sorted(str(p) for p in (resume_out / ".dicomweb-spool").rglob("*") if p.is_file())}
        seen = len(fetched_instances(orthanc))
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        log["again"] = {"rc": run.returncode, "stderr": run.stderr[-3000:], "fetched": fetched_instances(orthanc)[seen:]}

        # unreachable: nothing listens on this port
        run = subprocess.run(_score(spec, "dicomweb+http://127.0.0.1:9/dicom-web", out / "unreachable",
                                    ["--query", "ModalitiesInStudy=DX"]), capture_output=True, text=True, timeout=120)
        log["unreachable"] = {"rc": run.returncode, "stderr": run.stderr[-3000:]}
    finally:
        orthanc.stop()
    return log


if __name__ == "__main__":
    run_as_driver(_drive)
