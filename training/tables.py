"""Comparison tables across runs (MBMT-Net paper Tables 5/6 style) as markdown and CSV.

One row per run, one column per metric of the tasks present (arrows say which direction is
better), and Delta_m in percent against the single-task baselines (``training.metrics.delta_m``,
the MTI-Net / LibMTL definition) where baselines are given.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mbmt_ros.tasks import TASKS
from training.errors import MbmtError
from training.metrics import LOWER_IS_BETTER, METRIC_KEYS, delta_m

__all__ = ["TableRow", "table_columns", "markdown_table", "csv_table", "row_delta_m"]

_SHORT = {"miou": "mIoU", "pixel_acc": "Pix Acc", "abs_err": "Abs Err", "rel_err": "Rel Err",
          "rmse": "RMSE", "log_rmse": "log RMSE", "delta1": "δ1", "delta2": "δ2", "delta3": "δ3",
          "mean": "Mean", "median": "Median", "within_11_25": "11.25°", "within_22_5": "22.5°",
          "within_30": "30°"}
_TASK_SHORT = {"segmentation": "Seg", "depth": "Depth", "normals": "Normal"}


@dataclass
class TableRow:
    """One run: its label, a short description (architecture, data) and nested metrics."""

    name: str
    metrics: Mapping[str, Mapping[str, float]]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def table_columns(rows: Sequence[TableRow],
                  keys: Mapping[str, Sequence[str]] | None = None) -> list[tuple[str, str]]:
    """(task, metric) columns that any row has a value for, in canonical order."""
    keys = keys or METRIC_KEYS
    return [(t, m) for t in TASKS for m in keys[t]
            if any(m in r.metrics.get(t, {}) for r in rows)]


def row_delta_m(row: TableRow, baseline: Mapping[str, Mapping[str, float]] | None) -> float | None:
    """Delta_m of ``row`` vs ``baseline`` (None when no baseline or it cannot be computed)."""
    if not baseline:
        return None
    metrics = {t: v for t, v in row.metrics.items() if t in baseline}
    try:
        return delta_m(metrics, baseline)
    except MbmtError:
        return None


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _header(columns: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for task, metric in columns:
        arrow = "↓" if LOWER_IS_BETTER[task][metric] else "↑"
        out.append(f"{_TASK_SHORT[task]} {_SHORT.get(metric, metric)} {arrow}")
    return out


def markdown_table(rows: Sequence[TableRow],
                   baseline: Mapping[str, Mapping[str, float]] | None = None,
                   keys: Mapping[str, Sequence[str]] | None = None, digits: int = 4) -> str:
    """A GitHub-markdown table; Delta_m (%) in the last column when ``baseline`` is given."""
    columns = table_columns(rows, keys)
    header = ["Run", "Description", *_header(columns)] + (["Δm % ↑"] if baseline else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row.name, row.description]
        cells += [_fmt(row.metrics.get(t, {}).get(m), digits) for t, m in columns]
        if baseline:
            cells.append(_fmt(row_delta_m(row, baseline), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[TableRow],
              baseline: Mapping[str, Mapping[str, float]] | None = None,
              keys: Mapping[str, Sequence[str]] | None = None) -> str:
    """The same table as CSV with machine-readable headers (``task.metric``, ``delta_m``)."""
    columns = table_columns(rows, keys)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "description", *[f"{t}.{m}" for t, m in columns], "delta_m"])
    for row in rows:
        dm = row_delta_m(row, baseline)
        writer.writerow([row.name, row.description,
                         *[row.metrics.get(t, {}).get(m, "") for t, m in columns],
                         "" if dm is None else dm])
    return buf.getvalue()
