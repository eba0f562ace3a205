"""multi_gpu_train.json under torchrun: two CPU processes (gloo) train with DDP; only rank 0 writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "fracture_classification" / "configs"


def test_two_process_ddp_training(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found next to the interpreter"
    configs = str([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    cmd = [torchrun, "--nproc_per_node=2", "--standalone", "-m", "monai.bundle", "run", "training",
           "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", configs, "--bundle_root", str(tmp_path),
           "--synthetic", "True", "--synthetic_n", "24", "--image_size", "48", "--batch_size", "4", "--max_epochs", "2",
           "--check_pixels", "False"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "rank 0/2 joined the process group (gloo)" in log and "rank 1/2 joined the process group (gloo)" in log
    for rank in (0, 1):
        epochs = re.findall(rf"rank {rank}/2 epoch (\d)/2: mean train loss [\d.]+ over (\d+) iterations", log)
        assert [e for e, _ in epochs] == ["1", "2"], f"rank {rank} did not train both epochs"
        # the DistributedSampler halves each rank's share of the training set
        assert all(int(n) == 2 for _, n in epochs), epochs
    models = tmp_path / "models"
    info = json.loads((models / "model_info.json").read_text())
    state = torch.load(models / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state), "DDP wrapper leaked into model.pt"
    assert info["network"]["name"] == "efficientnet-lite0"
    assert (models / "checkpoint_epoch=2.pt").is_file()
    # only rank 0 writes TensorBoard logs: one process id in the event file names
    writers = {p.name.split(".")[4] for p in (tmp_path / "logs").glob("events.out.tfevents.*")}
    assert len(writers) == 1, writers
