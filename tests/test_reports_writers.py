"""Output writers chosen by name: the registry, its aliases and help, each writer's reported files,
and an extra writer (a FHIR-like JSON report) registered from outside without touching anything else."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pydicom
import pytest

from monai_fracture.cli import build_parser
from monai_fracture.reports import ImageResult, OutputWriter, StudyOutput, atomic_write_bytes, write_outputs
from monai_fracture.reports.outputs import OUTPUT_WRITERS, outputs_help, parse_outputs, register_output, unregister_output
from test_reports_region import study  # noqa: F401  (the fixture: a study of two or more radiographs)

MODEL = types.SimpleNamespace(name="test-fracture", version="0.0.1")


def _results(study) -> list[ImageResult]:
    return [ImageResult((ds.SOPInstanceUID,), p, 0.5, ds.SeriesInstanceUID) for ds, p in zip(study, (0.9, 0.1))]


def fhir_report(study: StudyOutput) -> list[Path]:
    """A tiny FHIR DiagnosticReport per study: the kind of writer a user adds."""
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "imagingStudy": [{"identifier": {"value": study.study_uid}}],
        "conclusion": "; ".join(r.summary(study.model_info) for r in study.ordered),
    }
    path = study.folder / "FHIR_report.json"
    atomic_write_bytes(path, json.dumps(report).encode())
    return [path]


@pytest.fixture
def fhir():
    writer = register_output(OutputWriter("fhir", "FHIR DiagnosticReport (JSON)", fhir_report, default=False))
    yield writer
    unregister_output("fhir")


def test_the_registry_names_the_families_in_writing_order():
    assert list(OUTPUT_WRITERS) == ["sr", "kos", "pr", "sc"]
    assert parse_outputs(None) == ("sr", "kos", "pr")
    assert parse_outputs("heatmaps, GSPS,ko") == ("kos", "pr", "sc")
    with pytest.raises(ValueError, match="unknown output.*fhir.*choose from sr, kos, pr, sc"):
        parse_outputs("sr,fhir")
    with pytest.raises(ValueError, match="already registered"):
        register_output(OutputWriter("gsps", "again", fhir_report))


def test_each_writer_returns_the_files_it_wrote(study, tmp_path):
    written = write_outputs(study, _results(study), MODEL, tmp_path, outputs="sr,kos,pr")
    assert set(written) == {"sr", "kos", "pr"}
    assert [p.name[:3] for p in written["sr"]] == ["SR_"] and [p.name[:3] for p in written["kos"]] == ["KO_"]
    assert written["pr"] == []  # no region, no overlay
    on_disk = set(tmp_path.rglob("*.dcm"))
    assert on_disk == set(written["sr"] + written["kos"])
    assert pydicom.dcmread(written["kos"][0]).Modality == "KO"


def test_a_registered_writer_is_chosen_by_name_listed_in_the_help_and_reported(study, tmp_path, fhir):
    assert parse_outputs("sr,fhir") == ("sr", "fhir") and "fhir" not in parse_outputs(None)
    assert "fhir (FHIR DiagnosticReport (JSON))" in outputs_help()
    help_text = " ".join(build_parser(["score"])._subparsers._group_actions[0].choices["score"].format_help().split())
    assert "fhir (FHIR DiagnosticReport (JSON))" in help_text
    written = write_outputs(study, _results(study), MODEL, tmp_path, outputs="sr,fhir")
    assert set(written) == {"sr", "fhir"} and len(written["fhir"]) == 1
    report = json.loads(written["fhir"][0].read_text())
    assert report["imagingStudy"][0]["identifier"]["value"] == study[0].StudyInstanceUID
    assert report["conclusion"].count("Fracture suspected") == 1
