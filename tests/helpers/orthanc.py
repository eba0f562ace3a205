"""A real Orthanc and our DICOM node in a private network namespace, for integration tests.

Orthanc has no bind-address option (it listens on 0.0.0.0), so everything that talks to it runs
inside ``unshare --net`` where only loopback exists. The pytest process stays outside: it
prepares studies and a model, runs this file as a driver inside a fresh namespace
(``python tests/helpers/orthanc.py SPEC.json``), and then asserts on what the driver fetched back from
Orthanc (result objects as files, plus a JSON log of what happened). When the driver exits,
its namespace, Orthanc and our node are gone with it.

Driver scenarios, in one Orthanc run:
- ``echo``: C-ECHO to the node from an allowed and from an unknown calling AE title.
- ``basic``: studies are C-STOREd into Orthanc, Orthanc sends them to the node
  (REST ``/modalities/{name}/store``), the node's SR + KOS must arrive back in Orthanc (QIDO-RS).
- ``concurrent``: studies C-STOREd to the node at once, one association per study and thread.
- ``restart``: a first wave is sent; once its first SR is back a second wave is sent and the
  node is SIGKILLed as soon as the second wave is stored (before it can be scored); a new node
  on the same work folder must deliver every study. Then SIGTERM must stop it cleanly.
- ``stow``: a second node returns its results by STOW-RS instead of C-STORE.

Also holds the helpers the deploy and PACS tests share: a tiny model with varied outputs
(``make_tiny_model``) and readers for our SR (``sr_findings``, ``evidence_uids``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AET, ORTHANC_DICOM_PORT, ORTHANC_HTTP_PORT = "ORTHANC", 4242, 8042
NODE_AET, NODE_PORT = "FRACTURE", 11112
PUSHER_AET = "PUSHER"  # the modality that pushes studies straight to the node
SR_STORAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34")
KOS_STORAGE_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


# ---------------------------------------------------------------------------- outside the namespace
def namespace_unavailable_reason() -> str | None:
    """Why an Orthanc-in-a-namespace test cannot run here, or None when it can."""
    if not ORTHANC_BIN.is_file():
        return f"Orthanc not installed ({ORTHANC_BIN} missing; apt-get install orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.is_file():
        return f"orthanc-dicomweb not installed ({DICOMWEB_PLUGIN} missing)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found (util-linux / iproute2)"
    probe = subprocess.run(_unshare_prefix() + ["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace (unshare --net): {probe.stderr.strip()}"
    return None


def _unshare_prefix() -> list[str]:
    return ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]


def run_driver(spec: dict[str, Any], out_dir: Path, timeout_s: float = 240, script: Path | None = None) -> dict[str, Any]:
    """Run the scenarios of ``spec`` inside a fresh network namespace; return the driver's log.

    ``script``: another driver with the same contract (default: this file's ``_drive``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps({**spec, "out_dir": str(out_dir)}, indent=1))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        _unshare_prefix() + [sys.executable, str((script or Path(__file__)).resolve()), str(spec_path)],
        capture_output=True, text=True, timeout=timeout_s, env=env,
    )
    (out_dir / "driver.log").write_text(proc.stdout + proc.stderr)
    log_path = out_dir / "driver.json"
    if proc.returncode != 0 or not log_path.is_file():
        node_logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(out_dir.glob("node*.log")))
        raise RuntimeError(f"driver failed (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}{node_logs}")
    return json.loads(log_path.read_text())


# ---------------------------------------------------------------------------- shared by the deploy/PACS tests
TINY_MODEL_THRESHOLD = 0.65  # about the median of the tiny model on demo data: both findings occur


def make_tiny_model(model_dir: Path, size: int = 64, seed: int = 0, modality: str = "xr") -> Path:
    """An untrained EfficientNet-Lite0 at ``size``² (CT: 1 channel, ``size``³), BatchNorm statistics calibrated on noise.

    Accuracy does not matter for these tests; varied probabilities do, and an untrained network
    in eval mode would give (almost) the same probability for every image.
    """
    import torch

    from monai_fracture.model.package import ModelInfo, save_model
    from monai_fracture.networks import build_network

    torch.manual_seed(seed)
    dims, channels = (3, 1) if modality == "ct" else (2, 3)
    network_kwargs = {"name": "efficientnet-lite0", "spatial_dims": dims, "in_channels": channels, "num_classes": 2}
    network = build_network(**network_kwargs, pretrained=False)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:  # cumulative statistics over the calibration batches
        norm.reset_running_stats()
        norm.momentum = None
    network.train()
    with torch.no_grad():
        for _ in range(2):
            network(torch.randn(16 if dims == 2 else 4, channels, *([size] * dims)))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    head = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # small logits: probabilities spread around 0.5 rather than saturated
        head.weight.mul_(0.05)
        head.bias.zero_()
    network.eval()
    info = ModelInfo(
        name="tiny-test-model", version="0.0.1", network=network_kwargs,
        preprocessing={"modality": modality, "size": size}, threshold=TINY_MODEL_THRESHOLD, modality=modality,
    )
    return save_model(model_dir, network, info)


def study_folders(data_root: Path) -> list[Path]:
    """The study folders of a ``generate_demo_dataset`` tree (``patient_*/study_*``)."""
    return sorted(p for p in data_root.glob("patient_*/study_*") if p.is_dir())


def sr_findings(ds: Any) -> list[dict[str, Any]]:
    """Each measurement group of our TID 1500 SR: referenced SOP UIDs, probability, threshold, finding."""
    def walk(items):
        for item in items:
            yield item
            yield from walk(item.get("ContentSequence", []))

    def concept(item) -> tuple[str, str] | None:
        seq = item.get("ConceptNameCodeSequence")
        return (str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)) if seq else None

    groups = []
    for item in walk(ds.ContentSequence):
        if item.ValueType == "CONTAINER" and concept(item) == ("125007", "DCM"):  # Measurement Group
            finding: dict[str, Any] = {"sop_uids": set(), "probability": None, "threshold": None, "finding": None}
            for child in walk(item.get("ContentSequence", [])):
                if child.ValueType == "IMAGE":
                    finding["sop_uids"].update(str(r.ReferencedSOPInstanceUID) for r in child.ReferencedSOPSequence)
                elif child.ValueType == "NUM" and concept(child) == ("122157", "DCM"):
                    finding["probability"] = float(child.MeasuredValueSequence[0].NumericValue)
                    finding["unit"] = str(child.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)
                elif child.ValueType == "NUM" and concept(child) == ("122411", "DCM"):
                    finding["threshold"] = float(child.MeasuredValueSequence[0].NumericValue)
                elif child.ValueType == "CODE" and concept(child) == ("125605004", "SCT"):
                    finding["finding"] = str(child.ConceptCodeSequence[0].CodeValue)
            groups.append(finding)
    return groups


def evidence_uids(ds: Any) -> set[str]:
    """SOP Instance UIDs in the SR's Current Requested Procedure Evidence Sequence."""
    return {
        str(sop.ReferencedSOPInstanceUID)
        for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


# ---------------------------------------------------------------------------- inside the namespace
def _wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """Linux: Orthanc ends with the driver, even when a test's timeout SIGKILLs the driver."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Orthanc:
    """Orthanc with the DICOMweb plugin, storage in a temporary folder, our node as a modality."""

    def __init__(self, root: Path, verbose: bool = False) -> None:
        self.root = root
        self.verbose = verbose  # log every HTTP request (tests count WADO-RS fetches)
        self.url = f"http://127.0.0.1:{ORTHANC_HTTP_PORT}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "monai-fracture-test",
            "StorageDirectory": str(self.root / "db"),
            "IndexDirectory": str(self.root / "db"),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "HttpPort": ORTHANC_HTTP_PORT,
            "DicomAet": ORTHANC_AET,
            "DicomPort": ORTHANC_DICOM_PORT,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowEcho": True,
            "AuthenticationEnabled": False,
            "RemoteAccessAllowed": True,
            "DicomModalities": {"fracture": [NODE_AET, "127.0.0.1", NODE_PORT]},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (self.root / "orthanc.json").write_text(json.dumps(config, indent=1))
        self.log = open(self.root / "orthanc.log", "w")
        self.proc = subprocess.Popen([str(ORTHANC_BIN), str(self.root / "orthanc.json"),
                                      *(["--verbose"] if self.verbose else [])], stdout=self.log, stderr=self.log,
                                     preexec_fn=_die_with_parent)
        _wait_for(lambda: self._http_ok() and _port_open(ORTHANC_DICOM_PORT), 30, what="Orthanc to start")

    def _http_ok(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/system", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def rest(self, method: str, path: str, body: Any = None, timeout_s: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"null")

    def dicomweb(self):
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(url=self.url + "/dicom-web")

    def orthanc_study_id(self, study_uid: str) -> str:
        request = urllib.request.Request(self.url + "/tools/lookup", data=study_uid.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            matches = [m for m in json.loads(response.read()) if m["Type"] == "Study"]
        if not matches:
            raise LookupError(f"study {study_uid} not in Orthanc")
        return matches[0]["ID"]

    def results_in_study(self, study_uid: str) -> list[dict[str, Any]]:
        """QIDO-RS: SR and KOS instances of a study (JSON DICOM attributes)."""
        client = self.dicomweb()
        found = client.search_for_instances(study_instance_uid=study_uid, fields=["00080016", "00080060"])
        return [item for item in found if item.get("00080016", {}).get("Value", [""])[0] in (*SR_STORAGE_CLASSES, KOS_STORAGE_CLASS)]


def store_files(files: list[Path], port: int, called_aet: str, calling_aet: str = PUSHER_AET) -> list[int]:
    """C-STORE files over one association; returns the status of each."""
    import pydicom
    from pynetdicom import AE
    from pynetdicom.presentation import build_context

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_aet)
    pairs = sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets})
    ae.requested_contexts = [build_context(cls, [ts]) for cls, ts in pairs]
    assoc = ae.associate("127.0.0.1", port, ae_title=called_aet)
    if not assoc.is_established:
        raise ConnectionError(f"association to {called_aet}:{port} as {calling_aet} not established")
    try:
        return [int(getattr(assoc.send_c_store(ds), "Status", -1)) for ds in datasets]
    finally:
        assoc.release()


def echo(port: int, called_aet: str, calling_aet: str) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return getattr(status, "Status", None) == 0
    finally:
        assoc.release()


class Node:
    """``monai-fracture serve`` as a subprocess (so that it can be SIGKILLed)."""

    def __init__(self, spec: dict[str, Any], log_path: Path, work_dir: str, port: int = NODE_PORT, extra: list[str] | None = None) -> None:
        self.spec = spec
        self.log_path = log_path
        self.work_dir = work_dir
        self.port = port
        self.extra = extra if extra is not None else ["--dest", f"{ORTHANC_AET}@127.0.0.1:{ORTHANC_DICOM_PORT}"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "monai_fracture", "-v", "serve",
            "--work-dir", self.work_dir, "--model", self.spec["model"],
            "--ae-title", NODE_AET, "--port", str(self.port),
            "--allow-aet", ORTHANC_AET, "--allow-aet", PUSHER_AET,
            "--idle-timeout", str(self.spec.get("idle_timeout_s", 1.5)),
            "--batch-size", "8", *self.extra,
        ]
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        _wait_for(lambda: self.proc.poll() is not None or echo(self.port, NODE_AET, PUSHER_AET), 90, 0.3, "the node to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"node exited with {self.proc.returncode}; see {self.log_path}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def terminate(self, timeout_s: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.log.close()


def _study_files(folder: str) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))


def _study_uid(files: list[Path]) -> str:
    import pydicom

    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _collect(orthanc: Orthanc, studies: dict[str, list[Path]], out: Path, timeout_s: float) -> dict[str, Any]:
    """Wait until each study has an SR in Orthanc; fetch its results (SR, and KOS if any) by WADO-RS into ``out``.

    The node sends the KOS before the SR in one association, so a visible SR means both are there.
    """
    client = orthanc.dicomweb()
    pending = set(studies)
    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for study_uid in sorted(pending):
            found = orthanc.results_in_study(study_uid)
            classes = [f["00080016"]["Value"][0] for f in found]
            if any(c in SR_STORAGE_CLASSES for c in classes):
                files = []
                for item in found:
                    ds = client.retrieve_instance(study_uid, item["0020000E"]["Value"][0], item["00080018"]["Value"][0])
                    path = out / f"{len(results):03d}_{len(files)}_{'sr' if ds.SOPClassUID in SR_STORAGE_CLASSES else 'kos'}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    files.append(str(path))
                results[study_uid] = {"files": files}
                pending.discard(study_uid)
        time.sleep(0.3)
    return {"results": results, "missing": sorted(pending)}


def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    out = Path(spec["out_dir"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    log: dict[str, Any] = {}
    orthanc = Orthanc(out / "orthanc")
    orthanc.start()
    node: Node | None = None
    try:
        work_dir = spec["work_dir"]
        node = Node(spec, out / "node.log", work_dir)
        t0 = time.monotonic()
        node.start()
        log["node_start_s"] = round(time.monotonic() - t0, 2)

        # echo: allowed vs unknown calling AE title
        log["echo_allowed"] = echo(NODE_PORT, NODE_AET, PUSHER_AET)
        log["echo_unknown_aet"] = echo(NODE_PORT, NODE_AET, "INTRUDER")
        log["orthanc_echo_node"] = orthanc.rest("POST", "/modalities/fracture/echo", body={}) is not None

        def fetched(name: str, folder_list: list[str], timeout_s: float) -> dict[str, Any]:
            target = out / name
            target.mkdir(exist_ok=True)
            studies = {_study_uid(_study_files(f)): _study_files(f) for f in folder_list}
            return _collect(orthanc, studies, target, timeout_s)

        # basic: PACS -> node -> PACS
        if spec.get("basic"):
            t0 = time.monotonic()
            ids = []
            for folder in spec["basic"]:
                files = _study_files(folder)
                statuses = store_files(files, ORTHANC_DICOM_PORT, ORTHANC_AET)
                assert all(s == 0 for s in statuses), f"Orthanc refused {folder}: {statuses}"
                ids.append(orthanc.orthanc_study_id(_study_uid(files)))
            orthanc.rest("POST", "/modalities/fracture/store", body={"Resources": ids, "Synchronous": True})
            log["basic"] = fetched("basic", spec["basic"], 60)
            log["basic"]["seconds"] = round(time.monotonic() - t0, 2)

        # concurrent: one association per study, all at once
        if spec.get("concurrent"):
            t0 = time.monotonic()
            with ThreadPoolExecutor(len(spec["concurrent"])) as pool:
                statuses = list(pool.map(lambda f: store_files(_study_files(f), NODE_PORT, NODE_AET), spec["concurrent"]))
            log["concurrent_store_statuses"] = statuses
            log["concurrent"] = fetched("concurrent", spec["concurrent"], 120)
            log["concurrent"]["seconds"] = round(time.monotonic() - t0, 2)

        # restart: SIGKILL with work in flight, restart on the same work folder
        if spec.get("restart_a") and spec.get("restart_b"):
            t0 = time.monotonic()
            first_wave = {_study_uid(_study_files(f)) for f in spec["restart_a"]}
            for folder in spec["restart_a"]:
                store_files(_study_files(folder), NODE_PORT, NODE_AET)
            _wait_for(lambda: any(orthanc.results_in_study(uid) for uid in first_wave), 60, 0.1, "a first SR")
            statuses = [store_files(_study_files(f), NODE_PORT, NODE_AET) for f in spec["restart_b"]]
            node.kill()
            log["restart_b_store_statuses"] = statuses
            work = Path(work_dir) / "studies"
            log["pending_at_kill"] = len([d for d in work.iterdir() if d.is_dir()])
            log["delivered_before_kill"] = sum(bool(orthanc.results_in_study(uid)) for uid in first_wave)
            node = Node(spec, out / "node_restarted.log", work_dir)
            node.start()
            log["restart"] = fetched("restart", spec["restart_a"] + spec["restart_b"], 120)
            log["restart"]["seconds"] = round(time.monotonic() - t0, 2)

        time.sleep(0.5)
        log["queue_left"] = sorted(p.name for p in (Path(work_dir) / "studies").iterdir())
        log["failed_left"] = sorted(p.name for p in (Path(work_dir) / "failed").iterdir())
        log["sigterm_returncode"] = node.terminate()
        node = None

        # stow: a second node that returns results by STOW-RS instead of C-STORE
        if spec.get("stow"):
            t0 = time.monotonic()
            stow_node = Node(spec, out / "node_stow.log", spec["work_dir"] + "_stow", NODE_PORT + 1,
                             ["--stow-url", f"{orthanc.url}/dicom-web"])
            stow_node.start()
            node = stow_node
            for folder in spec["stow"]:
                store_files(_study_files(folder), NODE_PORT + 1, NODE_AET)
            log["stow"] = fetched("stow", spec["stow"], 60)
            log["stow"]["seconds"] = round(time.monotonic() - t0, 2)
            log["stow_sigterm_returncode"] = node.terminate()
            node = None
    finally:
        if node is not None and node.proc is not None and node.proc.poll() is None:
            node.kill()
        orthanc.stop()
    return log


def run_as_driver(drive) -> None:
    """``python DRIVER.py SPEC.json`` inside the namespace: ``drive(spec)``'s log goes to ``OUT/driver.json``."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    log = drive(spec)
    Path(spec["out_dir"], "driver.json").write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    run_as_driver(_drive)
