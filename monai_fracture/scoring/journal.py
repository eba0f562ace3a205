"""The append-only journal that makes a run resumable after Ctrl-C, a crash or SIGKILL.

Every finished row is appended as one JSON line and fsync'd with its batch; a study whose
DICOM outputs were written gets a ``study_done`` line. A line torn by a kill is dropped (and
cut off the file) on the next start, so the resumed run re-does exactly the unfinished work.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from monai_fracture.reports.files import UnsafeOutputError, open_private_append
from monai_fracture.scoring.table import ResultRow

logger = logging.getLogger(__name__)


class JournalMismatchError(ValueError):
    """The output folder holds results of another model or threshold."""


@dataclass
class JournalState:
    rows: dict[str, ResultRow] = field(default_factory=dict)
    studies_done: set[str] = field(default_factory=set)
    run: dict | None = None
    # path -> evidence region (``reports.EvidenceRegion.to_dict``) of a positive image, so a resumed
    # run writes the same SR region and overlay without recomputing the heatmap
    regions: dict[str, dict] = field(default_factory=dict)
    # study key -> output name -> files written (relative to the output folder): what the run reports
    files: dict[str, dict[str, list[str]]] = field(default_factory=dict)


class Journal:
    """``journal[.shard-i-of-n].jsonl`` in the output folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._handle = None

    def load(self) -> JournalState:
        """Read what a previous run finished; cut a torn last line."""
        state = JournalState()
        if self.path.is_symlink():
            raise UnsafeOutputError(f"{self.path}: a symbolic link; refusing to read or truncate through it")
        if not self.path.is_file():
            return state
        good_end = 0
        with open(self.path, "rb") as handle:
            data = handle.read()
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:  # JSONDecodeError, or UnicodeDecodeError on the zeros a power cut can leave
                break
            if not isinstance(record, dict):
                break
            good_end += len(line)
            kind = record.pop("type", None)
            if kind == "row":
                row = ResultRow.from_mapping(record)
                state.rows[row.path] = row
            elif kind == "study_done":
                state.studies_done.add(str(record["study"]))
                _add_files(state, str(record["study"]), record.get("files") or {})
            elif kind == "files":
                _add_files(state, str(record["study"]), record.get("files") or {})
            elif kind == "run":
                state.run = state.run or record
            elif kind == "region":
                state.regions[str(record["path"])] = record["region"]
        if good_end < len(data):
            logger.warning("journal %s: dropping a torn last record (%d bytes)", self.path, len(data) - good_end)
            with open_private_append(self.path) as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return state

    def check_run(self, state: JournalState, model: str, threshold: str) -> None:
        if state.run is None:
            return
        if state.run.get("model") != model or state.run.get("threshold") != threshold:
            raise JournalMismatchError(
                f"{self.path.parent} holds results of model {state.run.get('model')} at threshold "
                f"{state.run.get('threshold')}, not {model} at {threshold}: use another --out folder"
            )

    def open(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open_private_append(self.path)
        return self

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _append(self, records: Iterable[dict]) -> None:
        if self._handle is None:
            self.open()
        payload = b"".join(json.dumps(r, ensure_ascii=True).encode() + b"\n" for r in records)
        if not payload:
            return
        handle = self._handle
        end = handle.seek(0, os.SEEK_END)
        view = memoryview(payload)
        try:
            while view:
                view = view[handle.write(view) :]
            os.fsync(handle.fileno())
        except OSError:
            # disk full (or an I/O error): cut the partial record so the journal stays whole for a resume
            _truncate_quietly(handle, end)
            self.close()
            raise

    def write_run(self, model: str, threshold: str, **extra: object) -> None:
        self._append([{"type": "run", "model": model, "threshold": threshold, **extra}])

    def write_rows(self, rows: Iterable[ResultRow]) -> None:
        self._append({"type": "row", **row.to_dict()} for row in rows)

    def write_region(self, path: str, region: dict) -> None:
        self._append([{"type": "region", "path": path, "region": region}])

    def write_study_done(self, study_uid: str, files: dict[str, list[str]] | None = None) -> None:
        """The study's outputs are written; ``files``: output name -> files (relative to the output folder)."""
        record: dict = {"type": "study_done", "study": study_uid}
        if files:
            record["files"] = files
        self._append([record])

    def write_files(self, study_uid: str, files: dict[str, list[str]]) -> None:
        """Outputs written outside the study's report job (a heatmap SC, as soon as it exists)."""
        self._append([{"type": "files", "study": study_uid, "files": files}])


def _add_files(state: JournalState, study: str, files: dict) -> None:
    known = state.files.setdefault(study, {})
    for name, paths in files.items():
        listed = known.setdefault(str(name), [])
        listed.extend(str(p) for p in paths if str(p) not in listed)


def _truncate_quietly(handle: io.FileIO, size: int) -> None:
    try:
        os.ftruncate(handle.fileno(), size)
    except OSError as err:  # the torn tail is dropped by the next load() anyway
        logger.warning("journal %s: could not cut a partial record: %s", handle.name, err)
