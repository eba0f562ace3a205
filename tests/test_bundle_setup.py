"""Glue the bundle configs call: class weights, folder listing for inference, head init, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import torch

from monai_fracture.model.package import ModelInfo, ModelPackageError
from monai_fracture.training.checkpoints import latest_checkpoint, resume_checkpoint
from monai_fracture.training.setup import (
    class_weights,
    flat_compose,
    init_head,
    prepare_batch,
    to_device,
)


def test_class_weights_are_inverse_frequency():
    items = [{"label": 0}] * 6 + [{"label": 1}] * 2
    weights = class_weights(items, num_classes=2)
    assert weights.tolist() == pytest.approx([8 / (2 * 6), 8 / (2 * 2)])
    assert class_weights(items, enabled=False) is None
    with pytest.raises(ValueError, match="no training items"):
        class_weights([{"label": 0}] * 3)


def test_inference_plan_scores_images_and_gives_every_other_file_a_reason(tmp_path):
    from monai_fracture.data.synthetic import generate_demo_dataset
    from monai_fracture.reports import ImageResult
    from monai_fracture.reports.study import write_study_outputs_from_files
    from monai_fracture.training.inference_inputs import inference_plan

    demo = tmp_path / "in"
    generate_demo_dataset(demo, n=2, modality="xr", seed=1)
    dicoms = sorted(demo.rglob("*.dcm"))
    first = pydicom.dcmread(dicoms[0], stop_before_pixels=True)
    result = ImageResult((str(first.SOPInstanceUID),), 0.9, 0.5, str(first.SeriesInstanceUID))
    (sr,) = [p for p in write_study_outputs_from_files([dicoms[0]], [result], ModelInfo(), demo / "reports")
             if p.name.startswith("SR")]
    (demo / "notes").write_bytes(b"plain text, no preamble")
    items, skipped = inference_plan(dataset_dir=str(demo))
    assert sorted(item["image"] for item in items) == sorted(str(p) for p in dicoms)
    reasons = {Path(row["path"]).name: (row["status"], row["reason"]) for row in skipped}
    assert reasons[sr.name][0] == "skipped" and "image" in reasons[sr.name][1].lower(), reasons[sr.name]
    assert reasons["notes"] == ("skipped", "not an image file")
    assert reasons["labels.csv"] == ("skipped", "not an image file")
    # a single file, and a datalist with relative and absolute paths
    assert inference_plan(dataset_dir=str(dicoms[0]))[0] == [{"image": str(dicoms[0])}]
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"testing": [{"image": "a/x.png"}], "training": [{"image": "/abs/y.dcm", "label": 1}]}))
    assert inference_plan(datalist=str(datalist), datalist_key="testing")[0] == [{"image": str(tmp_path / "a" / "x.png")}]
    assert len(inference_plan(datalist=str(datalist))[0]) == 2


def test_inference_plan_fails_loudly_on_missing_empty_and_unconfigured_inputs(tmp_path):
    from monai_fracture.training.inference_inputs import inference_plan

    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'}: dataset_dir not found"):
        inference_plan(dataset_dir=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'}: dataset_dir is empty"):
        inference_plan(dataset_dir=str(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no image the model can score among 1 files"):
        inference_plan(dataset_dir=str(tmp_path / "text"))
    with pytest.raises(FileNotFoundError, match="nolist.json: datalist not found"):
        inference_plan(datalist=str(tmp_path / "nolist.json"))
    with pytest.raises(ValueError, match="needs dataset_dir"):
        inference_plan()
    assert not list(tmp_path.glob("*demo*")), "nothing generated without synthetic=True"


def test_init_head_gives_small_logits():
    """From MONAI's head init (uniform +-1/sqrt(2), std 0.41) to N(0, std), bias 0, also through ``.module``."""
    from monai_fracture.networks import build_network, head_module

    torch.manual_seed(0)
    net = build_network("efficientnet-lite0", pretrained=False)
    head = head_module(net)  # the head its network family declares
    with torch.no_grad():
        torch.nn.init.uniform_(head.weight, -0.71, 0.71)
        torch.nn.init.constant_(head.bias, 0.3)

    init_head(net, std=0.01)
    # 2560 normal samples: the sample std is within 1.4% of the true one (1 sigma)
    assert float(head.weight.detach().std()) == pytest.approx(0.01, rel=0.06)
    assert abs(float(head.weight.detach().mean())) < 0.001 and torch.all(head.bias == 0)
    assert float(head.weight.detach().abs().max()) < 0.06  # normal, not the old uniform +-0.71
    wrapped = torch.nn.Module()
    wrapped.module = net  # DataParallel / DistributedDataParallel keep the network here
    init_head(wrapped, std=0.05)
    assert float(head.weight.detach().std()) == pytest.approx(0.05, rel=0.06)


def test_flat_compose_flattens_nested_chains():
    from monai.transforms import Compose, Identityd, RandFlipd

    chain = flat_compose(Compose([Identityd(keys="x"), Compose([RandFlipd(keys="x")])]), Identityd(keys="x"))
    assert [type(t).__name__ for t in chain.transforms] == ["Identityd", "RandFlipd", "Identityd"]


def test_latest_and_resume_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert resume_checkpoint(tmp_path, resume=False) is None
    with pytest.raises(ModelPackageError, match="resume=true"):
        resume_checkpoint(tmp_path, resume=True)
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"
    assert resume_checkpoint(tmp_path, resume=True).endswith("checkpoint_epoch=10.pt")


def test_channels_last_prepare_batch_and_network():
    from monai.engines.utils import default_prepare_batch

    assert prepare_batch(False) is default_prepare_batch
    batch = {"image": torch.rand(2, 3, 8, 8), "label": torch.tensor([0, 1]), "path": ["a", "b"]}
    image, label = prepare_batch(True)(batch, torch.device("cpu"))
    assert image.is_contiguous(memory_format=torch.channels_last) and torch.equal(image, batch["image"])
    assert torch.equal(label, batch["label"])
    volume, _ = prepare_batch(True)({"image": torch.rand(1, 1, 4, 4, 4), "label": torch.tensor([1])})
    assert volume.is_contiguous(memory_format=torch.channels_last_3d)
    net = to_device(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), "cpu", channels_last=True)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
