"""Outputs and logs under attack (issue 13): planted symlinks, file modes, disk full and resume,
PHI in logs, control characters in names, CSV formula injection, model_info.json errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import hostile
from monai_fracture.reports.files import UnsafeOutputError, atomic_write_bytes, check_output_tree
from monai_fracture.scoring.journal import Journal
from monai_fracture.scoring.table import ResultRow, render_csv

ROOT = Path(__file__).resolve().parent.parent
PHI = "SMITHPHI"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


# ------------------------------------------------------------------ planted symlinks, modes
def test_planted_journal_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.jsonl").symlink_to(victim)
    journal = Journal(out / "journal.jsonl")
    with pytest.raises(UnsafeOutputError, match="symbolic link"):
        journal.load()
    with pytest.raises(UnsafeOutputError, match="symbolic link"):
        journal.open()
    assert victim.read_text() == "precious\n"


def test_symlinks_anywhere_inside_the_output_folder_are_refused(tmp_path):
    out = tmp_path / "out"
    (out / "dicom").mkdir(parents=True)
    check_output_tree(out)
    chosen = tmp_path / "chosen-link"  # --out itself may be a link: the user chose it
    chosen.symlink_to(out)
    check_output_tree(chosen)
    atomic_write_bytes(chosen / "manifest.json", b"{}")
    assert (out / "manifest.json").read_bytes() == b"{}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "dicom" / "study-x").symlink_to(elsewhere)
    with pytest.raises(UnsafeOutputError, match="study-x"):
        check_output_tree(out)
    (out / "results.csv").symlink_to(tmp_path / "victim")
    with pytest.raises(UnsafeOutputError):
        atomic_write_bytes(out / "results.csv", b"x")
    assert not (tmp_path / "victim").exists()


def test_journal_and_atomic_outputs_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        journal = Journal(tmp_path / "journal.jsonl").open()
        journal.write_run("m", "0.5")
        journal.close()
        atomic_write_bytes(tmp_path / "results.csv", b"a\n")
    finally:
        os.umask(old)
    for name in ("journal.jsonl", "results.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_csv_cells_that_spreadsheets_would_run_are_neutralised():
    import csv
    import io

    rows = [ResultRow(path="/in/a.dcm", status="scored", study_uid='=HYPERLINK("http://x","y")', series_uid="+1",
                      sop_uid="-2+3", reason="@SUM(A1)", model="\tcmd")]
    text = render_csv(rows).decode()
    line = text.splitlines()[1]
    for cell in ("'=HYPERLINK", "'+1", "'-2+3", "'@SUM(A1)", "'\tcmd"):
        assert cell in line
    reread = [ResultRow.from_mapping(row) for row in csv.DictReader(io.StringIO(text))]
    assert render_csv(reread).decode() == text  # merging escaped shards does not escape twice


# ------------------------------------------------------------------ runs of the real command
@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model with an 8-digit threshold, and a study whose names carry PHI and control characters."""
    from orthanc import make_tiny_model

    from monai_fracture.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("hardening-run")
    model = make_tiny_model(root / "model", size=64)
    info = json.loads((model / "model_info.json").read_text())
    info["threshold"] = 0.13119166
    (model / "model_info.json").write_text(json.dumps(info))
    folder = root / "in"
    generate_demo_dataset(folder, n=1, modality="xr", seed=2, size=64)
    for i, path in enumerate(sorted(p for p in folder.rglob("image_*") if p.is_file())):
        ds = pydicom.dcmread(path)
        ds.PatientName = PHI  # one component: highdicom's warning would print it
        ds.ReferringPhysicianName = "DOE\r\nINJECTED\x1b[31m"
        ds.AccessionNumber = "ACC\x1b1"
        ds.save_as(path)
    bad = hostile.small_dx()
    bad.PatientName = PHI + "^\nFORGED LINE"
    bad.PixelData = np.full((hostile.ROWS, hostile.COLUMNS), 7, np.uint8).tobytes()  # constant: no_content
    bad.save_as(folder / "constant.dcm", enforce_file_format=True)
    return folder, model


def _score(folder: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai_fracture", "-vv", "score", str(folder), "--out", str(out), "--model", str(model),
         "--batch-size", "1", *extra],
        capture_output=True, text=True, timeout=600, env=_env(), cwd=out.parent,
    )


@pytest.fixture(scope="module")
def whole_run(study, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted ``-vv`` run over the study: its logs, outputs and SR are the references."""
    folder, model = study
    out = tmp_path_factory.mktemp("whole") / "out"
    return out, _score(folder, out, model)


@pytest.mark.slow
def test_logs_hold_no_phi_and_names_are_cleaned_in_our_objects(whole_run):
    out, proc = whole_run
    assert proc.returncode == 1, proc.stderr[-3000:]  # the constant image failed
    assert PHI not in proc.stderr and PHI not in proc.stdout
    assert "FORGED LINE" not in proc.stderr and "\x1b" not in proc.stderr
    import pandas as pd

    table = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    rows = {Path(p).name: (s, r) for p, s, r in zip(table["path"], table["status"], table["reason"])}
    assert rows["constant.dcm"][0] == "failed" and rows["constant.dcm"][1].startswith("no_content")
    objects = sorted((out / "dicom").rglob("*.dcm"))
    assert objects
    for path in objects:
        ds = pydicom.dcmread(path)
        assert str(ds.ReferringPhysicianName) == "DOEINJECTED[31m"
        assert str(ds.AccessionNumber) == "ACC1"
        if shutil.which("dciodvfy"):
            from test_scoring_support import dciodvfy_errors

            assert dciodvfy_errors(path) == [], path
    for path in [out / "journal.jsonl", out / "results.csv", out / "manifest.json", *objects]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _threshold_values(folder: Path) -> list[str]:
    values = []
    for path in sorted(folder.rglob("SR_*.dcm")) or sorted(folder.rglob("*.dcm")):
        for line in subprocess.run(["dcmdump", str(path)], capture_output=True, text=True).stdout.splitlines() \
                if shutil.which("dcmdump") else []:
            if "NumericValue" in line:
                values.append(line.split("[")[1].split("]")[0])
    return values


@pytest.mark.slow
def test_disk_full_has_its_own_exit_code_keeps_the_journal_whole_and_resumes(study, tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    folder, model = study
    big = tmp_path / "in"
    shutil.copytree(folder, big)
    for i in range(60):  # rows of files decided at scan time fill the journal's first write
        (big / f"notes-{i:03d}-{'x' * 120}.txt").write_text("not an image")
    script = f"""
set -e
mount -t tmpfs -o size=4k,mode=0755 tmpfs {tmp_path}/out
set +e
{sys.executable} -m monai_fracture score {big} --out {tmp_path}/out --model {model} --batch-size 1 --no-progress 2>{tmp_path}/full.err
echo "first=$?"
python3 - <<'EOF'
import json
data = open("{tmp_path}/out/journal.jsonl", "rb").read()
assert data.endswith(b"\\n"), "torn journal"
[json.loads(line) for line in data.splitlines()]
print("journal-lines", len(data.splitlines()))
EOF
mount -o remount,size=64m {tmp_path}/out
{sys.executable} -m monai_fracture score {big} --out {tmp_path}/out --model {model} --batch-size 1 --no-progress 2>{tmp_path}/resume.err
echo "second=$?"
cp -a {tmp_path}/out {tmp_path}/copied
"""
    (tmp_path / "out").mkdir()
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env=_env(), cwd=tmp_path)
    assert "first=3" in proc.stdout, proc.stdout + proc.stderr + (tmp_path / "full.err").read_text()[-2000:]
    assert "disk full" in (tmp_path / "full.err").read_text()
    assert "journal-lines" in proc.stdout, proc.stdout + proc.stderr
    assert "second=1" in proc.stdout, proc.stdout + (tmp_path / "resume.err").read_text()[-3000:]
    import pandas as pd

    resumed = pd.read_csv(tmp_path / "copied" / "results.csv", dtype=str, keep_default_na=False)
    inputs = sorted(str(p) for p in big.rglob("*") if p.is_file())
    assert sorted(resumed["path"]) == inputs  # every input exactly once
    expected = {p: "scored" if Path(p).name.startswith("image_") else "failed" if Path(p).name == "constant.dcm"
                else "skipped" for p in inputs}
    assert dict(zip(resumed["path"], resumed["status"])) == expected


@pytest.mark.slow
def test_resumed_sr_equals_the_uninterrupted_one(study, whole_run, tmp_path):
    folder, model = study
    whole, proc = whole_run
    assert proc.returncode == 1
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    lines = (whole / "journal.jsonl").read_text().splitlines()
    # a run killed after scoring, before its study outputs: rows journaled, no study_done, no DICOM
    (resumed / "journal.jsonl").write_text("".join(line + "\n" for line in lines if '"study_done"' not in line))
    assert _score(folder, resumed, model).returncode == 1
    first, second = sorted((whole / "dicom").rglob("*.dcm")), sorted((resumed / "dicom").rglob("*.dcm"))
    assert [p.relative_to(whole) for p in first] == [p.relative_to(resumed) for p in second]
    for a, b in zip(first, second):
        da, db = pydicom.dcmread(a), pydicom.dcmread(b)
        # when each object was made differs between any two runs (each output series is written whole,
        # by one run, so its SeriesDate/Time is that run's too)
        for ds in (da, db):
            for keyword in ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
                            "SeriesDate", "SeriesTime", "PresentationCreationDate", "PresentationCreationTime",
                            "ContributingEquipmentSequence"):
                ds.pop(keyword, None)
        differing = [str(e.keyword or e.tag) for e in da if e.tag not in db or db[e.tag] != e]
        assert differing == [], a.name
    assert any("0.13119166" in str(v) for v in _threshold_values(resumed)) or not shutil.which("dcmdump")


# ------------------------------------------------------------------ model_info.json
@pytest.mark.parametrize("change", [{"threshold": float("nan")}, {"threshold": "high"}, {"threshold": 7},
                                    {"network": {"name": "no-such-network", "spatial_dims": 2}}, {"network": "x"}])
def test_model_info_errors_are_messages_with_exit_2(study, tmp_path, change):
    from monai_fracture.model_package import ModelPackageError, load_model

    _, model = study
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    info = json.loads((broken / "model_info.json").read_text())
    info.update(change)
    (broken / "model_info.json").write_text(json.dumps(info))
    with pytest.raises(ModelPackageError, match="model_info.json|network"):
        load_model(broken)


def test_onnx_runtime_writes_no_telemetry_under_home(tmp_path):
    """ONNX Runtime 1.32 keeps a telemetry database under ~/.cache/Microsoft unless turned off."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["inputs"], ["logits"])], "identity",
                              [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])])
    model = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    home = tmp_path / "home"
    home.mkdir()
    code = ("import sys, numpy as np\nfrom monai_fracture.model_package import OnnxNetwork\n"
            "print(OnnxNetwork(sys.argv[1])(np.ones((1, 2), np.float32)).tolist())")
    proc = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=120,
                          env=_env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache")), cwd=tmp_path)
    assert proc.returncode == 0 and "[[1.0, 1.0]]" in proc.stdout, proc.stderr[-2000:]
    assert [str(p.relative_to(home)) for p in home.rglob("*")] == []
