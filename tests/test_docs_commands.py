"""Every command block in README.md and docs/*.md runs here, or says (with a marker) why it cannot.

So the docs cannot drift from the code: a renamed option, a wrong path or a changed default
breaks this test. The markers are described in tests/helpers/docblocks.py and docs/contributing.md.
Blocks of one page run in order in one scratch folder (a later block may use what an earlier
one wrote), with `bundles/` and `.venv` linked from this checkout and this checkout's package
first on PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers.docblocks import Block, MarkerError, documentation_files, parse_blocks
from helpers.needs import missing

REPO_ROOT = Path(__file__).resolve().parents[1]
BLOCK_TIMEOUT_S = 600
DOCS = documentation_files(REPO_ROOT)
# pages whose every block is marked skip (each with its reason) have nothing to run
RUNNABLE_DOCS = [doc for doc in DOCS if any(block.skip is None for block in parse_blocks(doc))]


def _all_blocks() -> list[Block]:
    return [block for doc in DOCS for block in parse_blocks(doc)]


@pytest.fixture(scope="module")
def shared_studies(tmp_path_factory) -> Path:
    """A small synthetic study set every page may use as ``{data}`` (generated once)."""
    from monai_fracture.data.synthetic import generate_demo_dataset

    out = tmp_path_factory.mktemp("docs_data") / "studies"
    generate_demo_dataset(out, n=6, seed=0)
    return out


class _StorageSCP:
    """pynetdicom storage SCP on 127.0.0.1 accepting every storage SOP class; counts what arrives."""

    def __init__(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.received: list[str] = []
        self.lock = threading.Lock()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts

        def on_store(event) -> int:
            with self.lock:
                self.received.append(str(event.request.AffectedSOPClassUID))
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("MONAI_FRACTURE_PROGRESS_S", "30")
    return env


def _scratch(tmp_path_factory, doc: Path) -> Path:
    folder = tmp_path_factory.mktemp(f"docs_{doc.stem}")
    for name in ("bundles", ".venv"):
        if (REPO_ROOT / name).exists():
            (folder / name).symlink_to(REPO_ROOT / name)
    return folder


def test_markers_are_well_formed() -> None:
    """A marker with no reason, an unknown verb or one not above a command block fails here."""
    blocks = _all_blocks()
    assert blocks, "no command blocks found in README.md and docs/*.md"
    for block in blocks:
        block.script()  # every sub finds its text
        unknown = [p for _, new in block.subs for p in _placeholders(new) if p not in ("{data}", "{dx}", "{scp_port}")]
        assert not unknown, f"{block.id}: unknown placeholder {unknown}"


def _placeholders(text: str) -> list[str]:
    import re

    return re.findall(r"\{\w+\}", text)


def test_markers_reject_what_they_cannot_follow(tmp_path: Path) -> None:
    cases = {
        "<!-- docs-test: skip -->\n```bash\nls\n```\n": "needs a reason",
        "<!-- docs-test: maybe -->\n```bash\nls\n```\n": "unknown docs-test marker",
        "<!-- docs-test: skip slow -->\nsome text\n```bash\nls\n```\n": "not directly above",
        "<!-- docs-test: skip slow -->\n```json\n{}\n```\n": "not run",
    }
    for text, message in cases.items():
        page = tmp_path / "page.md"
        page.write_text(text)
        with pytest.raises(MarkerError, match=message):
            parse_blocks(page)
    page.write_text("<!-- docs-test: sub --n 200 => --n 2 -->\n```console\n$ echo a \\\n  --n 200\nout\n$ true\n```\n")
    (block,) = parse_blocks(page)
    assert block.script() == "echo a \\\n  --n 2\ntrue\n"


@pytest.mark.slow
@pytest.mark.parametrize("doc", RUNNABLE_DOCS, ids=lambda p: p.name)
def test_documented_commands_run(doc: Path, shared_studies: Path, tmp_path_factory) -> None:
    runnable = [b for b in parse_blocks(doc) if b.skip is None]
    folder = _scratch(tmp_path_factory, doc)
    dx = next(p for p in sorted(shared_studies.rglob("image_*")) if p.is_file())
    skipped: list[str] = []
    for block in runnable:
        absent = [tool for tool in block.needs if shutil.which(tool) is None]
        if absent:
            skipped.append(f"{block.id} needs {', '.join(absent)}")
            continue
        scp = _StorageSCP() if block.uses("{scp_port}") else None
        try:
            script = block.script().replace("{data}", str(shared_studies)).replace("{dx}", str(dx))
            if scp is not None:
                script = script.replace("{scp_port}", str(scp.port))
            command = [sys.executable, "-c", script] if block.is_python else ["bash", "-e", "-c", script]
            result = subprocess.run(command, cwd=folder, env=_environment(), capture_output=True, text=True,
                                    timeout=BLOCK_TIMEOUT_S)
        finally:
            if scp is not None:
                scp.close()
        assert result.returncode == 0, (
            f"{block.id} ({block.language}) exited {result.returncode}\n--- script ---\n{script}\n"
            f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
        )
        if scp is not None:
            assert scp.received, f"{block.id}: the storage SCP received nothing"
    if skipped:
        missing("; ".join(skipped))
