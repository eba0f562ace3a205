"""``score --engine ray`` on a real local Ray cluster: the same results as the local engine, a killed
classifier actor costs a retry (not a result), a SIGKILLed driver resumes without rescoring, and an
unreachable cluster is a clear usage error.

Each Ray run is a ``monai-fracture score`` process inside its own network and PID namespace
(``unshare --net --pid --fork --mount-proc``): the cluster it starts sees only loopback, and when the
driver dies the kernel ends every Ray process of that namespace with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monai_fracture.scoring import score_paths
from helpers.needs import missing
from helpers.scoring import assert_same_results, image_files, make_demo_folder, make_model, sr_probabilities

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.network]


def _namespace_prefix() -> list[str]:
    prefix = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return prefix if os.geteuid() == 0 else prefix[:1] + ["--map-root-user"] + prefix[1:]


def _namespace_unavailable() -> str | None:
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found (util-linux / iproute2)"
    probe = subprocess.run(_namespace_prefix() + ["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot create namespaces (unshare): {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    reason = _namespace_unavailable()
    if reason:
        missing(reason)
    pytest.importorskip("ray.data", reason="ray[data] is installed by make test (pyproject extra 'ray')")
    root = tmp_path_factory.mktemp("ray")
    folder = make_demo_folder(root / "in", n=16, seed=5, size=96)
    images = image_files(folder)
    model = make_model(root / "model", images[:8])
    reference = root / "reference"
    summary = score_paths([folder], reference, model=model, batch_size=4, progress=False, backend="fp32")
    assert summary.exit_code == 0 and summary.counts["scored"] == len(images)
    return folder, model, reference


@contextlib.contextmanager
def _ray_run(folder: Path, model: Path, out: Path, *extra: str) -> Iterator[subprocess.Popen]:
    """A ``score --engine ray`` driver in fresh namespaces (Ray's files under a short temp dir: socket paths);
    killed and cleaned up on the way out."""
    ray_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", RAY_TMPDIR=str(ray_dir))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    score = [sys.executable, "-m", "monai_fracture", "score", str(folder), "--out", str(out), "--model", str(model),
             "--engine", "ray", "--backend", "fp32", "--no-progress", *extra]
    script = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in score)
    process = subprocess.Popen(_namespace_prefix() + ["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)
        shutil.rmtree(ray_dir, ignore_errors=True)


def _scored_lines(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b'"status": "scored"')
    except FileNotFoundError:
        return 0


def _pids_in_namespace_of(pid: int, title: str) -> list[int]:
    """Processes titled ``title`` (Ray sets ``ray::NAME``) in the PID namespace of ``pid``'s children."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/pid_for_children")
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") == namespace and title in (entry / "cmdline").read_bytes().decode(
                    errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_for_rows(process: subprocess.Popen, journal: Path, rows: int, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while _scored_lines(journal) < rows:
        assert process.poll() is None, f"the run ended before the fault could be injected: {process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"fewer than {rows} scored rows after {timeout_s} s"
        time.sleep(0.05)


def _dicom_names(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.glob("dicom/*/*.dcm"))


def test_ray_engine_equals_local_even_when_an_actor_is_killed(setup, tmp_path):
    folder, model, reference = setup
    out = tmp_path / "out"
    with _ray_run(folder, model, out, "--batch-size", "2") as process:
        _wait_for_rows(process, out / "journal.jsonl", 2)
        actors = _pids_in_namespace_of(process.pid, "ray::MapWorker(MapBatches(ClassifierActor")
        assert actors, "no classifier actor found to kill"
        killed_after = _scored_lines(out / "journal.jsonl")
        for pid in actors:
            os.kill(pid, signal.SIGKILL)
        log, _ = process.communicate(timeout=600)
    assert process.returncode == 0, log[-3000:]
    assert killed_after < len(image_files(folder)), "the actor must die mid-run"
    # every input once, probabilities within 1e-6 of the local engine (the rounding of results.csv), same decisions
    assert_same_results(out / "results.csv", reference / "results.csv")
    journal_paths = [json.loads(line)["path"] for line in (out / "journal.jsonl").read_text().splitlines()
                     if '"path"' in line and '"status"' in line]
    assert len(journal_paths) == len(set(journal_paths)), "a retried batch was recorded twice"
    assert_same_results(sr_probabilities(out), sr_probabilities(reference))
    assert _dicom_names(out) == _dicom_names(reference)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["engine"] == "ray"


def test_ray_driver_sigkill_resumes_without_rescoring(setup, tmp_path):
    folder, model, reference = setup
    out = tmp_path / "out"
    with _ray_run(folder, model, out, "--batch-size", "1") as process:
        _wait_for_rows(process, out / "journal.jsonl", 1)
        # freeze the classifier actor so the kill lands mid-run even when the driver drains a burst of results
        for pid in _pids_in_namespace_of(process.pid, "ray::MapWorker(MapBatches(ClassifierActor"):
            os.kill(pid, signal.SIGSTOP)
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)  # unshare --kill-child passes it to the namespace's first process; the kernel ends all of Ray with it
        process.communicate(timeout=60)
    done_before = _scored_lines(out / "journal.jsonl")
    total = len(image_files(folder))
    assert 1 <= done_before < total, "the kill must land mid-run"

    with _ray_run(folder, model, out, "--batch-size", "4") as process:
        log, _ = process.communicate(timeout=600)
    assert process.returncode == 0, log[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_rows"] >= done_before
    assert manifest["scored_this_run"] == total - done_before, "finished images were scored again"
    assert_same_results(out / "results.csv", reference / "results.csv")
    assert not list(out.rglob(".*.tmp")), "a partial file survived"
    assert _dicom_names(out) == _dicom_names(reference)


def test_unreachable_cluster_is_a_clear_usage_error(setup, tmp_path):
    folder, model, _ = setup
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "monai_fracture", "score", str(folder), "--out", str(tmp_path / "out"), "--model",
         str(model), "--engine", "ray", "--address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Ray cluster at 127.0.0.1:1 is unreachable" in result.stderr
    assert time.monotonic() - started < 60
