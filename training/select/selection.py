"""``select_frames``: rank a dataset's frames without segmentation ground truth and pick the
next ones to label (the library side of ``mbmt-train select``)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.tasks import SEGMENTATION
from training.data.layout import detect_layout
from training.data.manifest import open_manifest
from training.data.sample import GT
from training.errors import DataError
from training.labeling.frames import Frame
from training.select.score import check_bundle, score_frames
from training.select.strategies import select

__all__ = ["Selection", "select_frames"]


@dataclass
class Selection:
    """The chosen frames (pick order) with their uncertainty, and what they were chosen from."""

    frames: list[Frame]
    uncertainty: list[float]
    candidates: int
    labelled: int
    mean_uncertainty: float


def select_frames(root: str | Path, predictor: Any, budget: int, strategy: str, seed: int = 0,
                  split: str = "train", manifest: str | Path | None = None,
                  pool_factor: float = 3.0,
                  progress: Callable[[Iterable[Any]], Iterable[Any]] = iter) -> Selection:
    """Choose ``budget`` frames of ``split`` that lack ground-truth segmentation.

    The candidates are scored with ``predictor`` (:mod:`training.select.score`); frames that
    already have ground truth are scored too when a strategy measures diversity, so that new
    picks are far from what is labelled.
    """
    man = open_manifest(root, manifest)
    check_bundle(predictor, man, getattr(getattr(predictor, "bundle", None), "path", "bundle"))
    layout = detect_layout(root, man.label_folder)
    entries = man.entries(split)
    if not entries:
        raise DataError(f"{root}: the manifest lists no {split} frames")
    candidates = [Frame(e.split, e.index) for e in entries if e.labels.get(SEGMENTATION) != GT]
    labelled = [Frame(e.split, e.index) for e in entries if e.labels.get(SEGMENTATION) == GT]
    if not candidates:
        raise DataError(f"{root}: every {split} frame already has ground-truth segmentation; "
                        "nothing left to select")
    needs_labelled = strategy in ("diversity", "hybrid") and labelled
    scores = score_frames(predictor, layout, candidates + (labelled if needs_labelled else []),
                          man.num_classes, progress)
    n = len(candidates)
    centers = scores.features[n:] if needs_labelled else None
    picks = select(strategy, scores.uncertainty[:n], scores.features[:n], budget, seed,
                   centers, pool_factor)
    return Selection([candidates[i] for i in picks],
                     [float(scores.uncertainty[i]) for i in picks], n, len(labelled),
                     float(np.mean(scores.uncertainty[:n])))
