"""One cache folder for backend choices, pixel hashes and demo sets; the old name is migrated once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_fracture.cache import cache_dir


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("MONAI_FRACTURE_CACHE", raising=False)
    return tmp_path


def test_xdg_rule_and_override(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir() == home / ".cache" / "monai-fracture"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    assert cache_dir() == home / "xdg" / "monai-fracture"
    monkeypatch.setenv("MONAI_FRACTURE_CACHE", str(home / "mine"))
    assert cache_dir() == home / "mine"


def test_legacy_folder_is_moved_once_and_never_over_a_new_one(home: Path) -> None:
    legacy = home / ".cache" / "monai_fracture"
    (legacy / "demo_xr_seed0").mkdir(parents=True)
    (legacy / "hashes.json").write_text("{}")
    folder = cache_dir()
    assert not legacy.exists() and (folder / "hashes.json").read_text() == "{}" and (folder / "demo_xr_seed0").is_dir()
    legacy.mkdir()  # a second legacy folder appearing later is left alone: the new one exists
    assert cache_dir() == folder and legacy.is_dir()


def test_hash_cache_and_backend_cache_share_the_folder(home: Path, tmp_path: Path) -> None:
    """They used to disagree (~/.cache/monai_fracture vs ~/.cache/monai-fracture)."""
    from monai_fracture.data import check_datalist
    from monai_fracture.model import backend_cache as backends

    images = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8), i * 50, dtype=np.uint8)).save(path)
        images.append(str(path))
    check_datalist({"training": [{"image": images[0], "label": 0}], "validation": [{"image": images[1], "label": 1}]})
    assert (home / ".cache" / "monai-fracture" / "hashes.json").is_file()  # before cache_dir() could migrate
    assert backends.cache_dir() == cache_dir()
