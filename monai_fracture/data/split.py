"""Group-aware, label-stratified, seeded splits (fractions or k folds).

Whole groups (patients, or near-duplicate groups) are assigned to a split at once, so a
patient never has images on both sides. Groups are placed largest first, each into the split
whose share of that group's majority label is furthest below its target: this keeps the class
balance of every split close to the whole set's, without any split ever sharing a group.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

SPLIT_KEYS = ("training", "validation", "test")


def assign_groups(
    labels: Sequence[int], groups: Sequence[str], fractions: Sequence[float], seed: int = 0
) -> np.ndarray:
    """Return, per item, the index of the part (0..len(fractions)-1) its whole group goes to."""
    if len(labels) != len(groups):
        raise ValueError(f"labels ({len(labels)}) and groups ({len(groups)}) differ in length")
    fractions = np.asarray(fractions, dtype=float)
    if np.any(fractions < 0) or fractions.sum() <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all zero, got {fractions.tolist()}")
    fractions = fractions / fractions.sum()
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[str(g)].append(i)
    labels_arr = np.asarray(labels, dtype=int)
    names = sorted(members)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    # largest groups first (hardest to place), ties in seeded random order
    order = sorted(order, key=lambda k: -len(members[names[k]]))
    total_pos = max(int(labels_arr.sum()), 1)
    total_neg = max(len(labels_arr) - int(labels_arr.sum()), 1)
    count_pos = np.zeros(len(fractions))
    count_neg = np.zeros(len(fractions))
    out = np.empty(len(labels_arr), dtype=int)
    active = fractions > 0
    for k in order:
        idx = members[names[k]]
        pos = int(labels_arr[idx].sum())
        neg = len(idx) - pos
        # deficit of the split after adding this group, relative to its targets for both classes
        fill = (count_pos + pos) / (fractions * total_pos + 1e-9) * pos + (count_neg + neg) / (
            fractions * total_neg + 1e-9
        ) * neg
        fill = np.where(active, fill, np.inf)
        part = int(np.argmin(fill))
        out[idx] = part
        count_pos[part] += pos
        count_neg[part] += neg
    return out


def split_items(
    items: Sequence[dict],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
) -> dict[str, list[dict]]:
    """Split datalist items (``image``, ``label``, ``group``) into training/validation/test.

    With ``num_folds``, a test part (``test_fraction``) is held out first with the same seed for
    every fold, the rest is cut into ``num_folds`` group folds, and ``fold`` is the validation one.
    """
    items = list(items)
    if not items:
        raise ValueError("cannot split an empty datalist")
    labels = [int(it["label"]) for it in items]
    groups = [str(it["group"]) for it in items]
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    out: dict[str, list[dict]] = {key: [] for key in SPLIT_KEYS}
    rest = list(range(len(items)))
    if test_fraction > 0:
        parts = assign_groups(labels, groups, [1.0 - test_fraction, test_fraction], seed)
        out["test"] = [items[i] for i in range(len(items)) if parts[i] == 1]
        rest = [i for i in range(len(items)) if parts[i] == 0]
    if num_folds is not None:
        if num_folds < 2:
            raise ValueError(f"num_folds must be >= 2, got {num_folds}")
        fold = 0 if fold is None else fold
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
        parts = assign_groups([labels[i] for i in rest], [groups[i] for i in rest], [1.0] * num_folds, seed + 1)
        for i, part in zip(rest, parts):
            item = dict(items[i], fold=int(part))
            out["validation" if part == fold else "training"].append(item)
    elif val_fraction > 0:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        share = val_fraction / (1.0 - test_fraction)
        parts = assign_groups([labels[i] for i in rest], [groups[i] for i in rest], [1.0 - share, share], seed + 1)
        for i, part in zip(rest, parts):
            out["validation" if part == 1 else "training"].append(items[i])
    else:
        out["training"] = [items[i] for i in rest]
    return out


def split_summary(datalist: dict[str, list[dict]]) -> list[dict]:
    """Per split: items, groups, positives, negatives and positive share (for logs and tables)."""
    rows = []
    for key in SPLIT_KEYS:
        part = datalist.get(key) or []
        pos = sum(int(it.get("label", 0)) == 1 for it in part if isinstance(it, dict))
        rows.append(
            {
                "split": key,
                "items": len(part),
                "groups": len({str(it.get("group")) for it in part if isinstance(it, dict)}),
                "fractured": pos,
                "not_fractured": len(part) - pos,
                "fractured_share": round(pos / len(part), 3) if part else 0.0,
            }
        )
    return rows


def format_summary(rows: list[dict]) -> str:
    """A small fixed-width table of ``split_summary`` rows."""
    header = f"{'split':<11}{'items':>7}{'groups':>8}{'fractured':>11}{'not_fract.':>11}{'share':>7}"
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['split']:<11}{r['items']:>7}{r['groups']:>8}{r['fractured']:>11}{r['not_fractured']:>11}"
            f"{r['fractured_share']:>7.3f}"
        )
    return "\n".join(lines)


def log_summary(datalist: dict[str, list[dict]]) -> None:
    for r in split_summary(datalist):
        logger.info(
            "%s: %d items, %d groups, %d fractured / %d not (%.1f%% fractured)",
            r["split"], r["items"], r["groups"], r["fractured"], r["not_fractured"], 100 * r["fractured_share"],
        )
