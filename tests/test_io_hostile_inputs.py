"""Hostile inputs (issue 13): decompression bombs under a memory limit, stream-header fuzzing,
FIFOs, unreadable folders, unusable content, and a scoring run that survives all of them.

Bombs are generated (tests/helpers/hostile.py, about 1 KB each); every read runs in a child process
under ``RLIMIT_AS`` so a regression fails the test instead of taking the machine down.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import hostile
from monai_fracture.io import ImageReadError, read_image
from monai_fracture.io.content import check_usable_content
from monai_fracture.io.pixel_limits import BUDGET_ENVIRONMENT, check_rle_header, j2k_geometry, jpeg_geometry

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1 << 30  # 1 GiB of address space: the reader needs ~200 MB, every bomb asks for 4 GB or more

READ_UNDER_LIMIT = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from monai_fracture.io import ImageReadError, read_image
out = {}
for path in sys.argv[2:]:
    try:
        image, _ = read_image(path)
        out[path] = ["decoded", list(image.shape)]
    except ImageReadError as err:
        out[path] = [err.reason.value, err.detail]
    except MemoryError:
        out[path] = ["MemoryError", ""]
print(json.dumps(out))
"""


def _read_in_child(paths: list[Path], limit: int = LIMIT, timeout: float = 120) -> dict[str, list]:
    proc = subprocess.run(
        [sys.executable, "-c", READ_UNDER_LIMIT, str(limit), *map(str, paths)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_stream_bombs_are_refused_before_decoding_and_valid_streams_still_decode(tmp_path):
    bombs = {name: hostile.write_stream_bomb(tmp_path, name) for name in hostile.STREAM_BOMBS}
    goods = {name: hostile.write_stream_good(tmp_path, name) for name in hostile.STREAM_BOMBS}
    assert all(p.stat().st_size < 4096 for p in bombs.values())
    outcome = _read_in_child([*bombs.values(), *goods.values()])
    for name, path in bombs.items():
        reason, detail = outcome[str(path)]
        assert reason in ("unsupported_geometry", "invalid_value"), (name, reason, detail)
    for name in ("jpeg_65535", "jpegls_65535", "j2k_60000", "htj2k_60000"):
        assert "65535 x 65535" in outcome[str(bombs[name])][1] or "60000 x 60000" in outcome[str(bombs[name])][1]
    for name, path in goods.items():
        assert outcome[str(path)] == ["decoded", [hostile.ROWS, hostile.COLUMNS]], name


def test_deflate_bomb_is_measured_in_bounded_chunks(tmp_path):
    bomb = hostile.write_deflate_bomb(tmp_path / "deflate.dcm", 1 << 30)  # 1 GiB inflated, 1 MB on disk
    small = hostile.write_deflate_bomb(tmp_path / "small.dcm", 1 << 20)
    assert bomb.stat().st_size < 2 << 20
    outcome = _read_in_child([bomb, small])
    assert outcome[str(bomb)][0] == "over_memory_budget" and "inflates past" in outcome[str(bomb)][1]
    # under the limit the file is parsed as usual (its excess pixel data is refused for its own reason)
    assert "inflates past" not in outcome[str(small)][1]


# ------------------------------------------------------------------ the per-image memory budget
def _read_with_budget(monkeypatch, path, budget_bytes: int) -> str:
    monkeypatch.setenv(BUDGET_ENVIRONMENT, repr(budget_bytes / (1 << 20)))
    try:
        image, _ = read_image(path)
        return "decoded"
    except ImageReadError as err:
        assert err.path in (str(path), str(path[0]) if isinstance(path, list) else str(path)), err
        return f"{err.reason.value}: {err.detail}"


def test_a_file_just_over_the_memory_budget_is_refused_and_one_just_under_is_decoded(tmp_path, monkeypatch):
    # 16-bit: the pixel data read (2 bytes), the decoder's output (2) and our float32 copy (4) per value
    path = hostile.write_native(tmp_path / "dx.dcm", 256, 512)
    assert _read_with_budget(monkeypatch, path, 256 * 512 * 8) == "decoded"
    outcome = _read_with_budget(monkeypatch, path, 256 * 512 * 8 - 1)
    assert outcome.startswith("over_memory_budget:") and "1.0 MiB to decode" in outcome and "--max-image-mib" in outcome
    # a multi-frame radiograph decodes its first frame, but holds all frames' pixel data
    multi = hostile.write_native(tmp_path / "multi.dcm", 64, 64, frames=8)
    cost = 8 * 64 * 64 * 2 + 64 * 64 * 6
    assert _read_with_budget(monkeypatch, multi, cost) == "decoded"
    assert _read_with_budget(monkeypatch, multi, cost - 1).startswith("over_memory_budget:")
    # a file larger than the budget is refused before pydicom reads it
    assert _read_with_budget(monkeypatch, multi, multi.stat().st_size - 1).startswith("over_memory_budget: the file needs")


def test_a_series_volume_is_held_to_the_budget_as_a_whole(tmp_path, monkeypatch):
    folder = tmp_path / "ct"
    folder.mkdir()
    slices = [hostile.write_native(folder / f"{k}.dcm", 64, 64, modality="CT", z=float(k)) for k in range(6)]
    held = sum(p.stat().st_size for p in slices)
    cost = held + 6 * 64 * 64 * 4 + 64 * 64 * 6  # the files, the float32 volume, one slice being decoded
    assert _read_with_budget(monkeypatch, folder, cost) == "decoded"
    outcome = _read_with_budget(monkeypatch, folder, cost - 1)
    assert outcome.startswith("over_memory_budget:") and "a volume of 6 x 64 x 64" in outcome
    assert _read_with_budget(monkeypatch, folder, held - 1).startswith("over_memory_budget: a series of 6 files")


def test_a_deflated_file_inflating_past_half_the_budget_is_refused(tmp_path, monkeypatch):
    # pydicom holds the inflated body and a copy of each element: 2 bytes per inflated byte
    path = hostile.write_deflate_bomb(tmp_path / "deflate.dcm", 3 << 20)
    outcome = _read_with_budget(monkeypatch, path, 4 << 20)
    assert outcome.startswith("over_memory_budget:") and "inflates past 2 MiB" in outcome
    assert "inflates past" not in _read_with_budget(monkeypatch, path, 8 << 20)


@pytest.mark.parametrize("name", ["jpeg_65535", "jpegls_65535", "j2k_60000", "rle_15_segments"])
def test_a_compressed_file_is_held_to_the_budget(tmp_path, monkeypatch, name):
    path = hostile.write_stream_good(tmp_path, name)  # the valid 16 x 16 8-bit file: 256 values
    size = len(pydicom.dcmread(path).PixelData)  # the encapsulated stream, held while it is decoded
    assert _read_with_budget(monkeypatch, path, size + 256 * 5) == "decoded"
    assert _read_with_budget(monkeypatch, path, size + 256 * 5 - 1).startswith("over_memory_budget:")


# ------------------------------------------------------------------ stream headers, fuzzed
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=64), st.sampled_from([b"\xff\xc0", b"\xff\xc3", b"\xff\xf7", b"\xff\xda", b"\xff\xe0"]),
       st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255))
def test_jpeg_header_parser_never_crashes(prefix, marker, rows, columns, components, precision):
    frame = b"\xff\xd8" + prefix + marker + struct.pack(">HBHHB", 11, precision, rows, columns, components) + b"\x00" * 6
    try:
        geometry = jpeg_geometry(frame)
    except ImageReadError:
        return
    if not prefix and marker in (b"\xff\xc0", b"\xff\xc3", b"\xff\xf7"):
        assert (geometry.rows, geometry.columns, geometry.components, geometry.precision) == (rows, columns, components, precision)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 5), st.binary(max_size=24))
def test_j2k_header_parser_never_crashes(xsiz, ysiz, xosiz, yosiz, csiz, tail):
    siz = struct.pack(">HHIIIIIIIIH", 38 + 3 * csiz, 0, xsiz, ysiz, xosiz, yosiz, 64, 64, 0, 0, csiz) + tail
    try:
        geometry = j2k_geometry(b"\xff\x4f\xff\x51" + siz)
    except ImageReadError:
        return
    assert geometry.rows == ysiz - yosiz > 0 and geometry.columns == xsiz - xosiz > 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(min_size=0, max_size=128), st.integers(1, 15))
def test_rle_header_check_never_crashes(data, segments):
    try:
        check_rle_header(data, segments)
    except ImageReadError:
        return
    count, first = struct.unpack("<II", data[:8])
    assert count == segments and first == 64


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(hostile.STREAM_BOMBS)), st.integers(1, 70000), st.integers(1, 70000))
def test_any_stream_size_other_than_the_header_is_refused(tmp_path, name, rows, columns):
    syntax, build, _ = hostile.STREAM_BOMBS[name]
    frame = build()
    if name.startswith("jpeg"):
        marker = b"\xff\xf7" if "ls" in name else b"\xff\xc0"
        frame = hostile.with_jpeg_size(frame, min(rows, 65535), min(columns, 65535), marker)
        rows, columns = min(rows, 65535), min(columns, 65535)
    elif "j2k" in name:
        frame = hostile.with_j2k_size(frame, rows, columns)
    else:
        frame = hostile.with_rle_segments(frame, rows % 16)
    path = hostile._save_encapsulated(tmp_path / f"{name}.dcm", syntax, frame)
    try:
        image, _ = read_image(path)
    except ImageReadError:
        return
    assert image.shape == (hostile.ROWS, hostile.COLUMNS)
    assert name.startswith("rle") or (rows, columns) == (hostile.ROWS, hostile.COLUMNS)


# ------------------------------------------------------------------ content
@pytest.mark.parametrize("values, words", [
    (np.full((64, 64), np.nan, np.float32), "not finite"),
    (np.where(np.eye(64) > 0, np.inf, 1.0).astype(np.float32), "not finite"),
    (np.zeros((9000, 900), np.float32), "constant"),
    (np.pad(np.ones((4, 4), np.float32), 60), "nearly constant"),
])
def test_unusable_content_is_refused(values, words):
    with pytest.raises(ImageReadError, match=words) as info:
        check_usable_content(values, "x.dcm")
    assert info.value.reason.value == "no_content"


def test_real_radiograph_content_is_usable(dicom_corpus):
    for path in sorted(dicom_corpus.rglob("*.dcm"))[:5]:
        try:
            image, _ = read_image(path)
        except ImageReadError:
            continue
        if image.ndim == 2 and image.size > 4096:
            check_usable_content(image, path)


# ------------------------------------------------------------------ files that are not files
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    link = tmp_path / "link.dcm"
    link.symlink_to(fifo)
    code = (
        "import sys; from monai_fracture.io import read_image, ImageReadError\n"
        "for p in sys.argv[1:]:\n"
        "    try: read_image(p)\n"
        "    except ImageReadError as e: print(e.reason.value)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(fifo), str(link)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.split() == ["not_regular_file", "not_regular_file"], proc.stderr[-2000:]


def test_dicm_magic_followed_by_noise_fails_instead_of_being_skipped(tmp_path):
    from monai_fracture.scoring.catalog import scan_file

    noise = tmp_path / "noise"
    noise.write_bytes(bytes(128) + b"DICM" + np.random.default_rng(0).bytes(1 << 20))
    record = scan_file(str(noise))
    assert (record.status, record.reason.split(":")[0]) == ("failed", "invalid_value")


# ------------------------------------------------------------------ a scoring run that meets all of it
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from helpers.orthanc import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model"), size=64)


def _hostile_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """A world-readable folder: good radiographs plus every hostile input, and the expected status."""
    from monai_fracture.data.synthetic import generate_demo_dataset
    from PIL import Image

    folder = root / "in"
    generate_demo_dataset(folder / "good", n=2, modality="xr", seed=1, size=64)
    expected = {str(p): "scored" if p.name.startswith("image_") else "skipped" for p in (folder / "good").rglob("*") if p.is_file()}
    for name in hostile.STREAM_BOMBS:
        expected[str(hostile.write_stream_bomb(folder, name))] = "failed"
    expected[str(hostile.write_deflate_bomb(folder / "deflate.dcm", 700 << 20))] = "failed"
    expected[str(hostile.write_native(folder / "big.dcm", 512, 512))] = "failed"  # 2 MiB to decode: over --max-image-mib 1
    os.mkfifo(folder / "fifo.dcm")
    expected[str(folder / "fifo.dcm")] = "failed"
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(folder / "blank.png")
    expected[str(folder / "blank.png")] = "failed"
    locked = folder / "locked"
    locked.mkdir()
    hostile.write_stream_good(locked, "rle_15_segments")
    locked.chmod(0o000)
    expected[str(locked)] = "failed"
    for path in [root, *root.rglob("*")]:
        if path != locked and not path.is_relative_to(locked) and not path.is_fifo():
            path.chmod(path.stat().st_mode | 0o055)
    return folder, expected


SCORE_UNDER_LIMIT = r"""
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from monai_fracture.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_scoring_run_survives_every_hostile_input_under_a_memory_limit(tiny_model, tmp_path):
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop the permission-override capabilities (so a 000 folder is unreadable)")
    root = Path(tempfile.mkdtemp(prefix="hostile-", dir="/tmp"))
    try:
        root.chmod(0o755)
        folder, expected = _hostile_folder(root)
        model = root / "model"
        shutil.copytree(tiny_model, model)
        out = root / "out"
        out.mkdir()
        for path in [model, *model.rglob("*"), out]:
            path.chmod(0o777 if path.is_dir() else 0o644)
        limit = 3 << 30  # torch + the run need ~1 GB of address space; a bomb would need 4 GB or more
        proc = subprocess.run(
            # root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: file modes apply, yet the checkout (which may sit
            # in a 0700 folder) stays readable, unlike for another user
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search",
             sys.executable, "-c", SCORE_UNDER_LIMIT,
             str(limit), "score", str(folder), "--out", str(out), "--model", str(model), "--batch-size", "2",
             "--max-image-mib", "1"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(out), "TORCHINDUCTOR_CACHE_DIR": str(out / ".ti")},
        )
        assert proc.returncode == 1, proc.stderr[-4000:]  # some inputs failed, the run completed
        import pandas as pd

        table = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
        got = dict(zip(table["path"], table["status"]))
        assert got == expected, proc.stderr[-3000:]
        reasons = dict(zip(table["path"], table["reason"]))
        assert reasons[str(folder / "fifo.dcm")].startswith("not_regular_file")
        assert reasons[str(folder / "locked")].startswith("not_found: folder cannot be listed")
        assert reasons[str(folder / "blank.png")].startswith("no_content")
        assert reasons[str(folder / "big.dcm")].startswith("over_memory_budget: 512 x 512 x 1 x 1 frames at 16 bits needs 2.0 MiB")
        assert json.loads((out / "manifest.json").read_text())["counts"]["scored"] == len(
            [s for s in expected.values() if s == "scored"])
    finally:
        (root / "in" / "locked").chmod(0o755) if (root / "in" / "locked").exists() else None
        shutil.rmtree(root, ignore_errors=True)


def test_rle_frame_longer_than_the_peeked_bytes_still_decodes(tmp_path):
    """The offset check must use the whole frame: only its first 64 KiB are peeked, and a 16-bit
    frame of texture compresses to far more than that (the synthetic phantoms were refused once)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "DX", "RLE"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 512, 512, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.compress(RLELossless, generate_instance_uid=False)
    path = tmp_path / "rle_big_frame.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert len(ds.PixelData) > (1 << 16) + 64 * 1024  # the second segment starts beyond the peeked bytes
    values, _ = read_image(path)
    assert values.shape == (512, 512)
    np.testing.assert_array_equal(values, pixels.astype(np.float32))
