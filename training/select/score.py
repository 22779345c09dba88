"""Per-frame uncertainty and embedding from a model bundle's outputs.

Uncertainty is the mean over pixels of ``1 - segmentation_confidence`` (the bundle exposes the
top-class softmax probability, not the full distribution, so entropy is not available; the
"least confidence" score is its usual stand-in). The bundle exposes no pooled backbone
features either, so the embedding for diversity is a cheap one built from its predictions and
the image, three blocks each scaled to unit length so that they weigh the same:

- the predicted class histogram (share of pixels per class),
- a histogram of predicted depth over 8 log-spaced bins from 0.25 m to 16 m (if the bundle
  predicts depth),
- a 4x4 thumbnail of the image (mean colour of each cell),

so two frames of one corridor seen a moment apart land close together, and a frame of another
room far away.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.tasks import DEPTH
from training.data.layout import Layout, read_image, sample_path
from training.data.manifest import Manifest
from training.errors import DataError
from training.labeling.frames import Frame

__all__ = ["FrameScores", "check_bundle", "embedding", "score_frames"]

_DEPTH_EDGES = np.geomspace(0.25, 16.0, 9)[1:-1]  # 8 bins, open-ended at both ends
_THUMB = 4


@dataclass
class FrameScores:
    """Uncertainty (N,) and embedding (N, D) of ``frames``, in the same order."""

    frames: list[Frame]
    uncertainty: np.ndarray
    features: np.ndarray


def check_bundle(predictor: Any, manifest: Manifest, where: str | Path) -> None:
    """The bundle must predict segmentation with the dataset's classes."""
    if "segmentation" not in predictor.tasks:
        raise DataError(f"bundle {where} has no segmentation output (tasks "
                        f"{list(predictor.tasks)}); export a model with segmentation")
    if list(predictor.class_names) != list(manifest.class_names):
        raise DataError(f"bundle {where} predicts classes {list(predictor.class_names)} but the "
                        f"dataset has {list(manifest.class_names)}; use a model trained on "
                        "this dataset's classes")


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def embedding(rgb: np.ndarray, pred: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
    """The frame's embedding (see the module docstring), float64 (D,)."""
    seg = np.asarray(pred["segmentation"]).ravel()
    hist = np.bincount(seg[(seg >= 0) & (seg < num_classes)], minlength=num_classes)
    blocks = [_unit(hist.astype(np.float64))]
    if DEPTH in pred:
        d = np.asarray(pred[DEPTH], dtype=np.float64).ravel()
        d = d[np.isfinite(d) & (d > 0)]
        blocks.append(_unit(np.bincount(np.searchsorted(_DEPTH_EDGES, d),
                                        minlength=len(_DEPTH_EDGES) + 1).astype(np.float64)))
    h, w = rgb.shape[:2]
    ys = np.linspace(0, h, _THUMB + 1).astype(int)
    xs = np.linspace(0, w, _THUMB + 1).astype(int)
    thumb = [rgb[ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)]
             .reshape(-1, 3).mean(0) for i in range(_THUMB) for j in range(_THUMB)]
    blocks.append(_unit(np.concatenate(thumb) / 255.0))
    return np.concatenate(blocks)


def score_frames(predictor: Any, layout: Layout, frames: list[Frame], num_classes: int,
                 progress: Callable[[Iterable[Any]], Iterable[Any]] = iter) -> FrameScores:
    """Run the bundle on every frame: uncertainty and embedding of each."""
    unc = np.zeros(len(frames))
    feats: list[np.ndarray] = []
    for i, frame in enumerate(progress(frames)):
        rgb = read_image(sample_path(layout, frame.split, frame.index))
        pred = predictor.predict(rgb)
        unc[i] = float(np.mean(1.0 - np.asarray(pred["segmentation_confidence"], np.float64)))
        feats.append(embedding(rgb, pred, num_classes))
    dim = feats[0].shape[0] if feats else 0
    return FrameScores(list(frames), unc, np.stack(feats) if feats else np.zeros((0, dim)))
