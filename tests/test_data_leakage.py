"""The leakage checker on files made here: every pair of parts, a stale hash cache, re-encoded copies."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_fracture.data.leakage import (
    decode_pixels,
    HashCache,
    LeakageError,
    check_no_leakage,
    duplicate_files,
    file_sha256,
    find_leaks,
    pixel_sha256,
)

pytestmark = pytest.mark.timeout(60)


def png(path: Path, seed: int, *, compress_level: int = 6, shape: tuple[int, int] = (24, 32)) -> Path:
    """A random 8-bit greyscale PNG: the same seed gives the same pixels whatever the compression."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path, compress_level=compress_level)
    return path


def lines_about(conflicts: list[str], kind: str) -> list[str]:
    return [c for c in conflicts if c.startswith(kind)]


def test_a_file_overwritten_by_a_training_copy_is_caught_with_the_same_cache(tmp_path: Path) -> None:
    """The cache must notice a changed file even when its size stays the same (here: equal-size PNGs)."""
    train = png(tmp_path / "train.png", seed=1, compress_level=0)
    val = png(tmp_path / "val.png", seed=2, compress_level=0)
    assert train.stat().st_size == val.stat().st_size  # uncompressed: only the pixels differ
    datalist = {"training": [{"image": str(train)}], "validation": [{"image": str(val)}]}
    cache_file = tmp_path / "cache" / "hashes.json"
    check_no_leakage(datalist, cache=HashCache(cache_file))
    assert cache_file.is_file()
    stale = json.loads(cache_file.read_text())[str(val.resolve())]
    shutil.copyfile(train, val)
    later = val.stat().st_mtime_ns + 2_000_000_000  # a coarse-clock file system may keep the old mtime
    os.utime(val, ns=(later, later))
    with pytest.raises(LeakageError) as raised:
        check_no_leakage(datalist, cache=HashCache(cache_file))
    assert len(lines_about(raised.value.conflicts, "identical bytes")) == 1
    assert len(lines_about(raised.value.conflicts, "identical pixels")) == 1
    fresh = json.loads(cache_file.read_text())[str(val.resolve())]
    assert fresh["bytes"] == file_sha256(train) != stale["bytes"]


def test_the_cache_notices_a_size_change_with_the_mtime_kept(tmp_path: Path) -> None:
    train = png(tmp_path / "train.png", seed=1)
    val = png(tmp_path / "val.png", seed=2, shape=(40, 40))
    stamp = val.stat().st_mtime_ns
    cache = HashCache(tmp_path / "hashes.json")
    assert not find_leaks({"training": [str(train)], "validation": [str(val)]}, cache=cache)
    shutil.copyfile(train, val)
    os.utime(val, ns=(stamp, stamp))  # same mtime, other size
    assert len(find_leaks({"training": [str(train)], "validation": [str(val)]}, cache=cache)) == 2


def test_the_cache_reuses_hashes_of_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    a, b = png(tmp_path / "a.png", seed=1), png(tmp_path / "b.png", seed=2)
    cache_file = tmp_path / "hashes.json"
    assert not find_leaks({"training": [str(a)], "validation": [str(b)]}, cache=HashCache(cache_file))
    entries = json.loads(cache_file.read_text())
    assert entries[str(a.resolve())]["bytes"] == file_sha256(a)
    assert entries[str(a.resolve())]["pixels"] == pixel_sha256(a)

    def must_not_hash(path: Path) -> str:
        raise AssertionError(f"{path} hashed again although unchanged")

    monkeypatch.setattr("monai_fracture.data.leakage.file_sha256", must_not_hash)
    monkeypatch.setattr("monai_fracture.data.leakage.pixel_sha256", must_not_hash)
    stamp = cache_file.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        assert not find_leaks({"training": [str(a)], "validation": [str(b)]}, cache=HashCache(cache_file))
    assert caplog.messages == []  # nothing re-hashed (a failing re-hash would be logged and cached as None)
    assert json.loads(cache_file.read_text()) == entries and cache_file.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "left, right",
    [("training", "validation"), ("training", "test"), ("validation", "test")],
)
def test_every_pair_of_parts_is_checked(tmp_path: Path, left: str, right: str) -> None:
    """A leak between validation and test biases the threshold choice as much as one into training."""
    parts = {"training": [], "validation": [], "test": []}
    for i, part in enumerate(parts):
        parts[part].append({"image": str(png(tmp_path / f"{part}.png", seed=10 + i)), "group": f"g{i}"})
    assert find_leaks(parts) == []
    copy = tmp_path / f"{right}_copy.png"
    shutil.copyfile(parts[left][0]["image"], copy)
    parts[right].append({"image": str(copy), "group": parts[left][0]["group"]})
    conflicts = find_leaks(parts)
    assert [c.split(" in ")[0] for c in conflicts] == ["group g" + str(list(parts).index(left)),
                                                      "identical bytes " + file_sha256(copy)[:16],
                                                      "identical pixels " + pixel_sha256(copy)[:16]]
    assert all(f"in {sorted([left, right])}" in c for c in conflicts)
    with pytest.raises(LeakageError, match="3 conflicts"):
        check_no_leakage(parts)


def test_a_reencoded_copy_is_caught_by_pixels_only(tmp_path: Path) -> None:
    train = png(tmp_path / "train.png", seed=3, compress_level=9)
    test = png(tmp_path / "test.png", seed=3, compress_level=0)
    assert file_sha256(train) != file_sha256(test)
    conflicts = find_leaks({"training": [str(train)], "test": [str(test)]})
    assert len(conflicts) == 1 and conflicts[0].startswith("identical pixels") and "['test', 'training']" in conflicts[0]
    assert find_leaks({"training": [str(train)], "test": [str(test)]}, check_pixels=False) == []


def test_same_pixels_in_another_shape_are_not_a_copy(tmp_path: Path) -> None:
    """The pixel hash covers the shape: a 24x32 image is not its own 32x24 reshape."""
    pixels = np.random.default_rng(5).integers(0, 256, (24, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels.reshape(32, 24)).save(tmp_path / "b.png")
    assert find_leaks({"training": [str(tmp_path / "a.png")], "validation": [str(tmp_path / "b.png")]}) == []


def test_duplicates_within_one_part_are_not_leaks(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png", seed=1)
    shutil.copyfile(a, tmp_path / "a_copy.png")
    datalist = {"training": [{"image": str(a), "group": "p1"}, {"image": str(tmp_path / "a_copy.png"), "group": "p1"}]}
    assert find_leaks(datalist) == []
    assert duplicate_files([str(a), str(tmp_path / "a_copy.png"), str(png(tmp_path / "b.png", seed=2))]) == {
        file_sha256(a): [str(a), str(tmp_path / "a_copy.png")]
    }


def test_series_items_hash_their_files_together(tmp_path: Path) -> None:
    """A CT series (a folder or a list of slices) leaks when the same slices are on both sides."""
    series = tmp_path / "series"
    series.mkdir()
    slices = [png(series / f"{i}.png", seed=20 + i) for i in range(3)]
    datalist = {"training": [str(series)], "validation": [[str(p) for p in slices]]}
    assert len(find_leaks(datalist)) == 2
    one_slice_less = {"training": [str(series)], "validation": [[str(p) for p in slices[:2]]]}
    assert find_leaks(one_slice_less) == []


def test_groups_only_and_switches(tmp_path: Path) -> None:
    a, b = png(tmp_path / "a.png", seed=1), png(tmp_path / "b.png", seed=2)
    datalist = {"training": [{"image": str(a), "group": 7}], "validation": [{"image": str(b), "group": 7}]}
    conflicts = find_leaks(datalist)
    assert conflicts == ["group 7 in ['training', 'validation']: training:a.png, validation:b.png"]
    assert find_leaks(datalist, check_groups=False) == []
    shutil.copyfile(a, b)
    assert len(find_leaks(datalist, check_groups=False, check_pixels=False)) == 1
    assert len(find_leaks(datalist, check_groups=False, check_bytes=False)) == 1


def test_an_undecodable_file_still_gets_a_byte_check(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"not an image at all" * 10)
    shutil.copyfile(blob, tmp_path / "blob_copy.bin")
    conflicts = find_leaks({"training": [str(blob)], "validation": [str(tmp_path / "blob_copy.bin")]})
    assert len(conflicts) == 1 and conflicts[0].startswith("identical bytes")
    assert [m for m in caplog.messages if "pixel check" in m] == [
        f"{blob}: cannot decode for the pixel check: cannot identify image file '{blob}'",
        f"{tmp_path / 'blob_copy.bin'}: cannot decode for the pixel check: cannot identify image file "
        f"'{tmp_path / 'blob_copy.bin'}'",
    ]


def test_an_unreadable_cache_file_is_ignored_and_rewritten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache_file = tmp_path / "hashes.json"
    cache_file.write_text("{ not json")
    a = png(tmp_path / "a.png", seed=1)
    cache = HashCache(cache_file)
    assert caplog.messages == [f"{cache_file}: ignoring unreadable hash cache: Expecting property name enclosed "
                               "in double quotes: line 1 column 3 (char 2)"]
    assert cache.bytes_hash(a) == file_sha256(a)
    cache.save()
    assert json.loads(cache_file.read_text())[str(a.resolve())]["bytes"] == file_sha256(a)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_many_conflicts_are_summarised(tmp_path: Path) -> None:
    train = [{"image": str(png(tmp_path / f"t{i}.png", seed=i)), "group": f"g{i}"} for i in range(22)]
    val = [{"image": str(png(tmp_path / f"v{i}.png", seed=100 + i)), "group": f"g{i}"} for i in range(22)]
    with pytest.raises(LeakageError) as raised:
        check_no_leakage({"training": train, "validation": val}, check_bytes=False, check_pixels=False)
    message = str(raised.value)
    assert message.startswith("refusing a leaky split (22 conflicts):")
    assert message.count("\n  group ") == 20 and message.endswith("... and 2 more")
    assert len(raised.value.conflicts) == 22


def test_pixel_hashes_are_of_what_the_reader_decodes(tmp_path: Path) -> None:
    """Pixels as monai_fracture.io decodes them (LUTs applied) where it can, else Pillow's: pinned, so
    a cache written by one version means the same in the next."""
    from monai_fracture.io import read_image

    def reference(array: np.ndarray) -> str:
        array = np.ascontiguousarray(array, dtype=np.float32)
        return hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()

    a = png(tmp_path / "a.png", seed=4)
    assert pixel_sha256(a) == reference(read_image(str(a))[0])
    pixels = np.asarray(Image.open(a))
    Image.fromarray(pixels).save(tmp_path / "a.bmp")  # our reader refuses BMP: Pillow decodes it
    np.testing.assert_array_equal(decode_pixels(tmp_path / "a.bmp"), pixels.astype(np.float32))
    assert decode_pixels(tmp_path / "a.bmp").dtype == np.float32
    assert pixel_sha256(tmp_path / "a.bmp") == reference(pixels)


def test_a_small_leak_is_reported_in_full(tmp_path: Path) -> None:
    """Up to 20 conflicts are listed with no "more" line; each lists at most three files."""
    a = png(tmp_path / "a.png", seed=1)
    copies = [str(a)]
    for i in range(4):
        shutil.copyfile(a, tmp_path / f"c{i}.png")
        copies.append(str(tmp_path / f"c{i}.png"))
    with pytest.raises(LeakageError) as raised:
        check_no_leakage({"training": copies[:4], "test": copies[4:]}, check_pixels=False)
    digest = file_sha256(a)[:16]
    assert str(raised.value) == (f"refusing a leaky split (1 conflicts):\n  identical bytes {digest} in "
                                 f"['test', 'training']: training:{copies[0]}, training:{copies[1]}, "
                                 f"training:{copies[2]}")


def test_only_non_empty_lists_are_parts(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png", seed=1)
    datalist = {"numTraining": 1, "description": "x", "training": [str(a)], "validation": [], "test": [str(a)]}
    assert len(find_leaks(datalist)) == 2


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = png(tmp_path / "a.png", seed=1), png(tmp_path / "b.png", seed=2)
    find_leaks({"training": [str(a)], "validation": [str(b)]})
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    find_leaks({"training": [str(a)], "validation": [str(b)]}, progress=True)
    err = capsys.readouterr().err
    assert "leakage check: 100%" in err and "2/2" in err
    find_leaks({"training": [str(a)], "validation": [str(b)]}, progress=False)
    assert capsys.readouterr().err == ""


def test_the_cache_folder_is_made_and_no_temporary_file_stays(tmp_path: Path) -> None:
    cache_file = tmp_path / "deep" / "er" / "hashes.json"
    HashCache(cache_file).save()
    assert not cache_file.exists()  # nothing hashed, nothing written
    a = png(tmp_path / "a.png", seed=1)
    assert find_leaks({"training": [str(a)]}, cache=HashCache(cache_file)) == []
    assert set(json.loads(cache_file.read_text())) == {str(a.resolve())}
    assert [p.name for p in cache_file.parent.iterdir()] == ["hashes.json"]


def test_exactly_twenty_conflicts_are_all_listed(tmp_path: Path) -> None:
    train = [{"image": str(tmp_path / "t.png"), "group": f"g{i}"} for i in range(20)]
    val = [{"image": str(tmp_path / "v.png"), "group": f"g{i}"} for i in range(20)]
    with pytest.raises(LeakageError) as raised:
        check_no_leakage({"training": train, "validation": val}, check_bytes=False, check_pixels=False)
    assert str(raised.value).count("\n  group ") == 20 and "more" not in str(raised.value)
