"""The resume journal on its own: torn lines from a kill, a second resume, a run of another model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from monai_fracture.scoring.journal import Journal, JournalMismatchError
from monai_fracture.scoring.table import ResultRow

pytestmark = pytest.mark.timeout(30)


def row(i: int, status: str = "scored") -> ResultRow:
    return ResultRow(path=f"/data/img{i}.dcm", status=status, study_uid=f"1.2.{i}", sop_uid=f"1.2.{i}.1",
                     probability=f"0.{i:06d}", prediction=str(i % 2), threshold="0.5", model="m@1")


def first_run(path: Path, n: int = 3) -> Journal:
    journal = Journal(path).open()
    journal.write_run("m@1", "0.5", batch_size=16)
    journal.write_rows([row(i) for i in range(n)])
    journal.write_study_done("1.2.0")
    journal.close()
    return journal


def test_rows_studies_and_run_come_back(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first_run(path)
    state = Journal(path).load()
    assert state.rows == {r.path: r for r in (row(0), row(1), row(2))}
    assert state.studies_done == {"1.2.0"}
    assert state.run == {"model": "m@1", "threshold": "0.5", "batch_size": 16}
    assert all(json.loads(line)["type"] in ("run", "row", "study_done") for line in path.read_text().splitlines())


def test_a_later_row_for_the_same_path_wins(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.write_rows([row(1, status="failed")])  # opens the file itself
    journal.write_rows([row(1)])
    journal.write_run("m@1", "0.5")
    journal.write_run("m@2", "0.7")  # only the first run record counts
    journal.close()
    state = Journal(path).load()
    assert state.rows[row(1).path].status == "scored" and len(state.rows) == 1
    assert state.run == {"model": "m@1", "threshold": "0.5"}


@pytest.mark.parametrize("torn", [b'{"type": "row", "path": "/data/img9.dcm", "sta', b'{"type": "row"}'])
def test_a_torn_last_line_is_cut_and_rows_after_the_resume_survive(tmp_path: Path, torn: bytes,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A kill mid-write leaves a line without its newline; the resumed run appends after it.

    If that line stayed, the first row of the resumed run would be glued to it and every row after it
    lost on the next resume (work redone, or worse, a study's outputs written twice).
    """
    path = tmp_path / "journal.jsonl"
    first_run(path)
    intact = path.read_bytes()
    path.write_bytes(intact + torn)
    state = Journal(path).load()
    assert set(state.rows) == {row(i).path for i in range(3)} and state.studies_done == {"1.2.0"}
    cut = path.read_bytes() == intact
    assert "dropping a torn last record" in caplog.text and str(path) in caplog.text

    resumed = Journal(path).open()
    resumed.write_rows([row(3), row(4)])
    resumed.write_study_done("1.2.3")
    resumed.close()
    state = Journal(path).load()
    assert set(state.rows) == {row(i).path for i in range(5)}
    assert state.studies_done == {"1.2.0", "1.2.3"}
    assert state.run == {"model": "m@1", "threshold": "0.5", "batch_size": 16}
    assert cut, "the torn record must be cut off the file"


@pytest.mark.parametrize("damaged", [b"\x00" * 12 + b"\n", b"\x00\x00garbage\n", b"not json\n", b"[1, 2]\n", b"7\n"])
def test_a_line_that_is_not_a_record_ends_what_is_trusted(tmp_path: Path, damaged: bytes) -> None:
    """Bytes after a damaged line are not trusted either: the run re-does them.

    A power cut can leave a block of zeros where the last records were: that must resume too.
    """
    path = tmp_path / "journal.jsonl"
    first_run(path, n=2)
    intact = path.read_bytes()
    later = json.dumps({"type": "row", **row(7).to_dict()}).encode() + b"\n"
    path.write_bytes(intact + damaged + later)
    state = Journal(path).load()
    assert set(state.rows) == {row(0).path, row(1).path}
    assert path.read_bytes() == intact


def test_a_clean_journal_is_left_byte_for_byte(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "journal.jsonl"
    first_run(path)
    before = path.read_bytes()
    Journal(path).load()
    assert path.read_bytes() == before and "torn" not in caplog.text


def test_no_journal_is_an_empty_state(tmp_path: Path) -> None:
    state = Journal(tmp_path / "missing" / "journal.jsonl").load()
    assert state.rows == {} and state.studies_done == set() and state.run is None
    assert not (tmp_path / "missing").exists()


def test_another_model_or_threshold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out" / "journal.jsonl"
    first_run(path)
    journal = Journal(path)
    state = journal.load()
    journal.check_run(state, "m@1", "0.5")
    with pytest.raises(JournalMismatchError, match=r"holds results of model m@1 at threshold 0.5, not m@2 at 0.5"):
        journal.check_run(state, "m@2", "0.5")
    with pytest.raises(JournalMismatchError, match=str(path.parent)):
        journal.check_run(state, "m@1", "0.6")
    journal.check_run(Journal(tmp_path / "none.jsonl").load(), "m@2", "0.9")  # a first run: nothing to compare


def test_empty_writes_add_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path).open()
    journal.write_rows([])
    journal.close()
    journal.close()  # twice is harmless
    assert path.read_bytes() == b""


def test_undecodable_path_names_round_trip(tmp_path: Path) -> None:
    """File names that are not UTF-8 reach us as surrogate escapes; the journal must still hold them."""
    odd = row(5)
    odd.path = os.fsdecode(b"/data/caf\xe9-\xff.dcm")
    path = tmp_path / "journal.jsonl"
    journal = Journal(path).open()
    journal.write_rows([odd, row(6)])
    journal.close()
    assert set(Journal(path).load().rows) == {odd.path, row(6).path}


def test_unknown_records_are_skipped_not_fatal(tmp_path: Path) -> None:
    """A record of a later version (or without a type) is passed over; what follows still counts."""
    path = tmp_path / "journal.jsonl"
    first_run(path, n=1)
    with open(path, "ab") as handle:
        handle.write(b'{"path": "/data/typeless.dcm"}\n{"type": "progress", "done": 1}\n')
    journal = Journal(path).open()
    journal.write_rows([row(8)])
    journal.close()
    state = Journal(path).load()
    assert set(state.rows) == {row(0).path, row(8).path}


def test_the_folder_is_made_and_the_file_closed(tmp_path: Path) -> None:
    path = tmp_path / "out" / "shard" / "journal.jsonl"
    journal = Journal(path).open()
    journal.write_rows([row(1)])
    assert str(path) in {f.path for f in psutil.Process().open_files()}
    journal.close()
    assert str(path) not in {f.path for f in psutil.Process().open_files()}
    assert set(Journal(path).load().rows) == {row(1).path}


def test_the_warning_counts_the_dropped_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "journal.jsonl"
    first_run(path, n=1)
    with open(path, "ab") as handle:
        handle.write(b'{"type": "ro')
    Journal(path).load()
    assert caplog.messages == [f"journal {path}: dropping a torn last record (12 bytes)"]
