"""The one folder walk: which files under a folder are inputs (scoring, datalists, DICOM series).

Imports nothing from the package, so every layer (io included) may use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence


def is_hidden(name: str) -> bool:
    """Names starting with "." are tool and OS artefacts (.DS_Store, swap files, our ``.*.tmp``)."""
    return name.startswith(".")


def walk_files(inputs: str | os.PathLike | Iterable[str | os.PathLike], exclude: Sequence[str | os.PathLike] = (),
               list_unreadable: bool = True) -> list[str]:
    """All files under ``inputs`` (recursively), absolute, sorted, each once.

    Hidden files and folders inside a walked folder are not listed; a hidden file named explicitly
    as an input is. Folders in ``exclude`` (the output folder, when it lies inside an input) are not
    entered. Symlinked folders are not followed. A folder that cannot be listed is itself listed
    when ``list_unreadable`` (so the caller can report it instead of letting it vanish), else skipped.
    A named path that is not a folder is listed as it is, existing or not.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    excluded = {os.path.abspath(p) for p in exclude}
    found: set[str] = set()

    def unreadable(err: OSError) -> None:
        if list_unreadable and err.filename:
            found.add(os.path.abspath(err.filename))

    for item in items:
        path = os.path.abspath(os.fspath(item))
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path, onerror=unreadable):
                dirs[:] = sorted(d for d in dirs if not is_hidden(d) and os.path.join(root, d) not in excluded)
                found.update(os.path.join(root, name) for name in files if not is_hidden(name))
        else:
            found.add(path)
    return sorted(found)


__all__ = ["is_hidden", "walk_files"]
