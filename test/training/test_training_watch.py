"""Training you can watch: per-epoch validation metrics (metrics.csv + TensorBoard), curve PNGs,
a quiet console with a complete stage log, progress bars, and result grids with a depth colour
bar and a class legend."""
from __future__ import annotations

import csv
import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_budget import ENV, SMALL

ROOT = Path(__file__).resolve().parents[2]

VAL_COLUMNS = ["val/segmentation/miou", "val/segmentation/pixel_acc", "val/depth/abs_err",
               "val/depth/rel_err", "val/depth/rmse", "val/normals/mean", "val/normals/median"]


@pytest.mark.slow
def test_training_stage_logs_metrics_draws_curves_and_keeps_console_quiet(tmp_path):
    """One tiny training stage through the CLI: an MBMT-Net with frozen backbones (so Lightning
    warns about modules in eval mode) trained for one epoch."""
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "training.cli", "train-mt", "--config", "config/train/tiny.yaml",
         "--run-dir", str(run), *SMALL, "--set", "stages.mt.model.arch=mbmt"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    stage = run / "mt"

    # every validation metric is a column of metrics.csv, with a value for epoch 0
    with (stage / "logs" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for column in VAL_COLUMNS + ["val/loss", "train/loss_epoch"]:
        values = [float(r[column]) for r in rows if r.get(column)]
        assert values and all(np.isfinite(values)), column
    assert 0.0 <= float(next(r["val/segmentation/miou"] for r in rows
                             if r["val/segmentation/miou"])) <= 100.0
    # ... and a TensorBoard scalar
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(stage / "logs"))
    events.Reload()
    assert set(VAL_COLUMNS) <= set(events.Tags()["scalars"])

    from PIL import Image

    with Image.open(stage / "curves.png") as img:
        assert img.format == "PNG" and img.size[0] > img.size[1]

    # the console is quiet; the stage's log file keeps what was kept off it
    log = (stage / "stage.log").read_text(encoding="utf-8")
    for line in ("💡 Tip", "module(s) in eval mode", "GPU available"):
        assert line not in console, line
        assert line in log, line
    assert "stage 'mt' (train-mt): done" in console  # our own INFO lines still show


def test_resumed_training_appends_to_metrics_csv(tmp_path):
    from training.metrics_log import METRICS_FILE, ResumableCSVLogger

    def epoch(append: bool, values: dict[str, float]) -> None:
        logger = ResumableCSVLogger(tmp_path, append=append)
        logger.log_metrics(values, step=1)
        logger.save()

    epoch(False, {"epoch": 0, "val/loss": 2.0})
    epoch(True, {"epoch": 1, "val/loss": 1.5, "val/depth/rmse": 0.7})  # resumed, a new column
    with (tmp_path / "logs" / METRICS_FILE).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["val/loss"], r["val/depth/rmse"]) for r in rows] == [
        ("0", "2.0", ""), ("1", "1.5", "0.7")]

    from training.curves import read_metrics, save_curves

    assert read_metrics(tmp_path / "logs" / METRICS_FILE)["val/loss"] == [(0, 2.0), (1, 1.5)]
    assert save_curves(tmp_path / "logs" / METRICS_FILE, tmp_path / "c.png").is_file()

    epoch(False, {"epoch": 0, "val/loss": 3.0})  # training afresh: a new file
    with (tmp_path / "logs" / METRICS_FILE).open(newline="") as f:
        assert [r["val/loss"] for r in csv.DictReader(f)] == ["3.0"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    from training.progress import progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress(range(3), desc="x").disable  # not a terminal

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    root = logging.getLogger()
    console = logging.StreamHandler(terminal)  # the CLI's console handler, alone on the root
    monkeypatch.setattr(root, "handlers", [console])
    monkeypatch.setattr(root, "level", logging.INFO)
    bar = progress(range(3), desc="synth", delay=0)
    assert not bar.disable
    assert list(bar) == [0, 1, 2] and "synth" in terminal.getvalue()
    console.setLevel(logging.WARNING)  # what mbmt-train -q does (training.console.quiet_console)
    assert progress(range(3), desc="x").disable


def test_console_filter_keeps_the_file_complete(tmp_path):
    from training.console import ConsoleFilter, stage_log_file

    console = io.StringIO()
    handler = logging.StreamHandler(console)
    handler.addFilter(ConsoleFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with stage_log_file(tmp_path / "stage.log"):
            logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: no")
            logging.getLogger("lightning.pytorch.utilities.rank_zero").warning("real trouble")
            logging.getLogger("py.warnings").warning(
                "fit_loop.py:538: Found 3 module(s) in eval mode at the start of training.")
            logging.getLogger("training.x").info("💡 Tip: For seamless cloud uploads")
            logging.getLogger("training.x").info("epoch done")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    shown = console.getvalue()
    assert "real trouble" in shown and "epoch done" in shown
    assert "GPU available" not in shown and "eval mode" not in shown and "Tip" not in shown
    log = (tmp_path / "stage.log").read_text(encoding="utf-8")
    for text in ("GPU available", "real trouble", "eval mode", "Tip", "epoch done"):
        assert text in log


def test_result_grid_has_depth_colour_bar_and_class_legend(tmp_path):
    from PIL import Image

    from mbmt_ros.imaging.colorize import DEPTH_COLORMAP
    from mbmt_ros.tasks import default_palette
    from training.plots import save_result_grid

    seg = np.zeros((24, 32), np.int64)
    seg[:, 16:] = 4  # classes 0 and 4 appear; the others do not
    sample = {"rgb": np.full((24, 32, 3), 128, np.uint8), "gt_segmentation": seg,
              "pred_segmentation": seg, "gt_depth": np.full((24, 32), 2.0),
              "pred_depth": np.full((24, 32), 2.0)}
    path = save_result_grid(tmp_path / "grid.png", [sample], tasks=["segmentation", "depth"])
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(v) for v in p) for p in np.unique(pixels, axis=0)}
    # the depth panels are one colour each: the many inferno shades are the colour bar's
    assert len(colours & {tuple(int(v) for v in c) for c in DEPTH_COLORMAP}) > 50
    # the legend below the panels shows the classes present (a second band of their colour,
    # apart from the segmentation panels), not the others
    with Image.open(path) as img:
        image = np.asarray(img.convert("RGB"))
    palette = default_palette(13)

    def bands(colour) -> int:
        rows = np.flatnonzero((image == np.asarray(colour)).all(-1).any(1))
        return 0 if rows.size == 0 else 1 + int((np.diff(rows) > 1).sum())

    assert bands(palette[0]) >= 2 and bands(palette[4]) >= 2
    assert bands(palette[7]) == 0
