"""The evaluation's outputs: a self-contained HTML report (table, plots, sample grid), the
comparison grid PNG and the per-method CSV that DVC plots."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from facectx.evaluation.paper import PAPER_COLUMNS, PAPER_ROWS, PAPER_SOURCE
from facectx.io_utils import atomic_path, png_bytes, write_png

COLUMNS = [
    ("identity_match", "identity match ↑"),
    ("verified", "verified ↑"),
    ("ssim", "SSIM ↑"),
    ("ssim_context", "SSIM context ↑"),
    ("psnr", "PSNR ↑"),
    ("psnr_context", "PSNR context ↑"),
    ("fd", "FD ↓"),
    ("c2st_auc", "two-sample AUC (0.5 = real) ↓"),
    ("c2st_auc_sd", "± sd"),
    ("perceptual", "perceptual ↓"),
]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def comparison_grid(outputs: dict[str, np.ndarray], test, count: int) -> np.ndarray:
    """One row per photo: masked input, each method's output, the original."""
    size = test.target.shape[1]
    count = min(count, len(test.target))
    rows = [
        np.concatenate([test.masked[size][i], *(o[i] for o in outputs.values()), test.target[i]], axis=1)
        for i in range(count)
    ]
    return np.concatenate(rows, axis=0)


def _bar_chart(summary: dict, metric: str, title: str) -> bytes:
    names = [n for n, v in summary.items() if metric in v]
    # A Figure of its own (no pyplot): renders with Agg, whatever backend the process has chosen.
    fig = Figure(figsize=(7, 0.45 * len(names) + 1))
    ax = fig.subplots()
    ax.barh(names, [summary[n][metric] for n in names], color="#4a7bb7")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _fmt(value) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def results_table_html(result: dict) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS)
    rows = []
    for name, values in result["methods"].items():
        cells = "".join(f"<td>{_fmt(values.get(key))}</td>" for key, _ in COLUMNS)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f'<table id="results"><tr><th>method</th>{head}</tr>{"".join(rows)}</table>'


def paper_table_html() -> str:
    head = "".join(f"<th>{c}</th>" for c in PAPER_COLUMNS)
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td>{''.join(f'<td>{_fmt(v)}</td>' for v in vals)}</tr>"
        for n, vals in PAPER_ROWS.items()
    )
    return f'<table id="paper"><tr><th>method</th>{head}</tr>{rows}</table>'


def write_report(out_dir: Path, result: dict, outputs: dict[str, np.ndarray], test, grid_photos: int) -> None:
    grid = comparison_grid(outputs, test, grid_photos)
    write_png(out_dir / "grid.png", grid)
    _write_plot_data(out_dir / "plots" / "metrics_by_method.csv", result)
    charts = "".join(
        f'<img alt="{key}" src="{_data_uri(_bar_chart(result["methods"], key, label))}">'
        for key, label in (
            ("fd", "Fréchet distance ↓"),
            ("identity_match", "identity match ↑"),
            ("perceptual", "perceptual distance ↓"),
            ("ssim", "SSIM ↑"),
        )
    )
    methods = " | ".join(["masked input", *outputs, "original"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>facectx evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
img{{max-width:100%;margin:4px}}.note{{color:#555;font-size:90%}}</style></head><body>
<h1>facectx evaluation</h1>
<p>{result["photos"]} test photos (identities disjoint from training). Identity matcher:
<b>{html.escape(result["matcher"])}</b>{"" if result["matcher_independent"] else " — <b>not independent of the identity loss</b>"}.
Verification threshold: {_fmt(result["threshold"])}. Fréchet distance: {html.escape(result["fd_network"])}.
Perceptual distance: {html.escape(result["perceptual_network"])}.</p>
<h2>Results on LFW</h2>{results_table_html(result)}
<p class="note">Trained models' weights: {html.escape(_weights_note(result))}.</p>
<p class="note">The row "{html.escape("real photos (val vs test)")}" is the Fréchet distance between two sets of real photos:
a method that fools the feature space would come close to it. The two-sample AUC is how well a classifier
({html.escape(result["two_sample_test"]["classifier"])}, {result["two_sample_test"]["folds"]} folds grouped by identity, on the
FD's features, {result["two_sample_test"]["n_per_side"] or "—"} photos a side) tells a method's outputs from real photos of
other people: 0.5 means it cannot. Pixels where the frame ran past the photo are the target's in every output and are left
out of SSIM and PSNR.</p>
<h2>The paper's figures</h2><p class="note">{html.escape(PAPER_SOURCE)}: another test set and other networks,
shown for reference only.</p>{paper_table_html()}
<h2>Plots</h2>{charts}
<h2>Samples</h2><p class="note">{html.escape(methods)}</p><img alt="grid" src="{_data_uri(png_bytes(grid))}">
</body></html>"""
    with atomic_path(out_dir / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")


WEIGHTS_MEANING = {
    "running": "batch-norm running statistics",
    "standing": "batch-norm statistics re-estimated after training",
    "ema": "moving average of the weights, with statistics re-estimated when the stage kept them",
}


def _weights_note(result: dict) -> str:
    """Which weights each trained model's row scored ("running" for reports made before the choice)."""
    weights = result.get("weights") or {}
    return "; ".join(f"{name}: {w} ({WEIGHTS_MEANING.get(w, w)})" for name, w in weights.items()) or "—"


def _write_plot_data(path: Path, result: dict) -> None:
    lines = ["method," + ",".join(key for key, _ in COLUMNS)]
    for name, values in result["methods"].items():
        lines.append(f'"{name}",' + ",".join("" if values.get(k) is None else f"{values[k]:.6g}" for k, _ in COLUMNS))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
