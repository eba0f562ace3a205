"""One self-contained HTML page for a scoring run: counts, ROC (with labels), thumbnails, results table.

Self-contained means one file a radiologist can mail or open from a share: no scripts, no
external fonts or images; thumbnails are PNG data URIs and the ROC curve is inline SVG. A
Content-Security-Policy forbids any other source, so a page that tried to fetch something
would show it as a console error (which the tests check for). Every value from a file or
tag is escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_fracture.files import atomic_write_bytes

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.note{color:#555;max-width:60em} .warn{color:#8a4b00}
table{border-collapse:collapse;font-size:12px} th,td{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.positive td{background:#fff1ec} tr.failed td{background:#f3f3f3;color:#777}
.counts td{font-size:14px} .thumbs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:220px} figure img{width:220px;height:auto;background:#000;display:block}
figcaption{font-size:11px;word-break:break-all}
"""


@dataclass(frozen=True)
class Thumbnail:
    """A uint8 RGB (rows, cols, 3) image shown with a caption (the heatmap overlay of one input)."""

    path: str
    rgb: np.ndarray
    probability: float
    label: int | None = None


@dataclass
class ReportContent:
    """What the page shows; ``rows`` are results.csv rows (column -> text)."""

    rows: Sequence[Mapping[str, str]]
    title: str = "Fracture classification report"
    model: str = ""
    threshold: float | None = None
    labels: Mapping[str, int] | None = None  # results.csv path -> 0/1
    thumbnails: Sequence[Thumbnail] = ()
    notes: Sequence[str] = field(default_factory=list)


def png_data_uri(rgb: np.ndarray, max_side: int = 256) -> str:
    """PNG data URI of a uint8 RGB image, shrunk so its longer side is at most ``max_side``."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def roc_points(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates and the area under the curve (scikit-learn's definitions)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr, float(roc_auc_score(labels, scores))


def roc_svg(fpr: np.ndarray, tpr: np.ndarray, auc: float, point: tuple[float, float] | None = None, size: int = 320) -> str:
    """The ROC curve as inline SVG; ``point`` = (FPR, TPR) at the decision threshold."""
    pad = 36
    span = size - 2 * pad

    def xy(x: float, y: float) -> str:
        return f"{pad + x * span:.1f},{pad + (1.0 - y) * span:.1f}"

    curve = " ".join(xy(x, y) for x, y in zip(fpr, tpr))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" '
        f'aria-label="ROC curve, AUC {auc:.3f}">',
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="#fff" stroke="#999"/>',
        f'<polyline points="{xy(0, 0)} {xy(1, 1)}" fill="none" stroke="#bbb" stroke-dasharray="4 3"/>',
        f'<polyline points="{curve}" fill="none" stroke="#c0392b" stroke-width="2"/>',
        f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle" font-size="12">1 - specificity</text>',
        f'<text x="12" y="{size / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 12 {size / 2})">'
        "sensitivity</text>",
        f'<text x="{pad + span - 6}" y="{pad + span - 8}" text-anchor="end" font-size="13">AUC {auc:.3f}</text>',
    ]
    if point is not None:
        cx, cy = xy(*point).split(",")
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="#2c3e50"><title>decision threshold</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _counts(rows: Sequence[Mapping[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {"scored": 0, "skipped": 0, "failed": 0}
    positives = 0
    for row in rows:
        counts[row.get("status", "")] = counts.get(row.get("status", ""), 0) + 1
        positives += row.get("prediction") == "1"
    counts["positive"] = positives
    return counts


def _roc_section(content: ReportContent) -> str:
    if not content.labels:
        return '<p class="note">No labels given (<code>--labels CSV</code>): no ROC curve.</p>'
    pairs = [
        (content.labels[row["path"]], float(row["probability"]))
        for row in content.rows
        if row.get("status") == "scored" and row.get("path") in content.labels and row.get("probability")
    ]
    labels = [label for label, _ in pairs]
    if len(set(labels)) < 2:
        return f'<p class="warn">ROC needs both classes among the labelled scored images; found {len(pairs)} ' \
               f"labelled, classes {sorted(set(labels))}.</p>"
    scores = [score for _, score in pairs]
    fpr, tpr, auc = roc_points(labels, scores)
    point = None
    text = ""
    if content.threshold is not None:
        truth = np.asarray(labels)
        decided = np.asarray(scores) >= content.threshold
        sensitivity = float(decided[truth == 1].mean())
        specificity = float((~decided[truth == 0]).mean())
        point = (1.0 - specificity, sensitivity)
        text = (f"At the decision threshold {content.threshold:g}: sensitivity {sensitivity:.3f}, "
                f"specificity {specificity:.3f}.")
    return (
        roc_svg(fpr, tpr, auc, point)
        + f'<p class="note">ROC-AUC {auc:.3f} over {len(pairs)} labelled scored images '
        f"({sum(labels)} with fracture, {len(labels) - sum(labels)} without). {text}</p>"
    )


def _thumbnail_section(content: ReportContent) -> str:
    if not content.thumbnails:
        return '<p class="note">No thumbnails (no scored radiograph with a heatmap).</p>'
    figures = []
    for thumb in content.thumbnails:
        label = "" if thumb.label is None else f", label {thumb.label}"
        name = os.path.basename(thumb.path.rstrip("/")) or thumb.path
        figures.append(
            f'<figure><img src="{png_data_uri(thumb.rgb)}" alt="Grad-CAM overlay of {_esc(name)}">'
            f"<figcaption>P(fracture) {thumb.probability:.3f}{label}<br>{_esc(thumb.path)}</figcaption></figure>"
        )
    return '<div class="thumbs">' + "".join(figures) + "</div>"


def _table(content: ReportContent) -> str:
    labelled = content.labels is not None
    head = ["path", "status", "reason", "probability", "prediction"] + (["label"] if labelled else [])
    lines = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in content.rows:
        css = "positive" if row.get("prediction") == "1" else ("failed" if row.get("status") == "failed" else "")
        cells = [
            f"<td>{_esc(row.get('path'))}</td>",
            f"<td>{_esc(row.get('status'))}</td>",
            f"<td>{_esc(row.get('reason'))}</td>",
            f'<td class="num">{_esc(row.get("probability"))}</td>',
            f'<td class="num">{_esc(row.get("prediction"))}</td>',
        ]
        if labelled:
            cells.append(f'<td class="num">{_esc(content.labels.get(row.get("path", ""), ""))}</td>')
        lines.append(f'<tr class="{css}">' + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def render_html_report(content: ReportContent) -> str:
    """The whole page as text."""
    counts = _counts(content.rows)
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    count_cells = "".join(f"<td>{_esc(k)} <b>{v}</b></td>" for k, v in counts.items())
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in content.notes)
    threshold = "" if content.threshold is None else f", decision threshold {content.threshold:g}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_esc(content.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_esc(content.title)}</h1>"
        f'<p class="note">Model {_esc(content.model)}{_esc(threshold)}; generated {generated}. '
        "Research software, not a medical device: every result awaits a reader.</p>"
        f"{notes}"
        f'<table class="counts"><tr>{count_cells}</tr></table>'
        f"<h2>ROC</h2>{_roc_section(content)}"
        f"<h2>Highest P(fracture), with Grad-CAM heatmaps</h2>{_thumbnail_section(content)}"
        f"<h2>All inputs ({len(content.rows)})</h2>{_table(content)}"
        "</body></html>\n"
    )


def write_html_report(path: str | os.PathLike, content: ReportContent) -> Path:
    """Write the page atomically (temporary file + rename) and return its path."""
    target = Path(path)
    atomic_write_bytes(target, render_html_report(content).encode("utf-8"))
    return target
