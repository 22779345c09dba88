"""PNG result grids: input / ground truth / prediction per task for a few samples (Figure 6 of
the MBMT-Net paper), drawn with matplotlib's Agg backend (no display needed).

Every panel is coloured by :mod:`mbmt_ros.ros.colorize`, the module the perception node
uses for its colour topics, so a grid and rviz show the same colours: segmentation with the
dataset's class palette (void black), depth with the one depth colour map (``inferno``, near
bright) over a range shared by ground truth and prediction per sample (invalid black), normals
as RGB = (n + 1) / 2 (invalid black).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_path
from mbmt_ros.ros.colorize import (
    colorize_depth,
    colorize_normals,
    colorize_segmentation,
    palette_lut,
)
from mbmt_ros.tasks import DEPTH, SEGMENTATION, TASKS, default_palette

__all__ = ["save_result_grid"]


def _panels(sample: Mapping[str, Any], tasks: Sequence[str],
            palette: Sequence[Sequence[int]]) -> list[tuple[str, np.ndarray]]:
    panels = [("input", np.asarray(sample["rgb"], dtype=np.uint8))]
    for task in tasks:
        gt, pred = sample.get(f"gt_{task}"), sample.get(f"pred_{task}")
        ref = gt if gt is not None else pred
        for label, array in ((f"{task} GT", gt), (f"{task} pred", pred)):
            if array is not None:
                panels.append((label, _draw(task, array, ref, palette)))
    return panels


def _draw(task: str, array: np.ndarray, ref: np.ndarray,
          palette: Sequence[Sequence[int]]) -> np.ndarray:
    if task == SEGMENTATION:
        return colorize_segmentation(array, palette_lut(palette))
    if task == DEPTH:  # GT and prediction share the GT's colour range
        valid = ref[np.isfinite(ref) & (ref > 0)]
        lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
        depth = np.asarray(array).reshape(np.shape(array)[-2:])  # (H, W) or (1, H, W)
        return colorize_depth(depth, max_depth=hi, min_depth=lo)
    return colorize_normals(array)


def save_result_grid(path: str | Path, samples: Sequence[Mapping[str, Any]],
                     tasks: Sequence[str] = TASKS, palette: Sequence[Sequence[int]] | None = None,
                     num_classes: int = 13, title: str | None = None) -> Path:
    """Write one PNG: a row per sample with input, then GT and prediction for each task.

    A sample is a mapping with ``rgb`` (H, W, 3) uint8 and ``gt_<task>`` / ``pred_<task>`` in
    the prediction layout (segmentation (H, W) ids, depth (H, W) metres, normals (H, W, 3)).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = palette or default_palette(num_classes)
    tasks = [t for t in TASKS if t in tasks]
    rows = [_panels(s, tasks, palette) for s in samples]
    ncols = max(len(r) for r in rows)
    h, w = rows[0][0][1].shape[:2]
    fig, axes = plt.subplots(len(rows), ncols, squeeze=False,
                             figsize=(ncols * 2.2 * w / max(h, w) + 0.2, len(rows) * 2.2 * h / max(h, w) + 0.6))
    for r, panels in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(panels):
                name, img = panels[c]
                ax.imshow(img, interpolation="nearest")
                if r == 0:
                    ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
