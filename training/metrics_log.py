"""The per-epoch metric record of a training: ``<stage>/logs/metrics.csv`` (Lightning's CSV logger).

Lightning's :class:`~lightning.pytorch.loggers.CSVLogger` deletes an existing ``metrics.csv``
when it starts, so a resumed training would lose the curves of its first epochs.
:class:`ResumableCSVLogger` keeps the file (and its columns) when the training resumes its
checkpoint and starts a new one otherwise; a header change (a new column) rewrites the file
atomically. A resumed run may repeat the epochs after its last checkpoint: readers
(:func:`training.curves.read_metrics`) keep the last row per epoch.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mbmt_ros.io import atomic_path

__all__ = ["ResumableCSVLogger", "METRICS_FILE"]

#: the file name Lightning's CSV logger writes
METRICS_FILE = ExperimentWriter.NAME_METRICS_FILE


class _Writer(ExperimentWriter):
    """Lightning's CSV writer that appends to an existing file instead of deleting it."""

    def __init__(self, log_dir: str, append: bool) -> None:
        self._append = append
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if not self._append:
            path.unlink()
            return
        with path.open(newline="", encoding="utf-8") as f:
            self.metrics_keys = list(next(csv.reader(f), []))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="",
                                                              encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/<name>/metrics.csv``; ``append=True`` (a resumed
    training) keeps the rows already there."""

    def __init__(self, save_dir: str | os.PathLike[str], name: str = "logs",
                 append: bool = False, **kwargs: Any) -> None:
        super().__init__(str(save_dir), name=name, version="", **kwargs)
        self._append = bool(append)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _Writer(self.log_dir, append=self._append)
        return self._experiment
