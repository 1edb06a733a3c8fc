"""The comparison as one self-contained HTML file.

The table and notes (the same content as the md/csv/json formats), then matplotlib
figures inlined as base64 PNG: training and test curves of every column overlaid (mean
over seeds, shaded ± std), and per column the confusion matrix (pooled over seeds), the
per-class test accuracy (mean ± std over seeds) and a grid of sample test predictions
captioned "True: x, Pred: y" with wrong ones in red. No scripts, no external URLs.
The figures are the TensorBoard plugin's (:mod:`cifarfw_tensorboard.figures`), so both
show the same pictures.
"""

from __future__ import annotations

import base64
import html
import sys
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cifarfw.runs import RunEntry
from cifarfw_compare.compare import LEGEND, Column, Comparison, rows_of
from cifarfw_tensorboard import figures

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table.compare { border-collapse: collapse; font-size: 0.9rem; }
table.compare th, table.compare td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
table.compare thead th { background: #f0f0f0; }
table.compare tbody th { background: #fafafa; font-weight: 600; white-space: nowrap; }
td.study { color: #555; font-style: italic; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; }
figcaption { font-size: 0.85rem; color: #444; max-width: 40rem; }
img { max-width: 100%; height: auto; }
.missing { color: #a00; }
.verdict { display: block; font-size: 0.75rem; color: #555; }
.verdict-better { color: #060; font-weight: 600; }
.verdict-worse { color: #a00; font-weight: 600; }
h3 { overflow-wrap: anywhere; }
"""


def _png(fig: Any) -> str:
    data, _, _ = figures.png_bytes(fig)
    figures.pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(src: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{html.escape(alt)}"><figcaption>{html.escape(caption, quote=False)}</figcaption></figure>'


def class_names(record: dict[str, Any], count: int) -> list[str]:
    """The dataset's class names: recorded ones, else the known datasets', else ``class i``."""
    dataset = record.get("dataset") or {}
    names = dataset.get("class_names")
    if isinstance(names, list) and len(names) >= count:
        return [str(n) for n in names]
    name = dataset.get("name")
    if name == "cifar10":
        from cifarfw_cifar10.cifar10 import CLASS_NAMES

        known: Sequence[str] = CLASS_NAMES
    elif name == "synthetic":
        from cifarfw.data.synthetic import CLASS_NAMES as known
    else:
        known = ()
    if len(known) >= count:
        return list(known)
    return [f"class {i}" for i in range(count)]


def load_predictions(entry: RunEntry) -> dict[str, np.ndarray] | None:
    """predictions.npz of a run (labels, predictions, images), or None when absent or unreadable
    (then with a warning: the report is still written, that run's pictures left out)."""
    path = entry.dir / "predictions.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in ("labels", "predictions", "images") if k in data.files}
        if "labels" not in out or "predictions" not in out or len(out["labels"]) != len(out["predictions"]):
            raise ValueError("labels and predictions missing or of different lengths")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        print(f"warning: {path} cannot be read ({type(err).__name__}); its pictures are left out", file=sys.stderr)
        return None
    return out


def _curves(columns: Sequence[Column]) -> str | None:
    """Loss and accuracy against epoch, every column overlaid (train solid, test dashed).

    The legend sits below both plots, outside them (constrained layout makes room), one
    entry per column and one per line style, so it never covers a curve whatever the
    number of columns or the length of their labels."""
    plt = figures.pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=80, layout="constrained")
    drawn = False
    handles = []
    for index, column in enumerate(columns):
        colour = f"C{index % 10}"
        handles.append(Line2D([], [], color=colour, marker="o", markersize=3, label=figures.wrap(column.label, 60)))
        for ax, metric in ((axes[0], "loss"), (axes[1], "acc")):
            for split, style in (("train", "-"), ("test", "--")):
                key = f"{split}_{metric}"
                by_epoch: dict[int, list[float]] = {}
                for entry in column.runs:
                    for epoch in entry.record.get("epochs") or []:
                        if isinstance(epoch.get(key), int | float):
                            by_epoch.setdefault(int(epoch["epoch"]), []).append(float(epoch[key]))
                if not by_epoch:
                    continue
                xs = sorted(by_epoch)
                scale = 100.0 if metric == "acc" else 1.0
                mean = np.array([np.mean(by_epoch[x]) for x in xs]) * scale
                std = np.array([np.std(by_epoch[x], ddof=1) if len(by_epoch[x]) > 1 else 0.0 for x in xs]) * scale
                ax.plot(xs, mean, style, color=colour, marker="o", markersize=3)
                if std.any():
                    ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.15)
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_title("loss (mean over seeds)")
    axes[1].set_title("accuracy % (mean over seeds)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles += [
        Line2D([], [], color="0.3", linestyle=style, label=split) for split, style in (("train", "-"), ("test", "--"))
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8, frameon=False)
    return _png(fig)


def _per_class_figure(accuracies: np.ndarray, names: Sequence[str], title: str) -> Any:
    """Bars of per-class test accuracy: mean over seeds, error bars ± std."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=80)
    mean = accuracies.mean(axis=0) * 100
    std = accuracies.std(axis=0, ddof=1) * 100 if len(accuracies) > 1 else None
    ax.bar(range(len(names)), mean, yerr=std, capsize=3, color="C0")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy %")
    ax.set_title(figures.wrap(title, 60), fontsize=10)  # a long column label wraps, never clipped
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _column_section(column: Column) -> str:
    parts = [f"<section><h3>{html.escape(column.label)}</h3>"]
    loaded = [(e, p) for e in column.runs if (p := load_predictions(e)) is not None]
    if not loaded:
        parts.append('<p class="missing">No predictions.npz in these runs: no confusion matrix or samples.</p>')
        return "".join(parts) + "</section>"
    count = int(max(max(p["labels"].max(), p["predictions"].max()) for _, p in loaded)) + 1
    names = class_names(loaded[0][0].record, count)
    count = len(names)
    matrices = [figures.confusion_matrix(p["labels"], p["predictions"], count) for _, p in loaded]
    pooled = np.sum(matrices, axis=0)
    seeds = f"{len(loaded)} run{'s' * (len(loaded) > 1)}"
    fig = figures.confusion_figure(pooled, names, f"{column.label}: confusion ({seeds})")
    parts.append(
        _img(
            _png(fig),
            f"confusion matrix of {column.label}",
            f"Confusion matrix, counts pooled over {seeds}; rows are true classes.",
        )
    )
    per_class = np.array([np.diag(m) / m.sum(axis=1).clip(min=1) for m in matrices])
    fig = _per_class_figure(per_class, names, f"{column.label}: per-class test accuracy")
    parts.append(
        _img(
            _png(fig),
            f"per-class accuracy of {column.label}",
            f"Per-class test accuracy, mean over {seeds}" + (" (error bars: ± std)." if len(loaded) > 1 else "."),
        )
    )
    entry, predictions = loaded[0]
    images = predictions.get("images")
    if images is not None and len(images):
        shown = len(images)
        labels, guesses = predictions["labels"][:shown], predictions["predictions"][:shown]
        wrong = int((labels != guesses).sum())
        fig = figures.prediction_grid(images, labels, guesses, names)
        caption = (
            f"Sample test predictions of run {entry.id} (seed {entry.record.get('seed', '?')}): "
            f'"True: x, Pred: y"; wrong ones in red ({wrong} of {shown}).'
        )
        parts.append(_img(_png(fig), f"sample predictions of {column.label}", caption))
    else:
        parts.append('<p class="missing">No sample images recorded (prediction_samples = 0).</p>')
    return "".join(parts) + "</section>"


def _verdict(key: str, column: Column) -> str:
    """Beside a column's test accuracy: its verdict against the reference (Welch's t-test)."""
    if key != "test_acc" or not column.vs_reference:
        return ""
    verdict = str(column.vs_reference.get("verdict", ""))
    kind = verdict if verdict in ("better", "worse", "reference") else "none"
    title = html.escape(column.cells.get("vs_reference", verdict))
    return f'<span class="verdict verdict-{kind}" title="{title}">{html.escape(verdict)}</span>'


def to_html(table: Comparison) -> str:
    """The whole report as one HTML document."""
    rows = rows_of(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = []
    for (key, _), row in zip(table.rows, rows[1:], strict=True):
        cells = "".join(
            ('<td class="study">' if column.kind == "study" else "<td>")
            + html.escape(text)
            + _verdict(key, column)
            + "</td>"
            for column, text in zip(table.columns, row[1:], strict=True)
        )
        body.append(f'<tr data-row="{key}"><th>{html.escape(row[0])}</th>{cells}</tr>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    run_columns = table.run_columns
    sections = []
    curves = _curves(run_columns) if run_columns else None
    if curves is not None:
        sections.append("<h2>Training and test curves</h2>")
        sections.append(
            _img(
                curves,
                "training and test curves",
                "Loss and accuracy per epoch, mean over seeds (shaded: ± std); training solid, test dashed.",
            )
        )
    if run_columns:
        sections.append("<h2>Per column: confusion matrix, per-class accuracy, sample predictions</h2>")
        sections.extend(_column_section(c) for c in run_columns)
    source = f"<p>Runs under {html.escape(table.runs_root)}.</p>" if table.runs_root else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>cifarfw comparison</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>cifarfw comparison</h1>\n{source}\n"
        f'<table class="compare">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table>\n"
        f'<p>{html.escape(LEGEND)}</p>\n<ul class="notes">{notes}</ul>\n' + "\n".join(sections) + "\n</body>\n</html>\n"
    )
