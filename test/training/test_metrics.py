"""Metrics against hand-computed values; pooled (split-level) versus per-batch figures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.errors import ConfigError, DataError
from training.metrics import (
    DepthMeter,
    MetricSuite,
    NormalsMeter,
    SegmentationMeter,
    delta_m,
    exact_median,
)

# --- segmentation -----------------------------------------------------------------------


def test_segmentation_hand_computed():
    gt = np.array([[0, 0, 1], [1, 2, -1]])
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    # valid pixels (gt, pred): (0,0) (0,1) (1,1) (1,2) (2,2); the void pixel is ignored
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 1, FP 1, FN 1 -> 1/3;
    # class 2: TP 1, FP 1, FN 0 -> 1/2.  mIoU = (1/2 + 1/3 + 1/2) / 3 = 4/9
    m = SegmentationMeter(3)
    m.update(pred, gt)
    out = m.compute()
    assert set(out) == {"miou", "pixel_acc"}
    assert out["miou"] == pytest.approx(100 * 4 / 9)
    assert out["pixel_acc"] == pytest.approx(100 * 3 / 5)


def test_segmentation_classes_with_empty_union_are_left_out_and_float_labels():
    gt = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, -1.0]])  # float labels as in MTAN's .npy
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    m = SegmentationMeter(5)  # classes 3 and 4 are never seen: excluded, not IoU 0 / NaN
    m.update(pred, gt)
    assert m.compute()["miou"] == pytest.approx(100 * 4 / 9)
    # a class only predicted (FP) has a non-empty union and IoU 0
    m2 = SegmentationMeter(5)
    m2.update(np.array([0, 4]), np.array([0, 0]))
    # class 0: TP 1, FN 1 -> 1/2; class 4: FP 1 -> 0 => mIoU 1/4
    assert m2.compute()["miou"] == pytest.approx(25.0)


def test_segmentation_is_pooled_not_averaged_per_batch():
    m = SegmentationMeter(2)
    m.update(np.array([0]), np.array([0]))
    m.update(np.array([1, 0, 0]), np.array([1, 1, 1]))
    # pooled confusion: (0,0) 1, (1,1) 1, (1,0) 2
    # class 0: TP 1, FP 2 -> 1/3; class 1: TP 1, FN 2 -> 1/3; acc 2/4
    out = m.compute()
    assert out["miou"] == pytest.approx(100 / 3)
    assert out["pixel_acc"] == pytest.approx(50.0)
    # per-batch averaging would give mIoU (100 + (0 + 1/3) / 2 * 100) / 2 = 58.33
    assert out["miou"] != pytest.approx(58.333, abs=0.01)


def test_segmentation_bad_input():
    m = SegmentationMeter(3)
    with pytest.raises(DataError, match="shape"):
        m.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(DataError, match="predicted class 3"):
        m.update(np.array([3]), np.array([0]))
    with pytest.raises(DataError, match="ground-truth class 7"):
        m.update(np.array([0]), np.array([7]))
    assert math.isnan(m.compute()["miou"])


# --- depth ------------------------------------------------------------------------------


def test_depth_hand_computed_with_invalid_pixels():
    pred = np.array([2.0, 1.0, 2.4, 1.5, 5.0, 7.0], dtype=np.float32)
    gt = np.array([1.0, 1.0, 2.0, 1.0, 0.0, np.nan], dtype=np.float32)
    # valid: first four. |p-g| = 1, 0, .4, .5; ratios max(p/g, g/p) = 2, 1, 1.2, 1.5
    m = DepthMeter()
    m.update(pred, gt)
    out = m.compute()
    assert out["abs_err"] == pytest.approx(1.9 / 4, rel=1e-6)
    assert out["rel_err"] == pytest.approx((1 + 0 + 0.2 + 0.5) / 4, rel=1e-6)
    assert out["rmse"] == pytest.approx(math.sqrt((1 + 0 + 0.16 + 0.25) / 4), rel=1e-6)
    log_sq = math.log(2) ** 2 + 0 + math.log(1.2) ** 2 + math.log(1.5) ** 2
    assert out["log_rmse"] == pytest.approx(math.sqrt(log_sq / 4), rel=1e-6)
    # delta1 (< 1.25): 1, 1.2 -> 50 %; delta2 (< 1.5625): + 1.5 -> 75 %; delta3 (< 1.953): 75 %
    assert (out["delta1"], out["delta2"], out["delta3"]) == pytest.approx((50, 75, 75))
    assert m.count == 4


def test_depth_non_positive_predictions_are_never_within_delta():
    m = DepthMeter()
    m.update(np.array([0.0, -1.0]), np.array([1.0, 1.0]))
    out = m.compute()
    assert out["delta3"] == 0.0
    # log rmse uses max(p, 1e-9): (log 1 - log 1e-9)^2 for both pixels
    assert out["log_rmse"] == pytest.approx(-math.log(1e-9))
    assert out["abs_err"] == pytest.approx(1.5)


def test_depth_is_pooled_not_averaged_per_batch():
    m = DepthMeter()
    m.update(np.array([3.0]), np.array([1.0]))  # error 2
    m.update(np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0, 1.0]))  # errors 1
    # pooled rmse sqrt((4 + 1 + 1 + 1) / 4); per-batch mean would be (2 + 1) / 2 = 1.5
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(7 / 4))
    assert m.compute()["abs_err"] == pytest.approx(5 / 4)


def test_depth_bad_input():
    m = DepthMeter()
    with pytest.raises(DataError, match="non-finite"):
        m.update(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(DataError, match="shape"):
        m.update(np.ones(2), np.ones(3))


# --- normals ----------------------------------------------------------------------------


def _unit_at(deg: float) -> list[float]:
    r = math.radians(deg)
    return [math.sin(r), 0.0, math.cos(r)]


def test_normals_hand_computed():
    angles = [0, 45, 90, 10, 25, 180]
    pred = np.array([_unit_at(a) for a in angles] + [[0.0, 0.0, 1.0]], dtype=np.float32)
    pred[3] *= 2.0  # a non-unit prediction is normalised first
    gt = np.array([[0.0, 0.0, 1.0]] * 6 + [[0.0, 0.0, 0.0]], dtype=np.float32)  # last invalid
    m = NormalsMeter()
    m.update(pred, gt)
    out = m.compute()
    # errors 0 10 25 45 90 180: mean 350/6, median (25 + 45) / 2 = 35
    assert out["mean"] == pytest.approx(350 / 6, abs=1e-3)
    assert out["median"] == pytest.approx(35.0, abs=1e-3)
    # < 11.25: {0, 10} -> 2/6; < 22.5: 2/6; < 30: {0, 10, 25} -> 3/6
    assert out["within_11_25"] == pytest.approx(100 * 2 / 6)
    assert out["within_22_5"] == pytest.approx(100 * 2 / 6)
    assert out["within_30"] == pytest.approx(50.0)
    assert m.count == 6


def test_normals_true_median_not_mean_of_medians_and_channel_axis():
    m = NormalsMeter(axis=0)  # (3, H, W) arrays
    gt = np.zeros((3, 1, 3))
    gt[2] = 1.0
    pred_a = np.array([_unit_at(a) for a in (0, 10, 20)]).T.reshape(3, 1, 3)
    m.update(pred_a, gt)
    m.update(np.array(_unit_at(40)).reshape(3, 1, 1), gt[:, :, :1])
    # pooled errors 0 10 20 40 -> median 15; the mean of per-batch medians would be 25
    assert m.compute()["median"] == pytest.approx(15.0, abs=1e-3)
    m.update(np.array(_unit_at(50)).reshape(3, 1, 1), gt[:, :, :1])
    assert m.compute()["median"] == pytest.approx(20.0, abs=1e-3)  # odd count: 0 10 20 40 50


def test_normals_zero_prediction_counts_as_ninety_degrees():
    m = NormalsMeter()
    m.update(np.zeros((1, 3)), np.array([[0.0, 1.0, 0.0]]))
    assert m.compute()["mean"] == pytest.approx(90.0)


@pytest.mark.parametrize("n", [1, 2, 7, 200_001, 200_000])
def test_exact_median_matches_numpy(n):
    rng = np.random.default_rng(n)
    values = (rng.random(n) * 180).astype(np.float32)
    values[: n // 3] = np.round(values[: n // 3])  # many duplicates
    chunks = np.array_split(values, 5)
    assert exact_median(chunks) == np.median(values.astype(np.float64))
    assert math.isnan(exact_median([]))


# --- suite and delta_m ------------------------------------------------------------------


def test_suite_update_batch_uses_has_flags_and_model_layout():
    suite = MetricSuite(("segmentation", "depth", "normals"), num_classes=2)
    logits = torch.zeros(2, 2, 1, 2)
    logits[:, 1, 0, 1] = 1.0  # argmax: pixel 0 -> class 0, pixel 1 -> class 1
    normals = torch.zeros(2, 3, 1, 2)
    normals[:, 2] = 1.0
    outputs = {"segmentation": logits, "depth": torch.full((2, 1, 1, 2), 2.0),
               "normals": normals}
    batch = {
        "segmentation": torch.tensor([[[0, 0]], [[1, 1]]]),
        "depth": torch.tensor([[[[1.0, 2.0]]], [[[4.0, 0.0]]]]),
        "normals": normals.clone(),
        "has_segmentation": torch.tensor([True, False]),
        "has_depth": torch.tensor([True, True]),
        "has_normals": torch.tensor([False, False]),
    }
    suite.update_batch(outputs, batch)
    out = suite.compute()
    assert set(out) == {"segmentation", "depth"}  # no labelled normals: left out
    # sample 0 only: gt (0, 0) pred (0, 1): class 0 IoU 1/2, class 1 IoU 0 -> 25 %; acc 50 %
    assert out["segmentation"] == pytest.approx({"miou": 25.0, "pixel_acc": 50.0})
    # depth valid: (2 vs 1), (2 vs 2), (2 vs 4) -> abs err (1 + 0 + 2) / 3
    assert out["depth"]["abs_err"] == pytest.approx(1.0)
    assert set(out["depth"]) == {"abs_err", "rel_err", "rmse", "log_rmse", "delta1",
                                 "delta2", "delta3"}


def test_suite_update_prediction_layout():
    suite = MetricSuite(("depth", "normals"))
    gt_n = np.zeros((2, 2, 3))
    gt_n[..., 2] = 1
    suite.update({"normals": gt_n}, {"normals": gt_n, "depth": np.ones((2, 2))})
    out = suite.compute()
    assert set(out) == {"normals"}
    assert set(out["normals"]) == {"mean", "median", "within_11_25", "within_22_5",
                                   "within_30"}
    assert out["normals"]["within_11_25"] == 100.0
    with pytest.raises(DataError, match="no ground truth"):
        suite.update({"depth": np.ones((2, 2))}, {})
    with pytest.raises(ConfigError):
        MetricSuite(("edges",))


def test_delta_m_hand_computed():
    st = {
        "segmentation": {"miou": 40.0, "pixel_acc": 60.0},
        "depth": {"abs_err": 0.4, "rel_err": 0.25, "rmse": 1.0},
        "normals": {"mean": 25.0, "median": 15.0, "within_11_25": 25.0, "within_22_5": 50.0,
                    "within_30": 60.0},
    }
    mt = {
        # seg: (+ (50-40)/40 + 0) / 2 = +12.5 %
        "segmentation": {"miou": 50.0, "pixel_acc": 60.0},
        # depth (lower is better): (-(0.5-0.4)/0.4 - (0.2-0.25)/0.25) / 2 = (-25 + 20) / 2
        "depth": {"abs_err": 0.5, "rel_err": 0.2, "rmse": 5.0},
    }
    assert delta_m(mt, st) == pytest.approx((12.5 - 2.5) / 2)
    # normals: mean -(20-25)/25 = +20, median 0, 11.25: +20, 22.5: 0, 30: 0 -> +8
    mt["normals"] = {"mean": 20.0, "median": 15.0, "within_11_25": 30.0, "within_22_5": 50.0,
                     "within_30": 60.0}
    assert delta_m(mt, st) == pytest.approx((12.5 - 2.5 + 8) / 3)
    # choosing the metrics: depth rmse only -> -(5 - 1)/1 = -400
    assert delta_m(mt, st, keys={"depth": ["rmse"]}) == pytest.approx(-400.0)
    assert delta_m(st, st) == 0.0
    with pytest.raises(ConfigError, match="baseline for task 'normals'"):
        delta_m(mt, {"segmentation": st["segmentation"], "depth": st["depth"]})
