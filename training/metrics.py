"""Dense-prediction metrics accumulated over a whole split (NumPy; torch tensors accepted).

The definitions are those of the project's DESIGN document (MTAN / MBMT-Net, plus rmse
and log-rmse from the imbalanced-data paper). Everything is **pooled over all valid pixels
of the split**: the meters keep a confusion matrix, running sums and (for the normal-angle
median) the per-pixel errors, never per-batch averages. MTAN averages depth and normal
metrics per batch, which makes its "median" a mean of medians; ours is the true median.

``compute()`` of each meter returns the keys below (percentages 0-100 where the papers
use percentages); :class:`MetricSuite` nests them per task, which is the layout of
``metrics.json``::

    {"segmentation": {"miou", "pixel_acc"},
     "depth": {"abs_err", "rel_err", "rmse", "log_rmse", "delta1", "delta2", "delta3"},
     "normals": {"mean", "median", "within_11_25", "within_22_5", "within_30"}}

A meter that has seen no valid pixel returns NaN for every key.

Memory: the exact normal median keeps one float32 angle per valid pixel (4 bytes; the
whole NYUv2 val split at 288x384 is 654 x 110,592 = 72 M pixels = at most 290 MB) and is
found by a two-level radix selection over the stored chunks, so no concatenated copy is
made. The stored float32 angle differs from the float64 one by < 1e-5 degrees.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION, TASKS, validate_tasks
from training.errors import ConfigError, DataError

__all__ = [
    "SegmentationMeter", "DepthMeter", "NormalsMeter", "MetricSuite", "delta_m",
    "LOWER_IS_BETTER", "METRIC_KEYS", "DELTA_M_METRICS", "to_numpy", "exact_median",
]

#: The metric keys each task reports, in table order.
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    SEGMENTATION: ("miou", "pixel_acc"),
    DEPTH: ("abs_err", "rel_err", "rmse", "log_rmse", "delta1", "delta2", "delta3"),
    NORMALS: ("mean", "median", "within_11_25", "within_22_5", "within_30"),
}

#: Direction of every metric: True where lower is better (``l_m = 1`` in Delta_m).
LOWER_IS_BETTER: dict[str, dict[str, bool]] = {
    SEGMENTATION: {"miou": False, "pixel_acc": False},
    DEPTH: {"abs_err": True, "rel_err": True, "rmse": True, "log_rmse": True,
            "delta1": False, "delta2": False, "delta3": False},
    NORMALS: {"mean": True, "median": True, "within_11_25": False, "within_22_5": False,
              "within_30": False},
}

#: The metrics Delta_m averages by default: those of the NYUv2 tables of MTAN, MBMT-Net
#: and LibMTL (depth abs/rel error only).
DELTA_M_METRICS: dict[str, tuple[str, ...]] = {
    SEGMENTATION: ("miou", "pixel_acc"),
    DEPTH: ("abs_err", "rel_err"),
    NORMALS: ("mean", "median", "within_11_25", "within_22_5", "within_30"),
}

_LOG_EPS = 1e-9
_DEPTH_THRESHOLDS = (1.25, 1.25**2, 1.25**3)
_ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy view/copy of an array or a (possibly CUDA, grad-tracking) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _check_same_shape(kind: str, pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise DataError(f"{kind}: prediction shape {pred.shape} != ground truth {gt.shape}")


class SegmentationMeter:
    """Confusion matrix over valid pixels (ground truth >= 0 and finite; -1 = void).

    ``miou``: mean IoU_c = TP/(TP+FP+FN) over the classes whose union TP+FP+FN is
    non-empty; ``pixel_acc``: correct / valid. Both in percent.
    """

    def __init__(self, num_classes: int) -> None:
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def count(self) -> int:
        """Valid pixels seen so far."""
        return int(self.confusion.sum())

    def update(self, pred: Any, gt: Any) -> None:
        """Add class-id predictions ``pred`` and labels ``gt`` of the same shape."""
        pred, gt = to_numpy(pred), to_numpy(gt)
        _check_same_shape("segmentation", pred, gt)
        if gt.dtype.kind == "f":
            valid = np.isfinite(gt) & (gt >= 0)
            gt_ids = np.where(valid, gt, 0).astype(np.int64)
        else:
            valid = gt >= 0
            gt_ids = gt.astype(np.int64)
        c = self.num_classes
        gt_ids = gt_ids[valid]
        pred_ids = pred[valid]
        if pred_ids.dtype.kind not in "iub":
            if not np.all(pred_ids == np.rint(pred_ids)):
                raise DataError("segmentation: predictions must be integer class ids")
        pred_ids = pred_ids.astype(np.int64)
        if gt_ids.size and int(gt_ids.max()) >= c:
            raise DataError(
                f"segmentation: ground-truth class {int(gt_ids.max())} is outside 0..{c - 1} "
                "(wrong number of classes?)"
            )
        if pred_ids.size and (int(pred_ids.min()) < 0 or int(pred_ids.max()) >= c):
            bad = int(pred_ids.min()) if int(pred_ids.min()) < 0 else int(pred_ids.max())
            raise DataError(
                f"segmentation: predicted class {bad} is outside 0..{c - 1} "
                "(wrong number of classes?)"
            )
        self.confusion += np.bincount(gt_ids * c + pred_ids, minlength=c * c).reshape(c, c)

    def compute(self) -> dict[str, float]:
        cm = self.confusion.astype(np.float64)
        total = cm.sum()
        if total == 0:
            return {"miou": math.nan, "pixel_acc": math.nan}
        tp = np.diag(cm)
        union = cm.sum(axis=0) + cm.sum(axis=1) - tp  # TP + FP + FN
        present = union > 0
        miou = float(np.mean(tp[present] / union[present])) * 100.0
        return {"miou": miou, "pixel_acc": float(tp.sum() / total) * 100.0}


class DepthMeter:
    """Running sums over valid pixels (ground truth > 0 and finite), metres.

    abs err = mean |p-g|; rel err = mean |p-g|/g; rmse = sqrt(mean (p-g)^2);
    log rmse = sqrt(mean (log g - log max(p, 1e-9))^2); delta_k = % of pixels with
    max(p/g, g/p) < 1.25^k, where the ratio uses max(p, 1e-9) like log rmse, so a
    non-positive prediction is never within a threshold.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sums = np.zeros(4, dtype=np.float64)  # abs, rel, sq, log sq
        self._within = np.zeros(3, dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> None:
        """Add predicted and ground-truth depth maps of the same shape."""
        pred, gt = to_numpy(pred), to_numpy(gt)
        _check_same_shape("depth", pred, gt)
        valid = np.isfinite(gt) & (gt > 0)
        p = pred[valid].astype(np.float64)
        g = gt[valid].astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise DataError(
                f"depth: {int(np.count_nonzero(~np.isfinite(p)))} non-finite predictions "
                "at valid pixels"
            )
        diff = np.abs(p - g)
        p_pos = np.maximum(p, _LOG_EPS)
        log_diff = np.log(g) - np.log(p_pos)
        ratio = np.maximum(p_pos / g, g / p_pos)
        self.count += int(g.size)
        self._sums += (diff.sum(), (diff / g).sum(), (diff**2).sum(), (log_diff**2).sum())
        self._within += [int(np.count_nonzero(ratio < t)) for t in _DEPTH_THRESHOLDS]

    def compute(self) -> dict[str, float]:
        n = self.count
        if n == 0:
            return dict.fromkeys(METRIC_KEYS[DEPTH], math.nan)
        abs_sum, rel_sum, sq_sum, log_sq_sum = self._sums
        d1, d2, d3 = (100.0 * w / n for w in self._within)
        return {
            "abs_err": float(abs_sum / n), "rel_err": float(rel_sum / n),
            "rmse": math.sqrt(sq_sum / n), "log_rmse": math.sqrt(log_sq_sum / n),
            "delta1": float(d1), "delta2": float(d2), "delta3": float(d3),
        }


def exact_median(chunks: Sequence[np.ndarray]) -> float:
    """The exact median of the non-negative float32 values in ``chunks`` (np.median rule).

    Non-negative IEEE floats order like their bit patterns, so a histogram of the top 16
    bits finds the bucket holding each middle rank exactly; only that bucket's values are
    then gathered and partitioned. No concatenated copy of all values is made.
    """
    n = sum(int(c.size) for c in chunks)
    if n == 0:
        return math.nan
    bits = [np.ascontiguousarray(c, dtype=np.float32).view(np.uint32) for c in chunks]
    hist = np.zeros(1 << 16, dtype=np.int64)
    for b in bits:
        hist += np.bincount(b >> 16, minlength=1 << 16)
    cum = np.cumsum(hist)

    def value_at(rank: int) -> float:
        bucket = int(np.searchsorted(cum, rank, side="right"))
        before = int(cum[bucket - 1]) if bucket else 0
        members = np.concatenate([b[(b >> 16) == bucket] for b in bits])
        return float(np.partition(members, rank - before)[rank - before].view(np.float32))

    lo, hi = (n - 1) // 2, n // 2
    return value_at(lo) if lo == hi else (value_at(lo) + value_at(hi)) / 2.0


class NormalsMeter:
    """Angle errors over valid pixels (ground truth not the zero vector, finite).

    err = degrees(arccos(clamp(p_hat . g, -1, 1))) with p_hat the normalised prediction;
    mean, true median over all valid pixels, and % of pixels with err < 11.25/22.5/30.
    ``axis`` is the vector axis of the arrays given to :meth:`update` (-1: ``(..., 3)``).
    A zero (or non-finite) prediction at a valid pixel has no direction: it counts as 90
    degrees (as if orthogonal) - documented, not silently dropped.
    """

    def __init__(self, axis: int = -1) -> None:
        self.axis = axis
        self.count = 0
        self._sum = 0.0
        self._within = np.zeros(3, dtype=np.int64)
        self._errors: list[np.ndarray] = []

    def update(self, pred: Any, gt: Any) -> None:
        """Add predicted and ground-truth normal maps of the same shape."""
        pred, gt = to_numpy(pred), to_numpy(gt)
        _check_same_shape("normals", pred, gt)
        if pred.shape[self.axis] != 3:
            raise DataError(f"normals: expected 3 components on axis {self.axis}, "
                            f"got shape {pred.shape}")
        p = np.moveaxis(pred, self.axis, -1).reshape(-1, 3).astype(np.float64)
        g = np.moveaxis(gt, self.axis, -1).reshape(-1, 3).astype(np.float64)
        valid = np.all(np.isfinite(g), axis=1) & np.any(g != 0, axis=1)
        p, g = p[valid], g[valid]
        norm = np.linalg.norm(p, axis=1)
        ok = np.isfinite(norm) & (norm > 0)
        cos = np.zeros(len(p))
        cos[ok] = np.sum(p[ok] * g[ok], axis=1) / norm[ok]
        err = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        self.count += int(err.size)
        self._sum += float(err.sum())
        self._within += [int(np.count_nonzero(err < t)) for t in _ANGLE_THRESHOLDS]
        if err.size:
            self._errors.append(err.astype(np.float32))

    def compute(self) -> dict[str, float]:
        n = self.count
        if n == 0:
            return dict.fromkeys(METRIC_KEYS[NORMALS], math.nan)
        w1, w2, w3 = (100.0 * w / n for w in self._within)
        return {
            "mean": self._sum / n, "median": exact_median(self._errors),
            "within_11_25": float(w1), "within_22_5": float(w2), "within_30": float(w3),
        }


class MetricSuite:
    """One meter per task; ``compute()`` gives the nested ``metrics.json`` dict.

    Two ways to feed it:

    - :meth:`update` with prediction-layout arrays per task (those of the ``score``
      ``.npz`` files): ``segmentation`` (..., H, W) class ids, ``depth`` (..., H, W),
      ``normals`` (..., H, W, 3); targets in the same layout;
    - :meth:`update_batch` with a model's output dict (``segmentation`` logits
      (N, C, H, W), ``depth`` (N, 1, H, W), ``normals`` (N, 3, H, W)) and a data-loader
      batch (targets + ``has_<task>`` flags: unlabelled samples are skipped).

    Tasks absent from a predictions/outputs dict are skipped; tasks that never saw a
    valid pixel are left out of :meth:`compute`.
    """

    def __init__(self, tasks: Iterable[str] = TASKS, num_classes: int = 13) -> None:
        try:
            self.tasks = validate_tasks(list(tasks))
        except ValueError as exc:
            raise ConfigError(f"metrics: {exc}") from exc
        self.num_classes = int(num_classes)
        factories = {
            SEGMENTATION: lambda: SegmentationMeter(self.num_classes),
            DEPTH: DepthMeter,
            NORMALS: NormalsMeter,
        }
        self.meters: dict[str, Any] = {t: factories[t]() for t in self.tasks}

    def update(self, predictions: Mapping[str, Any], targets: Mapping[str, Any]) -> None:
        """Add one sample (or a stack) in the prediction layout."""
        for task, meter in self.meters.items():
            if task in predictions:
                if task not in targets:
                    raise DataError(f"{task}: a prediction but no ground truth was given")
                meter.update(predictions[task], targets[task])

    def update_batch(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Add a model output dict and its batch (model layout, ``has_<task>`` flags)."""
        for task, meter in self.meters.items():
            if task not in outputs or task not in batch:
                continue
            pred, gt = outputs[task], batch[task]
            flags = batch.get(f"has_{task}")
            if flags is not None:
                keep = to_numpy(flags).reshape(-1).astype(bool)
                if not keep.any():
                    continue
                if not keep.all():  # a list index works for torch tensors and arrays alike
                    rows = np.flatnonzero(keep).tolist()
                    pred, gt = pred[rows], gt[rows]
            if task == SEGMENTATION:
                # argmax before the transfer: ids are C times smaller than logits
                meter.update(to_numpy(pred.argmax(1)), to_numpy(gt))
            elif task == DEPTH:
                pred, gt = to_numpy(pred), to_numpy(gt)
                meter.update(pred.reshape(gt.shape) if pred.size == gt.size else pred, gt)
            else:
                meter.update(np.moveaxis(to_numpy(pred), 1, -1), np.moveaxis(to_numpy(gt), 1, -1))

    def compute(self) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` for every task with at least one valid pixel."""
        return {t: m.compute() for t, m in self.meters.items() if m.count > 0}


def delta_m(metrics: Mapping[str, Mapping[str, float]],
            single_task_metrics: Mapping[str, Mapping[str, float]],
            keys: Mapping[str, Sequence[str]] | None = None) -> float:
    """Multi-task gain Delta_m in percent (MTI-Net / LibMTL), positive = better than ST.

    Delta_m = (1/T) sum_t (1/M_t) sum_m (-1)^{l_m} (M - M_ST) / M_ST * 100, with
    ``l_m = 1`` where lower is better (:data:`LOWER_IS_BETTER`). ``metrics`` and
    ``single_task_metrics`` are nested ``{task: {metric: value}}`` dicts; the tasks are
    those of ``metrics``, the metrics per task those of ``keys`` (default
    :data:`DELTA_M_METRICS`, the papers' NYUv2 table columns).
    """
    keys = DELTA_M_METRICS if keys is None else keys
    per_task = []
    for task, values in metrics.items():
        if task not in keys:
            continue
        baseline = single_task_metrics.get(task)
        if baseline is None:
            raise ConfigError(f"Delta_m: no single-task baseline for task {task!r}")
        terms = []
        for name in keys[task]:
            if name not in LOWER_IS_BETTER.get(task, {}):
                raise ConfigError(f"Delta_m: unknown metric {task}.{name}")
            if name not in values or name not in baseline:
                raise ConfigError(f"Delta_m: metric {task}.{name} is missing")
            m, m_st = float(values[name]), float(baseline[name])
            if m_st == 0 or not math.isfinite(m_st) or not math.isfinite(m):
                raise ConfigError(
                    f"Delta_m: {task}.{name} needs finite values and a non-zero baseline "
                    f"(got {m} vs baseline {m_st})"
                )
            sign = -1.0 if LOWER_IS_BETTER[task][name] else 1.0
            terms.append(sign * (m - m_st) / m_st * 100.0)
        per_task.append(sum(terms) / len(terms))
    if not per_task:
        raise ConfigError("Delta_m: no task in common between the metrics and the metric keys")
    return sum(per_task) / len(per_task)
