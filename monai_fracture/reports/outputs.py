"""The output writers, chosen by name (``--outputs sr,kos,pr,sc``): one module per DICOM object family.

Each family module (``sr``, ``ko``, ``pr``, ``sc``, following highdicom's own split) has a
``write(study: StudyOutput) -> list[Path]`` that builds its object(s) for one finished study and
returns the files it wrote. This registry names them, in the order they are written, with one line
of help each; ``parse_outputs`` reads names against it and the CLI builds its ``--outputs`` help from
it. Entries name their module as text, so listing them (``--help``) imports no highdicom.

Adding an output (a FHIR DiagnosticReport, say) is one new module and one entry here::

    # monai_fracture/reports/fhir.py
    def write(study: StudyOutput) -> list[Path]:
        path = study.folder / f"FHIR_{stable_hash(study.study_uid)}.json"
        atomic_write_bytes(path, json.dumps(diagnostic_report(study)).encode())
        return [path]

    # here
    register_output(OutputWriter("fhir", "FHIR DiagnosticReport (JSON)", "monai_fracture.reports.fhir:write",
                                 default=False))

Runner, CLI, Deploy operator and PACS node need no change: they write what is chosen and send
what the writers report (``tests/test_reports_writers.py`` registers such a writer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from monai_fracture.reports.writer import StudyOutput

WriteFunction = Callable[["StudyOutput"], list[Path]]


@dataclass(frozen=True)
class OutputWriter:
    """One output family: its ``--outputs`` name, help, writer (``"module:function"`` or the function
    itself), accepted aliases, and whether it is written without ``--outputs``."""

    name: str
    help: str
    target: Union[str, WriteFunction]
    aliases: tuple[str, ...] = ()
    default: bool = True

    def write(self, study: StudyOutput) -> list[Path]:
        """Write this family's objects for ``study``; returns the files written (maybe none)."""
        function = self.target
        if isinstance(function, str):
            module, _, name = function.partition(":")
            function = getattr(importlib.import_module(module), name)
        return list(function(study))


#: name -> writer, in the order the objects are written.
OUTPUT_WRITERS: dict[str, OutputWriter] = {}


def register_output(writer: OutputWriter) -> OutputWriter:
    """Add ``writer``; its name and aliases must be new. Returns it."""
    known = {alias for w in OUTPUT_WRITERS.values() for alias in (w.name, *w.aliases)}
    clash = {writer.name, *writer.aliases} & known
    if clash:
        raise ValueError(f"output name(s) {', '.join(sorted(clash))} already registered")
    OUTPUT_WRITERS[writer.name] = writer
    return writer


def unregister_output(name: str) -> None:
    OUTPUT_WRITERS.pop(name, None)


register_output(OutputWriter("sr", "TID 1500 SR with the evidence region", "monai_fracture.reports.sr:write"))
register_output(OutputWriter("kos", "key images", "monai_fracture.reports.ko:write", aliases=("ko",)))
register_output(OutputWriter("pr", "GSPS overlay per positive image", "monai_fracture.reports.pr:write",
                             aliases=("gsps",)))
register_output(OutputWriter("sc", "heatmap Secondary Capture", "monai_fracture.reports.sc:write",
                             aliases=("heatmap", "heatmaps"), default=False))

#: The families the package itself writes, and what it writes without ``--outputs``.
OUTPUTS = tuple(OUTPUT_WRITERS)
DEFAULT_OUTPUTS = tuple(name for name, w in OUTPUT_WRITERS.items() if w.default)


def default_outputs() -> tuple[str, ...]:
    return tuple(name for name, w in OUTPUT_WRITERS.items() if w.default)


def parse_outputs(value: str | Iterable[str] | None, heatmaps: bool = False) -> tuple[str, ...]:
    """``"sr,kos,pr,sc"`` (or a list) -> the families in registry order; ``None`` -> the defaults.

    Aliases (``ko``, ``gsps``, ``heatmaps``) are accepted; ``heatmaps`` (the ``--heatmaps`` flag)
    adds ``sc``. Unknown names raise ``ValueError`` naming them and the known ones.
    """
    aliases = {alias: w.name for w in OUTPUT_WRITERS.values() for alias in w.aliases}
    if value is None:
        chosen = set(default_outputs())
    else:
        parts = value.split(",") if isinstance(value, str) else list(value)
        names = [aliases.get(p.strip().lower(), p.strip().lower()) for p in parts if p.strip()]
        unknown = sorted(set(names) - set(OUTPUT_WRITERS))
        if unknown:
            raise ValueError(f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(OUTPUT_WRITERS)}")
        chosen = set(names)
    if heatmaps:
        chosen.add("sc")
    return tuple(name for name in OUTPUT_WRITERS if name in chosen)


def outputs_help() -> str:
    """``--outputs`` help: every registered writer with its line, and the default list."""
    listed = ", ".join(f"{w.name} ({w.help})" for w in OUTPUT_WRITERS.values())
    return f"DICOM objects to write, comma-separated from {listed} (default: {','.join(default_outputs())})"
