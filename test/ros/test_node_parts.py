"""ROS-free parts of the node: newest-frame slot and worker, frame statistics, parameters."""
from __future__ import annotations

import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import ReliabilityPolicy

from mbmt_ros.ros.diagnostics import FrameStats
from mbmt_ros.ros.errors import NodeParameterError
from mbmt_ros.ros.inference_worker import InferenceWorker, LatestSlot
from mbmt_ros.ros.params import PARAMETERS, qos_profile, validate_params


def test_slot_keeps_only_the_newest_item() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped
    assert slot.take(0) == 2
    assert slot.take(0.01) is None
    slot.close()
    started = time.monotonic()
    assert slot.take(5.0) is None and time.monotonic() - started < 1.0


def test_worker_processes_newest_and_survives_errors() -> None:
    slot: LatestSlot[int] = LatestSlot()
    seen: list[int] = []
    errors: list[BaseException] = []
    release = threading.Event()

    def process(item: int) -> None:
        if item == 0:
            release.wait(5)  # busy while 1..9 arrive
        if item == 10:
            raise RuntimeError("bad frame")
        seen.append(item)

    worker = InferenceWorker(slot, process, errors.append)
    worker.start()
    slot.put(0)
    time.sleep(0.1)
    dropped = sum(slot.put(i) for i in range(1, 10))
    release.set()
    deadline = time.monotonic() + 5
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


@pytest.fixture()
def bundle_dir(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    return tmp_path


def test_defaults_validate(bundle_dir) -> None:
    p = validate_params({"bundle": str(bundle_dir)})
    assert (p.backend, p.precision, p.device, p.tasks, p.autostart) == ("auto", "fp16", "cuda", (), True)
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


def test_qos_presets() -> None:
    assert qos_profile("sensor_data", 1).reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos_profile("reliable", 3).reliability == ReliabilityPolicy.RELIABLE
    assert qos_profile("reliable", 3).depth == 3
    with pytest.raises(NodeParameterError):
        qos_profile("fast", 1)
