"""A resumed run removes its own half-written files, never those of a layer writing beside it."""

from __future__ import annotations

from pathlib import Path

from monai_fracture.reports.files import remove_stale_temporaries
from monai_fracture.scoring.dicomweb_run import study_list


def test_stale_temporaries_are_removed_except_in_hidden_folders(tmp_path: Path) -> None:
    """The DICOMweb download thread writes ``.x.dcm.*.tmp`` into ``.dicomweb-spool`` while a chunk resumes."""
    out = tmp_path / "out"
    stale = [out / ".results.csv.abc.tmp", out / "dicom" / "study-1" / ".SR_1.dcm.def.tmp"]
    in_flight = out / ".dicomweb-spool" / "ba288bafee82d206" / ".f614.dcm.ghi.tmp"
    kept = [out / "dicom" / "study-1" / "SR_1.dcm", in_flight]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert remove_stale_temporaries(out) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    # the spool's own stale downloads are cleaned when the DICOMweb run starts, before its thread does
    assert remove_stale_temporaries(out / ".dicomweb-spool") == 1 and not in_flight.exists()


def test_a_study_listed_twice_is_fetched_once(tmp_path: Path) -> None:
    listed = tmp_path / "studies.txt"
    listed.write_text("# two lists\n1.2.3\n1.2.4  # again below\n1.2.3\n")
    assert list(study_list(["1.2.4", "1.2.5"], [str(listed)])) == ["1.2.4", "1.2.5", "1.2.3"]
