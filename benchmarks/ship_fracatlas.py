"""Package a finished ``benchmarks.fracatlas`` run as the bundle's shipped FracAtlas model.

    .venv/bin/python -m benchmarks.ship_fracatlas benchmarks/out/fracatlas/lite0_224 \
        --to bundles/fracture_classification/models/fracatlas

Writes ``model.pt`` (state dict) and ``model_info.json`` with the decision threshold chosen on
the validation fold (the probabilities ``monai-fracture score`` computes: no test-time
augmentation), the calibration figures, and the data and split it was trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monai_fracture.model.package import ModelInfo, safe_torch_load, save_model
from monai_fracture.networks import build_network

FRACATLAS_CITATION = (
    "Abedeen I., Rahman M.A., Prottyasha F.Z., Ahmed T., Chowdhury T.M., Shatabda S. FracAtlas: A Dataset for "
    "Fracture Classification, Localization and Segmentation of Musculoskeletal Radiographs. Scientific Data 10, "
    "521 (2023). doi:10.1038/s41597-023-02432-4"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--to", type=Path, default=Path("bundles/fracture_classification/models/fracatlas"))
    parser.add_argument("--version", default="0.1.0")
    args = parser.parse_args(argv)
    summary = json.loads((args.run_dir / "summary.json").read_text())
    recipe, overall = summary["recipe"], summary["metrics"]["overall"]
    network_kwargs = {"name": recipe["network"], "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    network = build_network(**network_kwargs, pretrained=False)
    network.load_state_dict(safe_torch_load(args.run_dir / "model.pt"), strict=True)
    info = ModelInfo(
        name="fracture_classification_fracatlas",
        version=args.version,
        network=network_kwargs,
        preprocessing={"modality": "xr", "size": recipe["size"], "normalization": "tf"},
        threshold=float(overall["threshold"]),
        threshold_rule="Youden's J maximum on the group-aware validation fold (ties: higher threshold)",
        modality="xr",
        training_data={
            "dataset": "FracAtlas (development part), CC BY 4.0",
            "citation": FRACATLAS_CITATION,
            **summary["data"],
            "recipe": recipe,
        },
        metrics={"validation": overall, "validation_flip_tta": summary["metrics_tta"]["overall"],
                 "validation_without_hardware": summary["metrics"]["without_hardware"],
                 "calibration_ece": overall["ece"]},
        epoch=recipe["epochs"],
    )
    folder = save_model(args.to, network, info)
    size_mb = (folder / "model.pt").stat().st_size / 2**20
    print(f"wrote {folder} (model.pt {size_mb:.1f} MB), threshold {info.threshold:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
