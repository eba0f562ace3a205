"""Fine-tune an ImageNet EfficientNet on FracAtlas with a leakage-free split and report honest metrics.

One fold only (the run behind the shipped model). Recipes are now judged on all five folds'
out-of-fold predictions: ``benchmarks.fracatlas_cv`` (resumable) and ``benchmarks.fracatlas_oof``.

Run in the background (it takes tens of minutes on 2 CPU cores):

    .venv/bin/python -m benchmarks.fracatlas --data ../shared/data/fracatlas \
        --out benchmarks/out/fracatlas/lite0_224 --network efficientnet-lite0 --size 224 --epochs 8

Recipe choices that generalise rather than fit the validation split: a fixed epoch budget with
cosine decay (no best-epoch picking on validation), group-aware stratified folds on the
near-duplicate ``group`` column, truncated JPEGs dropped and counted, and images read and
preprocessed by the same code that ``monai-fracture score`` uses (decoded once, cached as uint8).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_tensor
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.metrics import binary_report
from monai_fracture.io import ImageReadError, read_image
from monai_fracture.networks import build_network, parameter_groups
from monai_fracture.transforms import ImageNetNormalize
from monai_fracture.transforms.presets import build_augmentation, build_preprocessing

logger = logging.getLogger("benchmarks.fracatlas")
NORMALIZATION = "tf"  # TF-style scaling suits the EfficientNet-Lite ImageNet weights (notes.md)


@dataclass
class FineTuneRecipe:
    """What every FracAtlas fine-tuning run sets (this one-fold run and ``benchmarks.fracatlas_cv``)."""

    network: str = "efficientnet-lite0"
    size: int = 224
    epochs: int = 8
    batch_size: int = 32
    head_lr: float = 1e-3
    backbone_lr: float = 4e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.05
    folds: int = 5
    seed: int = 0


@dataclass
class Recipe(FineTuneRecipe):
    fold: int = 0
    tta: bool = True


# ---------------------------------------------------------------- cache of decoded, resized images
def _preprocess_one(args: tuple[str, int]) -> tuple[np.ndarray | None, str]:
    path, size = args
    try:
        image, meta = read_image(path)
    except ImageReadError as err:
        return None, f"{err.reason.value}: {err.detail}"
    chain = build_preprocessing("xr", size=size, normalization=None, load=False, in_channels=1)
    out = chain({"image": MetaTensor(torch.as_tensor(image)[None], meta=meta)})["image"]
    return (np.asarray(out[0]).clip(0, 1) * 255 + 0.5).astype(np.uint8), ""


def build_cache(data_dir: Path, size: int, cache_file: Path, workers: int = 2) -> pd.DataFrame:
    """Decode and preprocess every image once (our reader and preset), store uint8 arrays."""
    labels = pd.read_csv(data_dir / "labels.csv")
    if cache_file.is_file():
        cached = np.load(cache_file, allow_pickle=False)
        labels = labels.merge(pd.DataFrame({"path": cached["paths"], "cache_index": np.arange(len(cached["paths"]))}),
                              on="path", how="left")
        labels.attrs["images"] = cached["images"]
        labels.attrs["failures"] = json.loads(str(cached["failures"]))
        return labels
    from tqdm import tqdm

    jobs = [(str(data_dir / p), size) for p in labels["path"]]
    images, kept, failures = [], [], {}
    # spawn, not fork: forked from a process that already runs torch/ONNX threads (``make bench``'s
    # inference section) the workers can inherit a held lock and hang before their first image
    with get_context("spawn").Pool(workers) as pool:
        for rel, (array, reason) in tqdm(zip(labels["path"], pool.imap(_preprocess_one, jobs, chunksize=16)),
                                         total=len(jobs), desc=f"decode+resize {size}px", mininterval=5):
            if array is None:
                failures[rel] = reason
            else:
                kept.append(rel)
                images.append(array)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache_file, images=np.stack(images), paths=np.array(kept), failures=json.dumps(failures))
    return build_cache(data_dir, size, cache_file, workers)


class CachedImages(Dataset):
    """uint8 square images -> normalised 3-channel tensors, with optional augmentation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool, seed: int) -> None:
        self.images, self.labels = images, labels
        self.augment = build_augmentation("xr", seed=seed) if augment else None
        self.normalize = ImageNetNormalize(style=NORMALIZATION)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).float().div_(255.0)[None]
        if self.augment is not None:
            image = torch.as_tensor(self.augment({"image": image})["image"])
        image = self.normalize(image.expand(3, -1, -1))
        # plain tensors: a MetaTensor reaching the network routes every op through __torch_function__
        return convert_to_tensor(image, track_meta=False).contiguous(), int(self.labels[index])


# ---------------------------------------------------------------- training
def split_indices(frame: pd.DataFrame, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    splitter = StratifiedGroupKFold(n_splits=recipe.folds, shuffle=True, random_state=recipe.seed)
    folds = list(splitter.split(frame, frame["label"], groups=frame["group"]))
    train, val = folds[recipe.fold]
    assert not set(frame["group"].iloc[train]) & set(frame["group"].iloc[val]), "group leakage"
    return train, val


@torch.no_grad()
def predict(net: nn.Module, loader: DataLoader, tta: bool) -> tuple[np.ndarray, np.ndarray]:
    """P(fracture) without and with a left-right flip test-time augmentation."""
    net.eval()
    plain, flipped = [], []
    for images, _ in loader:
        images = images.to(memory_format=torch.channels_last)
        plain.append(torch.softmax(net(images), 1)[:, 1])
        if tta:
            flipped.append(torch.softmax(net(torch.flip(images, dims=[3])), 1)[:, 1])
    p = torch.cat(plain).numpy()
    return p, ((p + torch.cat(flipped).numpy()) / 2 if tta else p)


def train(recipe: Recipe, frame: pd.DataFrame, images: np.ndarray, out_dir: Path) -> dict:
    torch.manual_seed(recipe.seed)
    train_idx, val_idx = split_indices(frame, recipe)
    labels = frame["label"].to_numpy()
    train_ds = CachedImages(images[frame["cache_index"].to_numpy()[train_idx]], labels[train_idx], True, recipe.seed)
    val_ds = CachedImages(images[frame["cache_index"].to_numpy()[val_idx]], labels[val_idx], False, recipe.seed)
    train_loader = DataLoader(train_ds, batch_size=recipe.batch_size, shuffle=True, num_workers=1,
                              drop_last=True, persistent_workers=True)
    val_loader = DataLoader(val_ds, batch_size=64, num_workers=1)

    net = build_network(recipe.network, pretrained=True).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(parameter_groups(net, backbone_lr=recipe.backbone_lr, head_lr=recipe.head_lr,
                                                   weight_decay=recipe.weight_decay))
    steps = recipe.epochs * len(train_loader)
    warmup = max(1, int(recipe.warmup_epochs * len(train_loader)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    history = []
    from sklearn.metrics import roc_auc_score

    for epoch in range(recipe.epochs):
        net.train()
        start, losses = time.perf_counter(), []
        for images_batch, targets in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(images_batch.to(memory_format=torch.channels_last)), targets)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        train_s = time.perf_counter() - start
        p_plain, p_tta = predict(net, val_loader, recipe.tta)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_s": round(train_s, 1),
               "train_img_per_s": round(len(train_loader) * recipe.batch_size / train_s, 2),
               "val_auc": float(roc_auc_score(labels[val_idx], p_plain)),
               "val_auc_tta": float(roc_auc_score(labels[val_idx], p_tta))}
        history.append(row)
        logger.info("epoch %s", row)
        (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    torch.save(net.state_dict(), out_dir / "model.pt")
    p_plain, p_tta = predict(net, val_loader, True)
    val = frame.iloc[val_idx].copy()
    val["probability"], val["probability_tta"] = p_plain, p_tta
    val.to_csv(out_dir / "val_predictions.csv", index=False)
    return {"history": history, "train_images": int(len(train_idx)), "val_images": int(len(val_idx)),
            "val_fractured": int(labels[val_idx].sum())}


def report(val: pd.DataFrame, column: str) -> dict:
    """Overall metrics, then per body region and without hardware, at the overall threshold."""
    overall = binary_report(val["label"].to_numpy(), val[column].to_numpy(), groups=val["group"].to_numpy())
    out = {"overall": overall, "by_region": {}, "without_hardware": None}
    for region, part in val.groupby("region"):
        out["by_region"][region] = binary_report(part["label"].to_numpy(), part[column].to_numpy(),
                                                 threshold=overall["threshold"], bootstrap=0)
    clean = val[val["hardware"] == 0]
    out["without_hardware"] = binary_report(clean["label"].to_numpy(), clean[column].to_numpy(),
                                            threshold=overall["threshold"], groups=clean["group"].to_numpy())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path("benchmarks/out/cache"))
    for field, default in asdict(Recipe()).items():
        kind = type(default)
        if kind is bool:
            parser.add_argument(f"--{field.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=default)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    recipe = Recipe(**{k: getattr(args, k) for k in asdict(Recipe())})
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.data / "labels.csv").is_file():
        parser.error(f"no labels.csv under {args.data}: point --data at the FracAtlas folder")

    wall = time.perf_counter()
    frame = build_cache(args.data, recipe.size, args.cache_dir / f"fracatlas_{recipe.size}.npz")
    images, failures = frame.attrs["images"], frame.attrs["failures"]
    listed_truncated = set(frame.loc[frame["decodes"].astype(str).str.lower() == "false", "path"])
    usable = frame[frame["cache_index"].notna()].reset_index(drop=True)
    usable["cache_index"] = usable["cache_index"].astype(int)
    cache_s = time.perf_counter() - wall
    logger.info("%d images usable, %d rejected by the reader (%d of them listed as truncated)",
                len(usable), len(failures), len(listed_truncated & set(failures)))

    result = train(recipe, usable, images, args.out)
    val = pd.read_csv(args.out / "val_predictions.csv")
    summary = {
        "recipe": asdict(recipe),
        "data": {"images_listed": int(len(frame)), "images_used": int(len(usable)),
                 "rejected_by_reader": len(failures),
                 "rejected_listed_truncated": len(listed_truncated & set(failures)),
                 "rejection_reasons": sorted({r.split(':')[0] for r in failures.values()}),
                 "split": f"StratifiedGroupKFold(n_splits={recipe.folds}, shuffle, seed={recipe.seed}) fold {recipe.fold} on 'group'",
                 **{k: result[k] for k in ("train_images", "val_images", "val_fractured")}},
        "history": result["history"],
        "metrics": report(val, "probability"),
        "metrics_tta": report(val, "probability_tta"),
        "wall_seconds": {"cache": round(cache_s, 1), "total": round(time.perf_counter() - wall, 1)},
        "torch_threads": args.threads,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("overall: %s", json.dumps(summary["metrics"]["overall"], indent=1))
    logger.info("overall with flip TTA: %s", json.dumps(summary["metrics_tta"]["overall"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
