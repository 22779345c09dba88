"""ROS-free parts of the node: newest-frame slot and worker, frame statistics, parameters."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import ReliabilityPolicy

from mbmt_ros.ros.diagnostics import SEGMENTS, FrameStats, FrameTiming
from mbmt_ros.ros.errors import NodeParameterError
from mbmt_ros.ros.inference_worker import InferenceWorker, LatestSlot
from mbmt_ros.ros.params import (
    PARAMETERS,
    SPECS,
    check_value,
    coerce_value,
    descriptor,
    qos_profile,
    validate_params,
)


def test_slot_keeps_only_the_newest_item() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped
    assert slot.take(0) == 2
    assert slot.take(0.01) is None
    slot.close()
    started = time.monotonic()
    assert slot.take(60.0) is None and time.monotonic() - started < 60.0  # at once, not at timeout


def test_worker_processes_newest_and_survives_errors() -> None:
    slot: LatestSlot[int] = LatestSlot()
    seen: list[int] = []
    errors: list[BaseException] = []
    release, busy = threading.Event(), threading.Event()

    def process(item: int) -> None:
        if item == 0:
            busy.set()
            release.wait(60)  # busy while 1..9 arrive
        if item == 10:
            raise RuntimeError("bad frame")
        seen.append(item)

    worker = InferenceWorker(slot, process, errors.append)
    worker.start()
    slot.put(0)
    assert busy.wait(60)  # the worker holds 0
    dropped = sum(slot.put(i) for i in range(1, 10))
    release.set()
    deadline = time.monotonic() + 60
    while 9 not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    slot.put(10)
    slot.put(11)
    while 11 not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop() and not worker.alive
    assert dropped == 8 and seen[:2] == [0, 9]  # 1..8 replaced each other
    assert seen[-1] == 11 and len(errors) <= 1


def test_frame_stats_report_and_status() -> None:
    stats = FrameStats()
    start = time.monotonic()
    stats._period_start = start
    for dropped in (False, True, True):
        stats.on_received(dropped)
    stats.on_processed(0.010, 0.004)
    stats.on_processed(0.030, 0.006)
    stats.on_processed(0.020, 0.008)
    stats.on_rejected("wrong step")
    rep = stats.report(now=start + 2.0)
    assert rep.input_rate_hz == pytest.approx(1.5) and rep.output_rate_hz == pytest.approx(1.5)
    assert rep.latency_median_ms == pytest.approx(20.0) and rep.latency_max_ms == pytest.approx(30.0)
    assert rep.inference_median_ms == pytest.approx(6.0)
    assert (rep.dropped, rep.rejected, rep.rejected_in_period) == (2, 1, 1)
    status = FrameStats.to_status(rep, "perception", "node", {"backend": "onnxruntime"})
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.WARN and "wrong step" in status.message
    assert values["dropped_frames"] == "2" and values["rejected_frames"] == "1"
    assert values["backend"] == "onnxruntime" and values["latency_median_ms"] == "20.00"
    nxt = stats.report(now=start + 3.0)  # new period: counters stay, rates restart
    assert nxt.rejected == 1 and nxt.rejected_in_period == 0 and nxt.input_rate_hz == 0.0
    stats.on_error("backend exploded")
    assert FrameStats.to_status(stats.report(), "p", "n").level == DiagnosticStatus.ERROR


def _timing(t0: int, predict_ms: float, rest_ms: float) -> FrameTiming:
    """Stamps (ns) whose node-side segments add up to ``rest_ms`` around a ``predict_ms`` call."""
    ms = 1_000_000
    step = int(rest_ms * ms / 4)
    p0 = t0 + 2 * step
    p1 = p0 + int(predict_ms * ms)
    return FrameTiming(received=t0, taken=t0 + step, converted=p0, predict_start=p0,
                       predict_end=p1, built=p1 + step, published=p1 + 2 * step)


def test_frame_timing_percentiles_and_overhead_over_a_window() -> None:
    stats = FrameStats(window=4)
    for i, predict in enumerate([10.0, 20.0, 30.0, 40.0, 50.0]):  # the first leaves the window
        stats.on_processed(0.5, predict / 1e3, _timing(i * 10**9, predict, rest_ms=predict / 10))
    rep = stats.report()
    assert rep.timing_frames == 4
    assert rep.timing["predict_p50_ms"] == pytest.approx(35.0)
    assert rep.timing["total_p50_ms"] == pytest.approx(38.5)
    assert rep.timing["overhead_p50_pct"] == pytest.approx(10.0)
    assert rep.timing["queue_p99_ms"] == pytest.approx(np.percentile([0.5, 0.75, 1.0, 1.25], 99))
    assert rep.receipt_latency_max_ms == pytest.approx(55.0)  # of the period: all five frames
    values = {kv.key: kv.value for kv in FrameStats.to_status(rep, "p", "n").values}
    assert {f"{s}_p99_ms" for s in SEGMENTS} <= set(values) and values["timing_frames"] == "4"
    assert values["overhead_p99_pct"] == "10.000" and values["latency_median_ms"] == "500.00"
    nxt = stats.report()  # the window outlives the period
    assert nxt.timing_frames == 4 and math.isnan(nxt.receipt_latency_median_ms)
    stats.on_skipped()
    assert stats.report().skipped == 1


def test_input_delay_from_the_stamp_over_the_window_and_nan_without_stamps() -> None:
    stats = FrameStats(window=3)
    stats.on_processed(0.1, 0.01, _timing(0, 10.0, 1.0))  # no stamp: no input delay
    values = {kv.key: kv.value for kv in FrameStats.to_status(stats.report(), "p", "n").values}
    assert values["input_delay_p50_ms"] == "nan"
    for i, delay in enumerate([4.0, 2.0, 30.0]):
        stats.on_processed(0.1, 0.01, _timing(i * 10**9, 10.0, 1.0), delay / 1e3)
    rep = stats.report()
    assert rep.timing["input_delay_p50_ms"] == pytest.approx(4.0)  # nan of the first frame ignored
    assert rep.timing["input_delay_p99_ms"] == pytest.approx(np.percentile([2.0, 4.0, 30.0], 99))
    stats.on_processed(0.1, 0.01, _timing(9 * 10**9, 10.0, 1.0), 0.0)  # the first leaves the window
    assert stats.report().timing["input_delay_p50_ms"] == pytest.approx(2.0)


@pytest.fixture()
def bundle_dir(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    return tmp_path


def test_defaults_validate(bundle_dir) -> None:
    p = validate_params({"bundle": str(bundle_dir)})
    assert (p.backend, p.precision, p.device, p.tasks, p.autostart) == ("auto", "auto", "auto", (), True)
    assert p.input_qos == "sensor_data" and p.output_qos == "reliable"
    assert {s.name for s in PARAMETERS} >= {"bundle", "backend", "precision", "device", "tasks",
                                            "overlay_alpha", "palette_file", "pointcloud",
                                            "pointcloud_stride", "max_depth", "qos.input",
                                            "qos.output", "autostart"}
    p = validate_params({"bundle": str(bundle_dir), "tasks": ["normals", "depth"], "overlay_alpha": 1})
    assert p.tasks == ("depth", "normals") and p.overlay_alpha == 1.0


@pytest.mark.parametrize("name, value, match", [
    ("bundle", "", "bundle is empty"),
    ("bundle", "/nonexistent/bundle", "not a model bundle directory"),
    ("backend", "tensorflow", r"backend='tensorflow' is invalid; use one of \['auto'"),
    ("precision", "fp8", "precision='fp8'"),
    ("device", "gpu0", "device='gpu0'"),
    ("tasks", ["depth", "edges"], "unknown task"),
    ("overlay_alpha", 1.5, r"overlay_alpha=1.5 is out of range \[0.0, 1.0\]"),
    ("overlay_alpha", "high", "must be a number"),
    ("pointcloud_stride", 0, "pointcloud_stride=0"),
    ("max_depth", -1.0, "max_depth=-1.0"),
    ("palette_file", "/nonexistent.json", "palette_file='/nonexistent.json': file not found"),
    ("qos.input", "fast", "qos.input='fast'"),
    ("pointcloud", "yes", "pointcloud='yes' must be true or false"),
])
def test_bad_values_name_the_parameter(bundle_dir, name, value, match) -> None:
    values = {"bundle": str(bundle_dir), name: value}
    with pytest.raises(NodeParameterError, match=match):
        validate_params(values)


@pytest.mark.parametrize("name, value, expected", [
    ("backend", "openvino", "openvino"), ("device", "gpu", "gpu"), ("device", "auto", "auto"),
    ("precision", "bf16", "bf16"), ("num_threads", 4, 4), ("workspace_mb", 512, 512),
    ("max_depth", 20, 20.0), ("tasks", None, ()),
])
def test_check_value_accepts_and_normalises(name, value, expected) -> None:
    assert check_value(name, value) == expected


def test_check_value_refuses_with_the_reason() -> None:
    with pytest.raises(NodeParameterError, match="num_threads=2.5 must be an integer"):
        check_value("num_threads", 2.5)
    with pytest.raises(NodeParameterError, match="unknown parameter 'colour'"):
        check_value("colour", 1)
    assert coerce_value("max_depth", 3) == 3.0 and isinstance(coerce_value("max_depth", 3), float)
    assert coerce_value("num_threads", 3) == 3 and coerce_value("autostart", True) is True


def test_descriptors_carry_type_range_and_choices() -> None:
    from rcl_interfaces.msg import ParameterType

    alpha = descriptor(SPECS["overlay_alpha"])
    assert alpha.type == ParameterType.PARAMETER_DOUBLE and not alpha.dynamic_typing
    assert (alpha.floating_point_range[0].from_value, alpha.floating_point_range[0].to_value) == (0.0, 1.0)
    stride = descriptor(SPECS["pointcloud_stride"])
    assert stride.type == ParameterType.PARAMETER_INTEGER and stride.integer_range[0].to_value == 64
    backend = descriptor(SPECS["backend"])
    assert "openvino" in backend.additional_constraints and "next configure" in backend.additional_constraints
    assert descriptor(SPECS["tasks"]).dynamic_typing
    assert descriptor(SPECS["autostart"]).type == ParameterType.PARAMETER_BOOL


def test_qos_presets() -> None:
    assert qos_profile("sensor_data", 1).reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos_profile("reliable", 3).reliability == ReliabilityPolicy.RELIABLE
    assert qos_profile("reliable", 3).depth == 3
    with pytest.raises(NodeParameterError):
        qos_profile("fast", 1)
