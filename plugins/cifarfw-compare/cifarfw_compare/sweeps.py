"""``cifarfw compare --sweep NAME``: the comparison of one sweep, a column per parameter
combination (mean ± std over its seeds), sorted by a metric, the best column marked.

It builds the ordinary comparison (:func:`cifarfw_compare.compare.build`) from the sweep's
run records, then names, orders and marks its columns by the records' ``sweep.params``;
every format works as for any comparison, and JSON adds ``columns[i].params``, ``best``
and ``sweep``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from typing import Any

from cifarfw.errors import RunDirError, UsageError
from cifarfw.metrics import BY_NAME
from cifarfw.runs import FINISHED, RunEntry, final_metrics, select_runs
from cifarfw.suggest import did_you_mean
from cifarfw_compare import compare

BEST = "★ best"


def sweep_entries(runs_root: str, name: str) -> list[RunEntry]:
    """The runs whose record says they belong to sweep ``name``."""
    entries = [e for e in select_runs(runs_root) if (e.record.get("sweep") or {}).get("name") == name]
    if not entries:
        raise RunDirError(f"no runs of sweep {name!r} under {runs_root}; `cifarfw runs --sweep {name}` lists them")
    return entries


def params_of(column: compare.Column) -> dict[str, Any]:
    return dict((column.runs[0].record.get("sweep") or {}).get("params") or {}) if column.runs else {}


def _label(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "-"


def build(runs_root: str, name: str, metric: str = "test_acc") -> compare.Comparison:
    """The comparison of sweep ``name``: columns sorted by ``metric`` (best first, and the
    reference every other column is tested against), the best marked."""
    if metric not in BY_NAME:
        raise UsageError(f"--metric: unknown metric {metric!r}{did_you_mean(metric, BY_NAME)}")
    entries = sweep_entries(runs_root, name)
    better = 1.0 if BY_NAME[metric].higher_is_better else -1.0
    values: dict[str, list[float]] = {}
    for entry in entries:
        value = final_metrics(entry.record).get(metric) if entry.status == FINISHED else None
        if isinstance(value, int | float) and math.isfinite(value):
            values.setdefault(str(entry.record.get("group")), []).append(float(value))
    means = {group: statistics.fmean(v) for group, v in values.items()}
    # The comparison makes its columns in the order their groups first appear.
    entries.sort(key=lambda e: -better * means.get(str(e.record.get("group")), -better * math.inf))
    best = min(means, key=lambda g: -better * means[g]) if means else None
    table = compare.build(entries, runs_root=runs_root, reference=best)
    for column in table.columns:
        column.label = _label(params_of(column)) + ("" if column.status == FINISHED else f" [{column.status}]")
        if best is not None and column.status == FINISHED and column.group == best:
            column.label += f" {BEST}"
    combos = {json.dumps(params_of(c), sort_keys=True) for c in table.columns}
    table.notes.insert(0, f"Sweep {name}: {len(combos)} combinations, sorted by {metric} ({BEST} marked).")
    return table


def to_json(table: compare.Comparison, name: str, metric: str) -> str:
    """The comparison's JSON plus each column's ``params``, the ``best`` flag and the sweep."""
    data = compare.to_dict(table)
    data["sweep"] = {"name": name, "metric": metric}
    for column, out in zip(table.columns, data["columns"], strict=True):
        out["params"] = params_of(column)
        out["best"] = column.label.endswith(BEST)
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
