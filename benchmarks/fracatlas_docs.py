"""Regenerate the out-of-fold (OOF) tables of docs/validation.md from the committed results files.

    .venv/bin/python -m benchmarks.fracatlas_docs lite0_320_box0.2 [--check]

The tables between ``<!-- generated: NAME (benchmarks.fracatlas_docs) -->`` and
``<!-- end generated: NAME -->`` are rewritten from ``benchmarks/results/fracatlas_cv/RECIPE/``
(``summary.json``, ``summary_tta.json``, ``foldK.json``, ``fullfit_check.json``), so that the figures a reader sees are
the ones the files hold as folds are added. ``--check`` changes nothing and exits 1 when a table
is stale (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.fracatlas_oof import RESULTS_ROOT, fold_metas, markdown_row

DOC = Path("docs/validation.md")
MIN_POSITIVES = 10  # fewest fractured images for a region's ROC-AUC to be shown
#: The issue's targets: (label, summary getter, threshold, higher is better).
TARGETS = (
    ("ROC-AUC", lambda s: s["pooled"]["roc_auc"], 0.95, True),
    ("sensitivity at specificity 0.80", lambda s: s["pooled"]["sensitivity_at_specificity_0.80"], 0.90, True),
    ("no-hardware ROC-AUC", lambda s: s["without_hardware"]["roc_auc"], 0.93, True),
    ("ECE (10 bins)", lambda s: s["pooled"]["ece"], 0.05, False),
)


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"  # None or NaN


def _ci(entry: dict) -> str:
    ci = entry.get("roc_auc_ci95")
    return f"{_f(entry['roc_auc'])} ({_f(ci[0])}–{_f(ci[1])})" if ci and entry["roc_auc"] is not None else _f(
        entry["roc_auc"])


def headline(summary: dict, tta: dict | None, folds: int) -> str:
    """Pooled OOF figures against the targets."""
    p, spread = summary["pooled"], summary["fold_roc_auc"]
    present = summary["folds_present"]
    scope = (f"all {folds} folds" if summary["complete"]
             else f"{len(present)} of {folds} folds ({', '.join(map(str, present))}); not yet cross-validated")
    point = summary.get("screening_point")
    rows = [f"Pooled over {scope}: {p['n']:,} images, {p['positives']} fractured.", "",
            "| figure | pooled OOF | target | met |", "|---|---|---|---|"]
    for label, get, target, higher in TARGETS:
        value = get(summary)
        met = "–" if value is None else ("yes" if (value >= target if higher else value <= target) else "no")
        shown = _ci(p) if label == "ROC-AUC" else (_ci(summary["without_hardware"]) if label.startswith("no-hardware")
                                                    else _f(value))
        rows.append(f"| {label} | {shown} | {'≥' if higher else '≤'} {target:.2f} | {met} |")
    sd = "" if spread["sd"] is None else f" ± {spread['sd']:.3f}"
    rows += [f"| fold ROC-AUC, mean{' ± sd' if sd else ''} (min–max) | {spread['mean']:.3f}{sd} "
             f"({spread['min']:.3f}–{spread['max']:.3f}) | | |",
             f"| PR-AUC | {_f(p['pr_auc'])} | | |",
             f"| sensitivity at specificity 0.90 | {_f(p['sensitivity_at_specificity_0.90'])} | | |",
             f"| threshold (Youden's J on the pooled OOF probabilities) | {p['threshold']:.3f}: sensitivity "
             f"{_f(p['sensitivity'])}, specificity {_f(p['specificity'])} (chosen on these images: optimistic) | | |"]
    if point and point["threshold"] is not None:
        rows.append(f"| screening point (lowest threshold with specificity ≥ {point['specificity_target']:.2f}) | "
                    f"{point['threshold']:.3f}: sensitivity {_f(point['sensitivity'])}, specificity "
                    f"{_f(point['specificity'])} (also chosen on these images) | | |")
    if tta:
        rows.append(f"| with a left-right flip average (`probability_tta`) | ROC-AUC {_ci(tta['pooled'])} | | |")
    return "\n".join(rows)


def per_fold(summary: dict, metas: list[dict]) -> str:
    """Each fold on its own, at a threshold chosen on the other folds' OOF probabilities."""
    cpu = {int(m["fold"]): m.get("cpu_s") for m in metas}
    models = {int(m["fold"]): ", ".join(m.get("cpus") or ["not recorded"]) for m in metas}
    rows = ["| fold | images | fractured | ROC-AUC | PR-AUC | sens. @ spec. 0.80 | ECE | threshold from the other folds: "
            "value, sensitivity / specificity | CPU min | on |", "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for fold, entry in sorted(summary["per_fold"].items(), key=lambda kv: int(kv[0])):
        other = ("–" if "threshold_from_other_folds" not in entry else
                 f"{entry['threshold_from_other_folds']:.3f}: {_f(entry['sensitivity_at_other_folds_threshold'])} / "
                 f"{_f(entry['specificity_at_other_folds_threshold'])}")
        minutes = cpu.get(int(fold))
        rows.append(f"| {fold} | {entry['n']} | {entry['positives']} | {_f(entry['roc_auc'])} | {_f(entry['pr_auc'])} | "
                    f"{_f(entry.get('sensitivity_at_specificity_0.80'))} | {_f(entry['ece'])} | {other} | "
                    f"{'–' if minutes is None else f'{minutes / 60:.0f}'} | {models.get(int(fold), '–')} |")
    return "\n".join(rows)


def regions(summary: dict) -> str:
    """Per body region and without hardware, at the pooled OOF threshold."""
    rows = ["| subset | images | fractured | ROC-AUC (95% CI) | sensitivity | specificity | ECE |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    subsets = [*sorted(summary["by_region"].items()), ("**without hardware**", summary["without_hardware"])]
    for name, e in subsets:
        sens = _f(e["sensitivity"]) if e["positives"] else "–"
        spec = _f(e["specificity"]) if e["n"] > e["positives"] else "–"
        # a ROC-AUC from a handful of fractures is noise with a degenerate interval: not shown
        auc = _ci(e) if e["positives"] >= MIN_POSITIVES else f"– ({e['positives']} fractured: too few)"
        rows.append(f"| {name} | {e['n']} | {e['positives']} | {auc} | {sens} | {spec} | {_f(e['ece'])} |")
    return "\n".join(rows)


def fullfit(check: dict, summary: dict) -> str:
    """What can be compared of the shipped full fit and the fold networks (``fullfit_check.json``)."""
    if check["folds_present"] != summary["folds_present"] or abs(check["threshold"] - summary["pooled"]["threshold"]) > 1e-6:
        raise ValueError("fullfit_check.json was written for other folds or another threshold than summary.json: "
                         "rerun benchmarks.fracatlas_fullfit_check after benchmarks.ship_fracatlas --info-only")
    losses = check["training_loss"]
    rows = ["| network | images it trained on | last-epoch loss (box loss) | fold's images called positive at "
            f"{check['threshold']:.3f} | Spearman with the fold network there | ROC-AUC there |",
            "|---|---|---|---|---|---|"]
    full = losses["full_fit"]
    rows.append(f"| shipped full fit | all | {_f(full['loss'])} ({_f(full['box_loss'])}) | see each fold | | "
                "training-set figures, not results |")
    for fold, entry in sorted(check["per_fold"].items(), key=lambda kv: int(kv[0])):
        loss = losses["folds"].get(fold, {})
        rows.append(f"| fold {fold} network | the other folds | {_f(loss.get('loss'))} ({_f(loss.get('box_loss'))}) | "
                    f"{entry['called_positive_fold_network']} of {entry['images']} ({entry['fractured']} fractured); "
                    f"full fit: {entry['called_positive_full_fit']} | "
                    f"{_f(entry['spearman_full_fit_vs_fold_network'], 2)} | "
                    f"{_f(entry['fold_network_roc_auc_out_of_fold'])} out of fold; full fit "
                    f"{_f(entry['full_fit_roc_auc_training_images'])} (trained on them) |")
    return "\n".join(rows)


def blocks(recipe: str, results: Path) -> dict[str, str]:
    folder = results / recipe
    summary = json.loads((folder / "summary.json").read_text())
    tta_file = folder / "summary_tta.json"
    tta = json.loads(tta_file.read_text()) if tta_file.is_file() else None
    if tta and tta["folds_present"] != summary["folds_present"]:
        tta = None  # pooled over other folds: not comparable
    metas = fold_metas(folder)
    folds = summary["recipe"]["folds"] if summary.get("recipe") else 5
    recipe_table = "\n".join([
        "| recipe | folds | pooled ROC-AUC (95% CI) | fold ROC-AUC mean ± sd | PR-AUC | sens. @ spec. 0.80 | "
        "sens. @ spec. 0.90 | ECE | no-hardware ROC-AUC | CPU min |", "|---|---|---|---|---|---|---|---|---|---|",
        markdown_row(f"`{recipe}`", summary, summary.get("cpu_s"))])
    check_file = folder / "fullfit_check.json"
    check = fullfit(json.loads(check_file.read_text()), summary) if check_file.is_file() else "(not run yet)"
    return {"oof-headline": headline(summary, tta, folds), "oof-recipe": recipe_table, "fullfit-check": check,
            "oof-folds": per_fold(summary, metas),
            "oof-regions": regions(summary)}


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with every generated block replaced; a block named in the page but not generated is an error."""
    pattern = re.compile(r"(<!-- generated: (?P<name>[\w-]+) \(benchmarks\.fracatlas_docs\) -->\n)(?P<body>.*?)"
                         r"(<!-- end generated: (?P=name) -->)", re.S)

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in generated:
            raise KeyError(f"{DOC}: no generator for block {name!r}")
        return f"{match.group(1)}{generated[name]}\n{match.group(4)}"

    found = [m.group("name") for m in pattern.finditer(text)]
    missing = sorted(set(generated) - set(found))
    if missing:  # a deleted or misspelt marker would otherwise leave a table silently stale
        raise ValueError(f"generated block(s) {missing} not found (each needs its begin and end marker)")
    return pattern.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe name (folder under benchmarks/results/fracatlas_cv)")
    parser.add_argument("--results", type=Path, default=RESULTS_ROOT)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale; write nothing")
    args = parser.parse_args(argv)
    text = args.doc.read_text()
    updated = render(text, blocks(args.recipe, args.results))
    if args.check:
        if updated != text:
            print(f"{args.doc} is stale: run python -m benchmarks.fracatlas_docs {args.recipe}", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        args.doc.write_text(updated)
        print(f"rewrote the generated tables of {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
