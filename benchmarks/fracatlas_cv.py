"""Five grouped folds on FracAtlas, fold by fold and resumable: out-of-fold (OOF) probabilities for every image.

Run in the background at the lowest priority (hours on 2 CPU cores); rerun the same command to resume:

    nice -n 19 .venv/bin/python -m benchmarks.fracatlas_cv --name lite0_320_box --size 320 --epochs 10 \
        --box-loss-weight 0.2 --folds-to-run 0,1,2,3,4 >> benchmarks/out/cv/lite0_320_box.log 2>&1

- Images are decoded once by the scoring code's reader and preset, at their final size, into a uint8
  ``.npy`` memmap (``benchmarks/out/cache/``), so every run and fold reads the same pixels.
- The split is ``StratifiedGroupKFold`` on the near-duplicate ``group`` column with a fixed seed.
- Each fold writes a checkpoint (network, optimiser, schedule, EMA, history) every ``--checkpoint-steps``
  steps and at each epoch end under ``benchmarks/out/cv/NAME/foldK/``; a killed run resumes mid-epoch
  with the same batch order. A finished fold's OOF CSV and metrics JSON are copied to
  ``benchmarks/results/fracatlas_cv/NAME/`` (small files, meant to be committed) and the fold is skipped
  next time. ``benchmarks.fracatlas_oof`` pools the finished folds.
- A fixed epoch budget with cosine decay: nothing is chosen on the fold it is reported on.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import MetaTensor
from monai.data.utils import worker_init_fn
from monai.transforms import Compose, RandAffined, RandFlipd
from monai.utils import convert_to_tensor
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import cpu_model
from benchmarks.fracatlas import FineTuneRecipe
from monai_fracture.io import ImageReadError, read_image
from monai_fracture.networks import build_network, head_module, parameter_groups
from monai_fracture.training.box_guidance import (
    BoxAttentionLoss,
    FeatureMapTap,
    box_mask,
    class_activation_map,
    read_yolo_boxes,
)
from monai_fracture.transforms import ImageNetNormalize
from monai_fracture.transforms.presets import build_augmentation, build_preprocessing

logger = logging.getLogger("benchmarks.fracatlas_cv")
NORMALIZATION = "tf"  # TF-style scaling suits the EfficientNet-Lite ImageNet weights (notes.md)
OUT_ROOT = Path("benchmarks/out/cv")
RESULTS_ROOT = Path("benchmarks/results/fracatlas_cv")


@dataclass
class Recipe(FineTuneRecipe):
    size: int = 320
    epochs: int = 10
    box_loss_weight: float = 0.0  # 0 = image labels only
    box_temperature: float = 1.0
    ema_decay: float = 0.0  # 0 = no EMA of weights


# ---------------------------------------------------------------- cache of decoded, final-size images
def _decode(args: tuple[str, int]) -> tuple[np.ndarray | None, tuple[int, int], str]:
    path, size = args
    try:
        image, meta = read_image(path)
    except ImageReadError as err:
        return None, (0, 0), f"{err.reason.value}: {err.detail}"
    chain = build_preprocessing("xr", size=size, normalization=None, load=False, in_channels=1)
    out = chain({"image": MetaTensor(torch.as_tensor(image)[None], meta=meta)})["image"]
    shape = (int(image.shape[-2]), int(image.shape[-1]))
    return (np.asarray(out[0]).clip(0, 1) * 255 + 0.5).astype(np.uint8), shape, ""


def load_cache(data_dir: Path, size: int, cache_dir: Path, workers: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """labels.csv joined with the cache rows (``cache_row``, ``read_rows``, ``read_cols``) and the uint8 memmap.

    Built once per size; the index CSV is written last, so a cache without it is rebuilt.
    """
    images_file = cache_dir / f"fracatlas_{size}.npy"
    index_file = cache_dir / f"fracatlas_{size}_index.csv"
    labels = pd.read_csv(data_dir / "labels.csv")
    if not index_file.is_file():
        from tqdm import tqdm

        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = images_file.with_suffix(".partial.npy")
        store = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(labels), size, size))
        rows = []
        jobs = [(str(data_dir / p), size) for p in labels["path"]]
        with Pool(workers) as pool:
            results = pool.imap(_decode, jobs, chunksize=16)
            for i, (rel, (array, shape, reason)) in enumerate(
                    tqdm(zip(labels["path"], results), total=len(jobs), desc=f"decode {size}px", mininterval=10)):
                if array is not None:
                    store[i] = array
                rows.append({"path": rel, "cache_row": i if array is not None else -1,
                             "read_rows": shape[0], "read_cols": shape[1], "reject_reason": reason})
        store.flush()
        del store
        os.replace(partial, images_file)
        pd.DataFrame(rows).to_csv(index_file, index=False)
    index = pd.read_csv(index_file, keep_default_na=False)
    return labels.merge(index, on="path", how="left"), np.load(images_file, mmap_mode="r")


def usable_frame(frame: pd.DataFrame, data_dir: Path) -> pd.DataFrame:
    """Images the reader decoded, with a ``box_file`` column when boxes line up with the image as read."""
    usable = frame[frame["cache_row"] >= 0].reset_index(drop=True)
    yolo = data_dir / "annotations" / "yolo"
    # EXIF-rotated files are read transposed relative to the stored pixels the boxes refer to: no boxes for them.
    aligned = (usable["read_rows"] == usable["height"]) & (usable["read_cols"] == usable["width"])
    usable["box_file"] = [str(yolo / (Path(p).stem + ".txt")) if ok else "" for p, ok in zip(usable["path"], aligned)]
    return usable


FULL_FIT = -1  # "fold" that trains on every usable image and holds nothing out (the model to ship)


def fold_indices(frame: pd.DataFrame, folds: int, seed: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    if fold == FULL_FIT:
        return np.arange(len(frame)), np.zeros(0, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, val = list(splitter.split(frame, frame["label"], groups=frame["group"]))[fold]
    if set(frame["group"].iloc[train]) & set(frame["group"].iloc[val]):
        raise RuntimeError(f"fold {fold}: a near-duplicate group crosses the split")
    return train, val


class FoldImages(Dataset):
    """Cached uint8 images -> normalised 3-channel tensors, label and box mask (moved with the image)."""

    def __init__(self, images: np.ndarray, frame: pd.DataFrame, size: int, augment: bool, seed: int) -> None:
        self.images, self.size = images, size
        self.rows = frame["cache_row"].to_numpy()
        self.labels = frame["label"].to_numpy()
        self.shapes = frame[["read_rows", "read_cols"]].to_numpy()
        self.box_files = frame["box_file"].tolist()
        self.normalize = ImageNetNormalize(style=NORMALIZATION)
        self.augment = None
        if augment:
            spatial = Compose([
                RandAffined(keys=["image", "box"], prob=0.5, rotate_range=math.radians(10.0), scale_range=0.1,
                            mode=["bilinear", "nearest"], padding_mode="zeros"),
                RandFlipd(keys=["image", "box"], prob=0.5, spatial_axis=1),
            ])
            self.augment = Compose([spatial, build_augmentation("xr", keys=["image"], rotate_degrees=0, scale=0,
                                                                flip=False, seed=seed)])
            self.augment.set_random_state(seed=seed)

    def __len__(self) -> int:
        return len(self.rows)

    def mask(self, index: int) -> np.ndarray:
        if not self.labels[index] or not self.box_files[index]:
            return np.zeros((self.size, self.size), dtype=np.uint8)
        return box_mask(read_yolo_boxes(self.box_files[index]), self.shapes[index], self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image = torch.from_numpy(np.array(self.images[self.rows[index]])).float().div_(255.0)[None]
        mask = torch.from_numpy(self.mask(index))[None].float()
        if self.augment is not None:
            out = self.augment({"image": image, "box": mask})
            image, mask = torch.as_tensor(out["image"]), torch.as_tensor(out["box"])
        image = self.normalize(image.expand(3, -1, -1))
        # plain tensors: a MetaTensor reaching the network routes every op through __torch_function__
        return (convert_to_tensor(image, track_meta=False).contiguous(), int(self.labels[index]),
                convert_to_tensor(mask[0] > 0.5, track_meta=False).to(torch.uint8))


# ---------------------------------------------------------------- training one fold, resumable
def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@torch.no_grad()
def predict(net: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """P(fracture) without and with a left-right flip test-time augmentation."""
    net.eval()
    plain, flipped = [], []
    for images, _, _ in loader:
        images = images.contiguous(memory_format=torch.channels_last)
        plain.append(torch.softmax(net(images), 1)[:, 1])
        flipped.append(torch.softmax(net(torch.flip(images, dims=[3])), 1)[:, 1])
    p = torch.cat(plain).numpy()
    return p, (p + torch.cat(flipped).numpy()) / 2


def epoch_loader(dataset: Dataset, sampler: list[int], batch_size: int, workers: int) -> DataLoader:
    """One epoch's loader; MONAI's ``worker_init_fn`` reseeds the augmentation in each new worker.

    Without it every epoch's freshly forked worker starts from the same transform random state and
    repeats the previous epoch's augmentation draws.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      worker_init_fn=worker_init_fn if workers else None)


def _save(state: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill during the write leaves the previous checkpoint intact


def train_fold(recipe: Recipe, frame: pd.DataFrame, images: np.ndarray, fold: int, fold_dir: Path,
               checkpoint_steps: int, workers: int) -> pd.DataFrame:
    """Train one fold to the end of its budget (resuming from ``fold_dir/checkpoint.pt``), return its OOF rows."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed + fold)
    train_idx, val_idx = fold_indices(frame, recipe.folds, recipe.seed, fold)
    train_ds = FoldImages(images, frame.iloc[train_idx], recipe.size, True, recipe.seed + fold)
    val_loader = (DataLoader(FoldImages(images, frame.iloc[val_idx], recipe.size, False, 0), batch_size=64)
                  if len(val_idx) else None)
    steps_per_epoch = len(train_idx) // recipe.batch_size

    ckpt_file = fold_dir / "checkpoint.pt"
    state = torch.load(ckpt_file, map_location="cpu", weights_only=True) if ckpt_file.is_file() else None
    if state is not None and json.loads(state["recipe"]) != asdict(recipe):
        raise RuntimeError(f"{ckpt_file}: written by another recipe; use another --name or delete the folder")
    net = build_network(recipe.network, pretrained=state is None).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(parameter_groups(net, backbone_lr=recipe.backbone_lr, head_lr=recipe.head_lr,
                                                   weight_decay=recipe.weight_decay))
    total, warmup = recipe.epochs * steps_per_epoch, max(1, int(recipe.warmup_epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    ema = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
           if recipe.ema_decay > 0 else None)
    ce = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    box_loss = BoxAttentionLoss(temperature=recipe.box_temperature)

    epoch, step, history, cpu_before, wall_before = 0, 0, [], 0.0, 0.0
    cpus = [cpu_model()]  # CPU time is only comparable on one CPU model: record every one a fold ran on
    if state is not None:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        epoch, step, history = int(state["epoch"]), int(state["step"]), json.loads(state["history"])
        cpu_before, wall_before = float(state["cpu_s"]), float(state["wall_s"])
        earlier = json.loads(state["cpus"]) if "cpus" in state else ["not recorded"]  # a checkpoint from before
        cpus = list(dict.fromkeys(earlier + cpus))
        logger.info("fold %d: resuming at epoch %d step %d/%d", fold, epoch + 1, step, steps_per_epoch)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()

    def checkpoint(next_epoch: int, next_step: int) -> None:
        _save({"recipe": json.dumps(asdict(recipe)), "net": net.state_dict(), "optimizer": optimizer.state_dict(),
               "schedule": schedule.state_dict(), "ema": ema.state_dict() if ema is not None else {},
               "epoch": next_epoch, "step": next_step, "history": json.dumps(history),
               "cpu_s": cpu_before + _cpu_seconds() - cpu_start,
               "wall_s": wall_before + time.perf_counter() - wall_start, "cpus": json.dumps(cpus)}, ckpt_file)

    while epoch < recipe.epochs:
        # the batch order of an epoch depends only on (seed, fold, epoch): a resumed epoch continues it
        order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(
            recipe.seed * 1000 + (fold if fold >= 0 else 99) * 100 + epoch))[: steps_per_epoch * recipe.batch_size]
        sampler = order[step * recipe.batch_size:].tolist()
        loader = epoch_loader(train_ds, sampler, recipe.batch_size, workers)
        net.train()
        losses, box_losses, t0, seen = [], [], time.perf_counter(), 0
        for images_batch, targets, masks in loader:
            images_batch = images_batch.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with FeatureMapTap(net) as tap:
                logits = net(images_batch)
            loss = ce(logits, targets)
            if recipe.box_loss_weight > 0:
                extra = box_loss(class_activation_map(tap.features, head_module(net)), masks)
                loss = loss + recipe.box_loss_weight * extra
                box_losses.append(float(extra.detach()))
            loss.backward()
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(net)
            losses.append(float(loss.detach()))
            step, seen = step + 1, seen + len(targets)
            if step % 10 == 0:
                logger.info("fold %d epoch %d step %d/%d loss %.4f %.2f img/s", fold, epoch + 1, step,
                            steps_per_epoch, np.mean(losses[-10:]), seen / (time.perf_counter() - t0))
            if checkpoint_steps and step % checkpoint_steps == 0 and step < steps_per_epoch:
                checkpoint(epoch, step)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                        "box_loss": float(np.mean(box_losses)) if box_losses else None,
                        "img_per_s": round(seen / (time.perf_counter() - t0), 2) if seen else None})
        if val_loader is not None:
            p_plain, p_tta = predict(ema.module if ema is not None else net, val_loader)
            val_labels = frame["label"].to_numpy()[val_idx]
            history[-1].update({"val_auc": float(roc_auc_score(val_labels, p_plain)),
                                "val_auc_tta": float(roc_auc_score(val_labels, p_tta))})
        logger.info("fold %d %s", fold, history[-1])
        epoch, step = epoch + 1, 0
        checkpoint(epoch, 0)

    final = ema.module if ema is not None else net
    torch.save(final.state_dict(), fold_dir / "model.pt")
    p_plain, p_tta = predict(final, val_loader) if val_loader is not None else (np.zeros(0), np.zeros(0))
    oof = frame.iloc[val_idx][["path", "label", "group", "region", "hardware"]].copy()
    oof["fold"], oof["probability"], oof["probability_tta"] = fold, p_plain, p_tta
    state = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    meta = {"recipe": asdict(recipe), "fold": fold, "train_images": int(len(train_idx)),
            "val_images": int(len(val_idx)), "val_fractured": int(oof["label"].sum()),
            "train_with_boxes": int(sum(bool(train_ds.box_files[i]) and train_ds.labels[i] for i in range(len(train_ds)))),
            "history": history, "cpu_s": round(float(state["cpu_s"]), 1), "wall_s": round(float(state["wall_s"]), 1),
            "torch_threads": torch.get_num_threads(), "cpus": json.loads(state.get("cpus", "[]"))}
    (fold_dir / "fold.json").write_text(json.dumps(meta, indent=2) + "\n")
    if len(oof):
        oof.to_csv(fold_dir / "oof.csv", index=False)
    return oof


def publish(name: str, fold: int, fold_dir: Path, results_root: Path = RESULTS_ROOT, bootstrap: int = 1000) -> Path:
    """Copy a finished fold's OOF CSV and JSON into the committed results folder, with its fold metrics."""
    from benchmarks.metrics import binary_report

    target = results_root / name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fold_dir / "oof.csv", target / f"fold{fold}_oof.csv")
    meta = json.loads((fold_dir / "fold.json").read_text())
    oof = pd.read_csv(fold_dir / "oof.csv")
    meta["fold_metrics"] = binary_report(oof["label"], oof["probability"], groups=oof["group"].to_numpy(),
                                        bootstrap=bootstrap)
    meta["fold_metrics"]["threshold_note"] = "Youden's J on this fold (optimistic); use benchmarks.fracatlas_oof"
    (target / f"fold{fold}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="recipe name: folder under benchmarks/out/cv and results")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--cache-dir", type=Path, default=Path("benchmarks/out/cache"))
    parser.add_argument("--folds-to-run", default="0,1,2,3,4", help="comma-separated fold numbers, in order")
    parser.add_argument("--full-fit", action="store_true",
                        help="after the folds, train on every usable image (benchmarks/out/cv/NAME/full/model.pt)")
    parser.add_argument("--checkpoint-steps", type=int, default=20, help="also checkpoint every N steps (0: epochs only)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (augmentation)")
    parser.add_argument("--threads", type=int, default=2)
    for field, default in asdict(Recipe()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if not (args.data / "labels.csv").is_file():
        parser.error(f"no labels.csv under {args.data}: point --data at the FracAtlas folder")
    recipe = Recipe(**{k: getattr(args, k) for k in asdict(Recipe())})
    frame, images = load_cache(args.data, recipe.size, args.cache_dir, workers=args.threads)
    usable = usable_frame(frame, args.data)
    logger.info("%d of %d images usable (%d rejected by the reader)", len(usable), len(frame), len(frame) - len(usable))
    for fold in [int(f) for f in args.folds_to_run.split(",") if f.strip()]:
        fold_dir = OUT_ROOT / args.name / f"fold{fold}"
        if (RESULTS_ROOT / args.name / f"fold{fold}_oof.csv").is_file() and not (fold_dir / "oof.csv").is_file():
            logger.info("fold %d already published under %s: skipped", fold, RESULTS_ROOT / args.name)
            continue
        if not (fold_dir / "oof.csv").is_file():
            train_fold(recipe, usable, images, fold, fold_dir, args.checkpoint_steps, args.workers)
        target = publish(args.name, fold, fold_dir)
        logger.info("fold %d finished: %s", fold, target)
    full_dir = OUT_ROOT / args.name / "full"
    if args.full_fit and not (full_dir / "fold.json").is_file():
        train_fold(recipe, usable, images, FULL_FIT, full_dir, args.checkpoint_steps, args.workers)
        logger.info("full fit finished: %s", full_dir / "model.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
