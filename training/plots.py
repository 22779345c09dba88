"""PNG result grids: input / ground truth / prediction per task for a few samples (Figure 6 of
the MBMT-Net paper), drawn with matplotlib's Agg backend (no display needed).

Every panel is coloured by :mod:`mbmt_ros.imaging.colorize`, the module the perception node
uses for its colour topics, so a grid and rviz show the same colours: segmentation with the
dataset's class palette (void black), depth with the one depth colour map (``inferno``, near
bright) over a range shared by ground truth and prediction per sample (invalid black), normals
as RGB = (n + 1) / 2 (invalid black). Each row's depth prediction carries a colour bar in metres
(the same ``DEPTH_COLORMAP`` table, so the bar is exactly the panel's colours) and a legend
below the grid names the classes that appear in its segmentation panels.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.imaging.colorize import (
    DEPTH_COLORMAP,
    class_ids,
    colorize_depth,
    colorize_normals,
    colorize_segmentation,
    palette_lut,
)
from mbmt_ros.io import atomic_path
from mbmt_ros.tasks import DEPTH, NO_PREDICTION, SEGMENTATION, TASKS, default_palette

__all__ = ["save_result_grid"]


#: a panel: title, RGB image, and the (min, max) depth range of a depth prediction (its bar)
_Panel = tuple[str, np.ndarray, "tuple[float, float] | None"]


def _panels(sample: Mapping[str, Any], tasks: Sequence[str],
            palette: Sequence[Sequence[int]]) -> list[_Panel]:
    panels: list[_Panel] = [("input", np.asarray(sample["rgb"], dtype=np.uint8), None)]
    for task in tasks:
        gt, pred = sample.get(f"gt_{task}"), sample.get(f"pred_{task}")
        ref = gt if gt is not None else pred
        for label, array in ((f"{task} GT", gt), (f"{task} pred", pred)):
            if array is not None:
                image, span = _draw(task, array, ref, palette)
                panels.append((label, image, span if array is pred else None))
    return panels


def _depth_range(ref: np.ndarray) -> tuple[float, float]:
    valid = ref[np.isfinite(ref) & (ref > 0)]
    return (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)


def _draw(task: str, array: np.ndarray, ref: np.ndarray, palette: Sequence[Sequence[int]]
          ) -> tuple[np.ndarray, tuple[float, float] | None]:
    if task == SEGMENTATION:
        return colorize_segmentation(array, palette_lut(palette)), None
    if task == DEPTH:  # GT and prediction share the GT's colour range
        lo, hi = _depth_range(np.asarray(ref))
        depth = np.asarray(array).reshape(np.shape(array)[-2:])  # (H, W) or (1, H, W)
        return colorize_depth(depth, max_depth=hi, min_depth=lo), (lo, hi)
    return colorize_normals(array), None


def _classes_shown(samples: Sequence[Mapping[str, Any]]) -> list[int]:
    """The class ids present in any segmentation panel (void / no prediction left out)."""
    seen: set[int] = set()
    for sample in samples:
        for key in (f"gt_{SEGMENTATION}", f"pred_{SEGMENTATION}"):
            if sample.get(key) is not None:
                seen.update(int(i) for i in np.unique(class_ids(sample[key])))
    return sorted(i for i in seen if i != NO_PREDICTION)


def _depth_colorbar(fig: Any, ax: Any, span: tuple[float, float]) -> None:
    """A colour bar in metres beside ``ax``, drawn from :data:`DEPTH_COLORMAP` as
    ``colorize_depth`` applies it (near bright: the table reversed over [min, max])."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    cmap = ListedColormap(DEPTH_COLORMAP[::-1].astype(np.float32) / 255.0)
    bar = fig.colorbar(ScalarMappable(Normalize(*span), cmap), ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    bar.set_label("m", fontsize=6)


def save_result_grid(path: str | Path, samples: Sequence[Mapping[str, Any]],
                     tasks: Sequence[str] = TASKS, palette: Sequence[Sequence[int]] | None = None,
                     num_classes: int = 13, title: str | None = None,
                     class_names: Sequence[str] | None = None) -> Path:
    """Write one PNG: a row per sample with input, then GT and prediction for each task,
    a depth colour bar per row and a legend of the classes shown (``class_names``, default
    NYU13 names for 13 classes, else ``class_<k>``).

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
                name, img, span = panels[c]
                ax.imshow(img, interpolation="nearest")
                if r == 0:
                    ax.set_title(name, fontsize=8)
                if span is not None:
                    _depth_colorbar(fig, ax, span)
    if title:
        fig.suptitle(title, fontsize=9)
    shown = _classes_shown(samples) if SEGMENTATION in tasks else []
    legend_h = 0.0
    if shown:
        from matplotlib.patches import Patch

        from training.data.manifest import default_class_names

        names = list(class_names or default_class_names(max(num_classes, len(palette))))
        handles = [Patch(facecolor=np.asarray(palette[i], dtype=float) / 255.0,
                         edgecolor="none", label=names[i] if i < len(names) else f"class_{i}")
                   for i in shown if i < len(palette)]
        ncol = min(len(handles), 7)
        legend_h = min(0.3, (0.12 + 0.1 * -(-len(handles) // ncol)) / fig.get_figheight())
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0.0, legend_h, 1.0, 1.0))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
