"""Hit rates with bootstrap CIs per heatmap recipe from ``benchmarks.localisation_sweep``'s ``sweep.json``.

    .venv/bin/python -m benchmarks.localisation_report benchmarks/out/localisation_sweep/sweep.json \
        --out docs/validation/localisation_sweep.json

For every recipe: the pointing-game hit rate with the peak strictly inside a box and within 5% /
10% of the long side (95% percentile bootstrap over images), the mean and median share of the map's
energy inside the boxes, and the paired bootstrap difference of the 10% hit rate against the
shipped recipe (same images, resampled together). Prints a Markdown table sorted by the 10% hit
rate; ``--out`` keeps the figures as JSON (small: no per-image rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.localisation import bootstrap_ci
from benchmarks.localisation_sweep import PREVIOUS, SHIPPED

TOLERANCES = (0.0, 0.05, 0.1)


def passes(recipe: str) -> float:
    """Network passes per heatmap, in units of one forward and backward pass at the model's input size."""
    if recipe == "occlusion":
        return float("nan")  # forward passes only, hundreds of them (benchmarks.occlusion_check)
    units = 4.0 if ",x2" in recipe else 1.0
    return units * (2 if ",flip" in recipe else 1)


def recipe_table(sweep: dict, reference: str, occlusion: dict | None = None) -> list[dict]:
    """One row per recipe, in the sweep's order."""
    rows = sweep["images"]
    recipes = [r for r in sweep["recipes"] if all(r in row for row in rows)]
    table = []
    for recipe in recipes:
        outside = np.array([row[recipe]["outside"] for row in rows])
        energy = np.array([row[recipe]["energy"] for row in rows])
        entry = {"recipe": recipe, "n": len(rows), "passes": passes(recipe),
                 "energy_mean": round(float(energy.mean()), 4), "energy_median": round(float(np.median(energy)), 4),
                 "energy_mean_ci95": bootstrap_ci(energy)}
        for tolerance in TOLERANCES:
            hits = outside <= tolerance
            entry[f"hit_{tolerance}"] = round(float(hits.mean()), 4)
            entry[f"hit_{tolerance}_ci95"] = bootstrap_ci(hits)
        reference_hits = np.array([row[reference]["outside"] <= 0.1 for row in rows])
        entry["minus_reference_hit_0.1_ci95"] = bootstrap_ci((outside <= 0.1).astype(float) - reference_hits)
        table.append(entry)
    return table


CHOICE_RULE = ("the highest hit rate within 10% of the long side among one-pass recipes scoring batches "
               "(Grad-CAM or LayerCAM, no flip, no x2); ties: strictly inside, then energy in the boxes")


def choose_recipe(table: list[dict]) -> dict:
    """The recipe a model ships with (``CHOICE_RULE``, fixed before the box-guided model's sweep was read)."""
    from benchmarks.localisation import parse_recipe
    from monai_fracture.model.gradcam import BATCHED_METHODS

    def one_pass_batched(recipe: str) -> bool:
        if recipe in ("occlusion", "default"):
            return False
        settings = parse_recipe(recipe)
        return (settings["heatmap_method"] in BATCHED_METHODS and not settings["heatmap_flip"]
                and settings["heatmap_scale"] == 1.0)

    eligible = [e for e in table if one_pass_batched(e["recipe"])]
    if not eligible:
        raise ValueError("no one-pass batched recipe in the sweep")
    return max(eligible, key=lambda e: (e["hit_0.1"], e["hit_0.0"], e["energy_mean"]))


def with_occlusion(sweep: dict, occlusion: dict, recipes: list[str]) -> dict:
    """The sweep restricted to the images ``benchmarks.occlusion_check`` covered, its ``occlusion`` row added.

    Each recipe also gets ``to_occlusion``: the distance from its peak to the occlusion peak (fraction of the long side).
    """
    by_path = {row["path"]: row for row in sweep["images"]}
    rows = []
    for occ in occlusion["images"]:
        if occ["path"] not in by_path:
            continue
        row = {**by_path[occ["path"]], "occlusion": occ["occlusion"]}
        for recipe in recipes:
            row[recipe] = {**row[recipe], "to_occlusion": round(float(
                np.hypot(*np.subtract(row[recipe]["peak"], occ["occlusion"]["peak"]))) / max(row["shape"]), 4)}
        rows.append(row)
    return {**sweep, "recipes": ["occlusion", *recipes], "images": rows}


def markdown(table: list[dict], reference: str) -> str:
    lines = ["| recipe | passes | strictly inside [95% CI] | within 5% | within 10% [95% CI] "
             f"| 10% minus `{reference}` [95% CI] | energy in boxes, mean (median) |",
             "|---|---|---|---|---|---|---|"]
    for e in sorted(table, key=lambda e: (-e["hit_0.1"], -e["hit_0.0"], e["passes"])):
        lines.append(
            f"| `{e['recipe']}` | {'n/a' if np.isnan(e['passes']) else format(e['passes'], 'g')} | {e['hit_0.0']:.2f} [{e['hit_0.0_ci95'][0]:.2f}, {e['hit_0.0_ci95'][1]:.2f}]"
            f" | {e['hit_0.05']:.2f} | {e['hit_0.1']:.2f} [{e['hit_0.1_ci95'][0]:.2f}, {e['hit_0.1_ci95'][1]:.2f}]"
            f" | {e['minus_reference_hit_0.1_ci95'][0]:+.2f} to {e['minus_reference_hit_0.1_ci95'][1]:+.2f}"
            f" | {e['energy_mean']:.3f} ({e['energy_median']:.3f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--reference", default=SHIPPED,
                        help="the recipe paired differences are taken against (default: the shipped one)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--occlusion", type=Path, help="benchmarks.occlusion_check's JSON: also a table on its images")
    parser.add_argument("--beside-occlusion", nargs="+", default=[SHIPPED, PREVIOUS, "gradcam@last"],
                        help="recipes set beside occlusion on its images")
    args = parser.parse_args(argv)
    sweep = json.loads(args.sweep.read_text())
    table = recipe_table(sweep, args.reference)
    rows = sweep["images"]
    header = {"model": sweep.get("model"), "checkpoint": sweep.get("checkpoint"), "threshold": sweep.get("threshold"),
              "true_positives": len(rows), "self_check": sweep.get("self_check"),
              "mean_box_area_fraction": round(float(np.mean([r["box_area_fraction"] for r in rows])), 5)}
    if rows and "checkpoint_probability" in rows[0]:
        header["checkpoint_mean_probability"] = round(float(np.mean([r["checkpoint_probability"] for r in rows])), 4)
    try:
        chosen = choose_recipe(table)["recipe"]
    except ValueError as err:  # a sweep of other recipes only: the figures still stand
        chosen = None
        print(f"no recipe chosen: {err}")
    figures = {**header, "rule": CHOICE_RULE, "chosen": chosen, "recipes": table}
    print(json.dumps(header))
    print(markdown(table, args.reference))
    if chosen:
        print(f"chosen by the rule ({CHOICE_RULE}): {chosen}")
    if args.occlusion is not None:
        occlusion = json.loads(args.occlusion.read_text())
        subset = with_occlusion(sweep, occlusion, args.beside_occlusion)
        occ_table = recipe_table(subset, args.reference)
        for entry in occ_table:
            if entry["recipe"] != "occlusion":
                entry["to_occlusion_median"] = round(float(np.median(
                    [row[entry["recipe"]]["to_occlusion"] for row in subset["images"]])), 4)
        figures["occlusion"] = {"settings": occlusion.get("settings"), "images": len(subset["images"]),
                                "recipes": occ_table}
        print(f"\nOn the {len(subset['images'])} images occlusion covered ({occlusion.get('settings')}):")
        print(markdown(occ_table, args.reference))
        print("median distance of each peak to the occlusion peak (long side):",
              {e["recipe"]: e["to_occlusion_median"] for e in occ_table if "to_occlusion_median" in e})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
