"""Preprocessing ms/image for a 2048x2048 DX, per transfer syntax, against raw pydicom decoding.

One radiograph is simulated with our own phantom generator (``monai_fracture.data``), packaged
as a DX For Presentation object with a LINEAR window, and written once per transfer syntax
(uncompressed, RLE, JPEG-LS, JPEG 2000; HTJ2K and Deflated when an encoder is installed) under
``benchmarks/out/data/preprocessing/``. Per syntax, in one process, one after the other:

- ``pydicom``: ``dcmread`` + ``pixel_array`` (the baseline: decoding only, no LUTs);
- ``read_image``: ``monai_fracture.io.read_image`` (decode, modality LUT, window, inversion);
- ``preprocess``: ``read_image`` + ``Classifier.preprocess`` of the shipped FracAtlas model
  (resize to 320², intensity, pad, 3 channels, TF scaling): the network input.

    python -m benchmarks.bench_preprocessing [--repeats 5] [--quick]
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from benchmarks.common import BenchContext, Row, Section, Timing, machine, measure, standalone

logger = logging.getLogger("benchmarks.bench_preprocessing")

SIZE = 2048
SEED = 20261126
MODEL = Path("bundles/fracture_classification/models/fracatlas")
#: short name -> transfer syntax keyword in pydicom.uid
SYNTAXES = {
    "uncompressed": "ExplicitVRLittleEndian",
    "rle": "RLELossless",
    "jpegls": "JPEGLSLossless",
    "jpeg2000": "JPEG2000Lossless",
    "htj2k": "HTJ2KLossless",
    "deflated": "DeflatedExplicitVRLittleEndian",
}


def radiograph_dataset(size: int = SIZE, seed: int = SEED, photometric: str = "MONOCHROME2", modality: str = "DX",
                       window: str = "window", bits_stored: int = 12, anatomy: str = "forearm"):
    """A simulated ``size``² radiograph as a pydicom Dataset (uncompressed, no file meta yet)."""
    from monai_fracture.data.synthetic.dicom_writer import Hierarchy
    from monai_fracture.data.synthetic.dicom_writer import radiograph_dataset as build
    from monai_fracture.data.synthetic.phantom import simulate_radiograph
    from monai_fracture.data.synthetic.dataset import _stored_pixels

    rng = np.random.default_rng(seed)
    phantom = simulate_radiograph((size, size), rng, anatomy, "transverse", np.random.default_rng(seed + 1))
    style = {"bits_stored": bits_stored, "photometric": photometric, "window": window}
    stored, win, voi = _stored_pixels(phantom.signal, rng, style)
    root = f"1.2.826.0.1.3680043.10.1494.{seed % 100000}"
    ids = Hierarchy(
        patient_id="BENCH", patient_name="Bench^Preprocessing", patient_sex="O", patient_birth_date="19700101",
        study_uid=f"{root}.1", study_id="1", accession_number="BENCH1", study_date="20260101", study_time="120000",
        series_uid=f"{root}.2", series_number=1, sop_uid=f"{root}.3", instance_number=1,
    )
    return build(stored, ids=ids, modality=modality, photometric=photometric, bits_stored=bits_stored,
                 spacing_mm=0.15, body_part=anatomy, view="AP", laterality="L", window=win, voi_lut=voi)


def write_syntax(ds, path: Path, name: str) -> bool:
    """Write ``ds`` in the named syntax; False when no encoder for it is installed here."""
    import copy

    import pydicom
    from pydicom import uid
    from pydicom.dataset import FileMetaDataset

    syntax = getattr(uid, SYNTAXES[name])
    out = copy.deepcopy(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.ImplementationClassUID = uid.PYDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    out.file_meta = meta
    try:
        if name == "htj2k":
            import imagecodecs
            from pydicom.encaps import encapsulate

            pixels = out.pixel_array
            out.PixelData = encapsulate([imagecodecs.htj2k_encode(pixels, level=0)])
            out["PixelData"].VR = "OB"
            out.file_meta.TransferSyntaxUID = syntax
        elif syntax.is_compressed:
            out.compress(syntax, generate_instance_uid=False)
        else:
            out.file_meta.TransferSyntaxUID = syntax
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pydicom.dcmwrite(tmp, out, enforce_file_format=True)
        tmp.replace(path)
    except (ImportError, NotImplementedError, RuntimeError, ValueError, AttributeError) as exc:
        logger.warning("no %s file: %s", name, exc)
        return False
    return True


def prepare(ctx: BenchContext) -> dict[str, Path]:
    """The cached files, one per transfer syntax that can be written here."""
    folder = ctx.data_dir / "preprocessing"
    files: dict[str, Path] = {}
    ds = None
    for name in SYNTAXES:
        path = folder / f"dx_{SIZE}_{name}.dcm"
        if not path.is_file():
            ds = ds if ds is not None else radiograph_dataset()
            if not write_syntax(ds, path, name):
                continue
        files[name] = path
    return files


def _check_same_pixels(files: dict[str, Path]) -> None:
    import pydicom

    reference = None
    for name, path in files.items():
        pixels = pydicom.dcmread(path).pixel_array
        if reference is None:
            reference = pixels
        elif not np.array_equal(reference, pixels):
            raise RuntimeError(f"{name}: decoded pixels differ from the uncompressed file (not lossless?)")


def run(ctx: BenchContext, only: list[str] | None = None) -> Section:
    """The section; ``only`` limits it to some transfer syntaxes (short names)."""
    import pydicom
    import torch

    from monai_fracture.io import read_image
    from monai_fracture.model.classifier import Classifier

    files = prepare(ctx)
    _check_same_pixels(files)
    if only:
        files = {name: path for name, path in files.items() if name in only}
    classifier = Classifier(MODEL)
    repeats = max(3, ctx.repeats // 2) if ctx.quick else ctx.repeats
    rows: list[Row] = []
    details: dict = {"machine": machine(), "image": f"{SIZE}x{SIZE} DX MONOCHROME2, 12 bits stored, LINEAR window",
                     "model": str(MODEL), "input_size": int(classifier.info.preprocessing.get("size", 0)),
                     "repeats": repeats, "files": {}}

    def raw(path: Path):
        return pydicom.dcmread(path).pixel_array

    def ours(path: Path):
        return read_image(path)

    def full(path: Path):
        array, meta = read_image(path)
        return classifier.preprocess(array, meta)

    with torch.inference_mode():
        for name, path in files.items():
            details["files"][name] = {"path": str(path), "bytes": path.stat().st_size}
            baseline = measure(lambda: raw(path), repeats)
            timings: dict[str, Timing] = {"pydicom": baseline, "read_image": measure(lambda: ours(path), repeats),
                                          "preprocess": measure(lambda: full(path), repeats)}
            for metric, timing in timings.items():
                is_base = metric == "pydicom"
                rows.append(Row.latency(
                    f"{name}/{metric}", timing, baseline=None if is_base else f"{name}/pydicom",
                    ratio=None if is_base else timing.median / baseline.median,
                    ratio_meaning=None if is_base else "time / raw pydicom dcmread+pixel_array time (lower is better)",
                    extra={"syntax": name, "step": metric, "bytes": path.stat().st_size},
                ))
    return Section(name="preprocessing", title=f"Preprocessing ms/image, {SIZE}² DX, by transfer syntax", rows=rows,
                   details=details)


def main(argv: list[str] | None = None) -> None:
    def add_arguments(parser) -> None:
        parser.add_argument("--only", nargs="*", choices=list(SYNTAXES), help="only these transfer syntaxes")

    standalone(__doc__.splitlines()[0], lambda ctx, args: run(ctx, args.only), argv, add_arguments=add_arguments)

if __name__ == "__main__":
    main()
