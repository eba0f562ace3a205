"""Resume after a real SIGKILL, and sharding (torchrun with 2 CPU ranks, --shard i/n) give the same
results.csv as one uninterrupted single-process run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from monai_fracture.scoring import score_paths
from needs import missing
from test_scoring_support import add_bad_inputs, assert_same_results, image_files, make_demo_folder, make_model, sr_probabilities

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    folder = make_demo_folder(root / "in", n=24, seed=11, size=96)
    images = image_files(folder)
    add_bad_inputs(folder, images[0], None)
    model = make_model(root / "model", images[:12])
    reference = root / "reference"
    summary = score_paths([folder], reference, model=model, batch_size=4, progress=False)
    assert summary.exit_code == 1 and summary.counts["scored"] == len(images)
    return folder, model, reference


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _scored_lines(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b'"status": "scored"')
    except FileNotFoundError:
        return 0


def _assert_no_process_left(marker: str, timeout_s: float = 10.0) -> None:
    """No process whose command line names ``marker`` survives (checked through /proc)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                        alive.append(int(entry.name))
                except OSError:
                    continue
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not alive, f"processes left behind after SIGKILL: {alive}"


def test_resume_after_sigkill_equals_uninterrupted_run(setup, tmp_path):
    folder, model, reference = setup
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai_fracture", "score", str(folder), "--out", str(out), "--model", str(model),
               "--batch-size", "1", "--no-progress"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    try:
        while _scored_lines(journal) < 3:
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]!r}"
            assert time.monotonic() < deadline, "no scored rows in the journal after 120 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    _assert_no_process_left(str(out))  # forked report workers die with their parent
    killed_after = _scored_lines(journal)
    assert 3 <= killed_after < len(image_files(folder)), "the kill must land mid-run"
    # nothing visible is partial: every DICOM file written so far parses completely
    for path in out.rglob("*.dcm"):
        if not path.name.startswith("."):
            pydicom.dcmread(path).walk(lambda ds, elem: None)
    assert not (out / "results.csv").exists() or (out / "results.csv").read_text().startswith("path,")

    summary = score_paths([folder], out, model=model, batch_size=3, progress=False)
    assert not summary.interrupted
    assert_same_results(out / "results.csv", reference / "results.csv")
    assert not list(out.rglob(".*.tmp"))
    assert_same_results(sr_probabilities(out), sr_probabilities(reference))
    reference_names = sorted(p.relative_to(reference).as_posix() for p in reference.glob("dicom/*/*.dcm"))
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("dicom/*/*.dcm")) == reference_names


def test_torchrun_two_ranks_equals_single_process(setup, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        missing("torchrun not installed (it comes with torch)")
    folder, model, reference = setup
    out = tmp_path / "out"
    command = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "monai_fracture", "score", str(folder),
               "--out", str(out), "--model", str(model), "--batch-size", "4", "--no-progress"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # the corrupt inputs failed: exit 1 from each rank
    assert (out / "results.csv").is_file(), done.stderr[-3000:]
    assert_same_results(out / "results.csv", reference / "results.csv")
    assert {p.name for p in out.glob("results.shard-*.csv")} == {"results.shard-0-of-2.csv", "results.shard-1-of-2.csv"}
    assert_same_results(sr_probabilities(out), sr_probabilities(reference))


def test_shard_option_and_merge(setup, tmp_path):
    folder, model, reference = setup
    out = tmp_path / "out"
    first = score_paths([folder], out, model=model, batch_size=4, shard="0/2", write_dicom=False, progress=False)
    assert not first.merged and not (out / "results.csv").exists()
    second = score_paths([folder], out, model=model, batch_size=4, shard="1/2", write_dicom=False, progress=False)
    assert second.merged, "the last shard to finish merges"
    assert_same_results(out / "results.csv", reference / "results.csv")
    merged = (out / "results.csv").read_bytes()
    (out / "results.csv").unlink()
    from monai_fracture.cli import main as cli_main

    assert cli_main(["score", "--merge", str(out)]) == 0
    assert (out / "results.csv").read_bytes() == merged
