"""Training curves: ``<stage>/curves.png`` drawn from ``<stage>/logs/metrics.csv``.

One panel for the losses (training loss per epoch, validation loss) and one per task for the
validation metrics :data:`CURVE_METRICS` (the ones :class:`training.lightning_module.MultiTaskModule`
logs every epoch), each against the epoch. Drawn with matplotlib's Agg backend (no display)
and written atomically. The CSV is the record; the PNG is redrawn from it at the end of every
training, so a resumed run's curves include the epochs before the interruption.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from mbmt_ros.io import atomic_path
from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION, TASKS
from training.errors import DataError

__all__ = ["CURVE_METRICS", "LOSS_COLUMNS", "metric_column", "read_metrics", "save_curves",
           "CURVES_FILE"]

CURVES_FILE = "curves.png"

#: The validation metrics logged every epoch and drawn, per task (``training.metrics`` keys).
CURVE_METRICS: dict[str, tuple[str, ...]] = {
    SEGMENTATION: ("miou", "pixel_acc"),
    DEPTH: ("abs_err", "rel_err", "rmse"),
    NORMALS: ("mean", "median"),
}
_UNITS = {SEGMENTATION: "%", DEPTH: "m / ratio", NORMALS: "degrees"}

#: The loss columns drawn in the first panel.
LOSS_COLUMNS = ("train/loss_epoch", "val/loss")


def metric_column(task: str, key: str) -> str:
    """The logged name (CSV column, TensorBoard tag) of a validation metric."""
    return f"val/{task}/{key}"


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(epoch, value), ...]}`` sorted by epoch, one value per epoch (the last row
    logged for it: a resumed run may repeat an epoch); empty cells are skipped."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise DataError(f"cannot read the metric log {path} ({exc})") from exc
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        try:
            epoch = int(float(row.get("epoch") or "nan"))
        except ValueError:
            continue
        for column, text in row.items():
            if column in ("epoch", "step") or not text:
                continue
            try:
                value = float(text)
            except ValueError:
                continue
            if math.isfinite(value):
                series.setdefault(column, {})[epoch] = value
    return {c: sorted(v.items()) for c, v in series.items()}


def save_curves(csv_path: str | Path, png_path: str | Path, title: str | None = None) -> Path | None:
    """Draw the loss and validation-metric curves of ``csv_path`` into ``png_path``; returns
    the PNG's path, or None when the log holds no epoch-level value yet."""
    series = read_metrics(csv_path)
    panels: list[tuple[str, str, list[str]]] = []
    losses = [c for c in LOSS_COLUMNS if c in series]
    if losses:
        panels.append(("loss", "", losses))
    for task in TASKS:
        columns = [metric_column(task, k) for k in CURVE_METRICS[task]
                   if metric_column(task, k) in series]
        if columns:
            panels.append((task, _UNITS[task], columns))
    if not panels:
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(3.6 * len(panels), 3.0))
    for ax, (name, unit, columns) in zip(axes[0], panels, strict=True):
        for column in columns:
            epochs, values = zip(*series[column], strict=True)
            ax.plot(epochs, values, marker="o", markersize=3, label=column.rsplit("/", 1)[-1]
                    if name != "loss" else column)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return png_path
