"""Command blocks in README.md and docs/*.md, and the markers that say how the docs test runs them.

A *command block* is a fenced block whose language is bash, sh, shell, console, python or py
(json, yaml and unlabelled fences are listings, not commands). Every command block either runs
here (tests/test_docs_commands.py runs it and it must exit 0) or says why it cannot, with HTML
comments on the lines directly above its opening fence (invisible on GitHub, visible in the
source). See docs/contributing.md for examples.

    <!-- docs-test: skip REASON -->          not run here; the reason is required
    <!-- docs-test: needs TOOL [TOOL...] --> run only where these programs are on PATH (else skipped)
    <!-- docs-test: sub OLD => NEW -->       replace text before running (e.g. a smaller --n);
                                             NEW may use {data} (a shared small demo study set),
                                             {dx} (one radiograph in it) and {scp_port} (a DICOM
                                             storage SCP on 127.0.0.1 that accepts every storage class)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

COMMAND_LANGUAGES = {"bash", "sh", "shell", "console", "python", "py"}
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<verb>\w+)\s*(?P<rest>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
PLACEHOLDERS = ("{data}", "{dx}", "{scp_port}")


class MarkerError(ValueError):
    """A docs-test marker that cannot be followed; the message names the file and line."""


@dataclass
class Block:
    """One command block and what its markers ask for."""

    doc: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    skip: str | None = None
    needs: list[str] = field(default_factory=list)
    subs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.language in {"python", "py"}

    def script(self) -> str:
        """The code to run: substitutions applied; for console blocks only the ``$`` lines."""
        text = self.text
        for old, new in self.subs:
            if old not in text:
                raise MarkerError(f"{self.id}: sub {old!r}: text not found in the block")
            text = text.replace(old, new)
        if self.language != "console":
            return text
        commands: list[str] = []
        continuing = False
        for raw in text.splitlines():
            if raw.startswith("$ "):
                commands.append(raw[2:])
                continuing = raw.rstrip().endswith("\\")
            elif continuing:
                commands.append(raw)
                continuing = raw.rstrip().endswith("\\")
        return "\n".join(commands) + "\n"

    def uses(self, placeholder: str) -> bool:
        return any(placeholder in new for _, new in self.subs)


def _apply_marker(block: Block, verb: str, rest: str, where: str) -> None:
    if verb == "skip":
        if not rest:
            raise MarkerError(f"{where}: 'docs-test: skip' needs a reason")
        block.skip = rest
    elif verb == "needs":
        if not rest:
            raise MarkerError(f"{where}: 'docs-test: needs' names no program")
        block.needs.extend(rest.split())
    elif verb == "sub":
        if "=>" not in rest:
            raise MarkerError(f"{where}: 'docs-test: sub' is written 'sub OLD => NEW'")
        old, new = (part.strip() for part in rest.split("=>", 1))
        if not old:
            raise MarkerError(f"{where}: 'docs-test: sub' has nothing to replace")
        block.subs.append((old, new))
    else:
        raise MarkerError(f"{where}: unknown docs-test marker {verb!r} (skip, needs, sub)")


def parse_blocks(doc: Path) -> list[Block]:
    """Every command block of one Markdown file with its markers; stray markers are errors."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[tuple[int, str, str]] = []  # markers waiting for the fence below them
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            pending.append((i + 1, marker["verb"], marker["rest"]))
            i += 1
            continue
        if fence:
            closing = fence["fence"]
            body: list[str] = []
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(closing):
                body.append(lines[j][len(fence["indent"]):] if lines[j].startswith(fence["indent"]) else lines[j])
                j += 1
            language = fence["lang"].lower()
            if language in COMMAND_LANGUAGES:
                block = Block(doc, i + 1, language, "\n".join(body) + "\n")
                for number, verb, rest in pending:
                    _apply_marker(block, verb, rest, f"{doc}:{number}")
                blocks.append(block)
            elif pending:
                raise MarkerError(f"{doc}:{pending[0][0]}: docs-test marker above a {language or 'plain'} block, "
                                  "which is not run (markers go above bash/console/python blocks)")
            pending = []
            i = j + 1
            continue
        if pending and line.strip():
            raise MarkerError(f"{doc}:{pending[0][0]}: docs-test marker not directly above a fenced block")
        i += 1
    if pending:
        raise MarkerError(f"{doc}:{pending[0][0]}: docs-test marker at the end of the file")
    return blocks


def documentation_files(repo_root: Path) -> list[Path]:
    """README.md and docs/*.md (the pages users read)."""
    return [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]
