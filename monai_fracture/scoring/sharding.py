"""Split the work by study across ranks and merge the per-rank results into one results.csv.

Two ways to run shards, one file layout:
- ``torchrun --nproc_per_node=N -m monai_fracture score ...``: RANK / WORLD_SIZE come from the
  environment; after its own shard each rank waits at a gloo barrier and rank 0 merges.
- ``monai-fracture score ... --shard i/n`` (any scheduler, any machines sharing the output
  folder): each shard writes ``results.shard-i-of-n.csv``; the shard that finishes last (sees
  all n files) merges, and ``monai-fracture score --merge DIR`` merges explicitly.
A study (all files with one StudyInstanceUID; a non-DICOM file is its own study) always goes
to one shard, chosen by a stable hash, so study-level SR/KOS need no cross-rank traffic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from monai_fracture.files import atomic_write_bytes
from monai_fracture.scoring.table import ResultRow, count_statuses, read_results_csv, write_results_csv

logger = logging.getLogger(__name__)

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SHARD_FILE = re.compile(r"^results\.shard-(\d+)-of-(\d+)\.csv$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    from_torchrun: bool = False

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"invalid shard {self.index}/{self.count}: need 0 <= i < n")

    @property
    def suffix(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, study_key: str) -> bool:
        return shard_of(study_key, self.count) == self.index


def parse_shard(text: str | Shard | tuple[int, int] | None) -> Shard | None:
    """``"i/n"`` (0-based i) -> Shard; None stays None."""
    if text is None or isinstance(text, Shard):
        return text
    if isinstance(text, tuple):
        return Shard(int(text[0]), int(text[1]))
    match = _SHARD_RE.match(str(text))
    if not match:
        raise ValueError(f"--shard expects i/n with 0 <= i < n, got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_from_environment() -> Shard | None:
    """The torchrun rank as a shard, when WORLD_SIZE > 1."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return None
    return Shard(rank, world, from_torchrun=True) if world > 1 else None


def shard_of(study_key: str, count: int) -> int:
    """Stable across processes and Python versions (unlike ``hash()``)."""
    digest = hashlib.sha256(study_key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def shard_results(out_dir: Path, count: int) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in Path(out_dir).glob(f"results.shard-*-of-{count}.csv"):
        match = _SHARD_FILE.match(path.name)
        if match and int(match.group(2)) == count:
            found[int(match.group(1))] = path
    return found


def detect_shard_count(out_dir: Path) -> int | None:
    counts = {int(m.group(2)) for p in Path(out_dir).glob("results.shard-*.csv") if (m := _SHARD_FILE.match(p.name))}
    if len(counts) > 1:
        raise ValueError(f"{out_dir} holds shard results for several shard counts: {sorted(counts)}")
    return counts.pop() if counts else None


def merge_shards(out_dir: str | os.PathLike, count: int | None = None) -> Path:
    """Merge ``results.shard-*-of-n.csv`` (and manifests) into ``results.csv`` / ``manifest.json``."""
    out_dir = Path(out_dir)
    count = count or detect_shard_count(out_dir)
    if not count:
        raise FileNotFoundError(f"no results.shard-*-of-*.csv in {out_dir}")
    files = shard_results(out_dir, count)
    missing = sorted(set(range(count)) - set(files))
    if missing:
        raise FileNotFoundError(f"{out_dir}: shard results missing for shard(s) {missing} of {count}")
    rows: dict[str, ResultRow] = {}
    for index in range(count):
        for row in read_results_csv(files[index]):
            if row.path in rows:
                raise ValueError(f"{row.path} appears in more than one shard")
            rows[row.path] = row
    target = write_results_csv(out_dir / "results.csv", rows.values())
    _merge_manifests(out_dir, count, list(rows.values()))
    logger.info("merged %d shard(s) into %s (%d rows)", count, target, len(rows))
    return target


def _merge_manifests(out_dir: Path, count: int, rows: list[ResultRow]) -> None:
    parts = []
    for index in range(count):
        path = out_dir / f"manifest.shard-{index}-of-{count}.json"
        if path.is_file():
            parts.append(json.loads(path.read_text(encoding="utf-8")))
    statuses, reasons = count_statuses(rows)
    merged: dict = dict(parts[0]) if parts else {}
    merged.update(
        counts=statuses,
        reasons=reasons,
        total_files=len(rows),
        shards=[{k: p.get(k) for k in ("shard", "counts", "timings", "images_per_second", "interrupted", "host")} for p in parts],
        interrupted=any(p.get("interrupted") for p in parts),
        dicom_outputs=sum(int(p.get("dicom_outputs", 0)) for p in parts),
        dicom_output_errors=[e for p in parts for e in p.get("dicom_output_errors", [])],
        start_time=min((p["start_time"] for p in parts if p.get("start_time")), default=None),
        end_time=max((p["end_time"] for p in parts if p.get("end_time")), default=None),
        shard=None,
    )
    scored = statuses.get("scored", 0)
    wall = max((p.get("timings", {}).get("total_s", 0.0) for p in parts), default=0.0)
    merged["timings"] = {"total_s": wall, "per_shard_total_s": [p.get("timings", {}).get("total_s") for p in parts]}
    merged["images_per_second"] = scored / wall if wall else None
    atomic_write_bytes(out_dir / "manifest.json", (json.dumps(merged, indent=2, sort_keys=True) + "\n").encode())
