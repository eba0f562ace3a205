"""CPU seconds per training image of each screening setting, to plan epochs before starting folds.

    nice -n 19 .venv/bin/python -m benchmarks.fracatlas_step_cost --settings lite0:320,lite0:384,lite2:320 \
        --box-loss-weight 0.2 --json benchmarks/results/fracatlas_cv/step_cost.json

Wall-clock img/s on a shared 2-core machine says more about the neighbours than the recipe, so this
measures **process CPU time** of full training steps (forward, CE + optional box loss, backward,
AdamW step) on one thread, where no thread spins waiting for another. Divide by the cores you
have (parallel efficiency below 1 on 2 threads) for a wall-time estimate. Data loading is left out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from monai_fracture.networks import build_network, head_module, parameter_groups
from monai_fracture.training.box_guidance import BoxAttentionLoss, FeatureMapTap, class_activation_map


def step_cost(network: str, size: int, batch_size: int, steps: int, box_loss_weight: float) -> dict:
    """Median CPU seconds per image over ``steps`` timed steps, after one untimed warm-up step."""
    torch.manual_seed(0)
    net = build_network(network, pretrained=True).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(parameter_groups(net, backbone_lr=4e-4, head_lr=1e-3))
    ce, box = nn.CrossEntropyLoss(label_smoothing=0.05), BoxAttentionLoss()
    x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch_size) % 2
    masks = torch.zeros(batch_size, size, size)
    masks[::2, size // 3: size // 2, size // 3: size // 2] = 1
    costs = []
    for i in range(steps + 1):
        start = time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with FeatureMapTap(net) as tap:
            logits = net(x)
        loss = ce(logits, y)
        if box_loss_weight > 0:
            loss = loss + box_loss_weight * box(class_activation_map(tap.features, head_module(net)), masks)
        loss.backward()
        optimizer.step()
        if i:
            costs.append((time.process_time() - start) / batch_size)
    costs.sort()
    return {"network": network, "size": size, "box_loss_weight": box_loss_weight, "batch_size": batch_size,
            "cpu_s_per_image": round(costs[len(costs) // 2], 4), "min": round(costs[0], 4),
            "max": round(costs[-1], 4), "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="lite0:320,lite0:384,lite1:320,lite2:320",
                        help="comma-separated network:size (network without the efficientnet- prefix)")
    parser.add_argument("--box-loss-weight", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=2575, help="images per epoch, for the estimate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for setting in args.settings.split(","):
        name, size = setting.split(":")
        row = step_cost(f"efficientnet-{name}", int(size), args.batch_size, args.steps, args.box_loss_weight)
        row["cpu_min_per_epoch"] = round(row["cpu_s_per_image"] * args.train_images / 60, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch_threads": 1, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
