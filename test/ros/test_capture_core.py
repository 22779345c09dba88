"""The capture core without DDS: the per-frame decision (uncertain, baseline, rate limit),
segments closed atomically and readable by rosbags, the disk budget, a slow disk dropping
frames instead of blocking, and stale partial segments removed at start."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from mbmt_ros.ros.capture import (  # noqa: E402
    CAMERA_INFO,
    IMAGE,
    CaptureConfig,
    CaptureMessage,
    CapturePolicy,
    ExtraTopics,
    FrameCapture,
    cdr_stamp_ns,
    topic_msgtype,
    uncertain_fraction,
)
from mbmt_ros.ros.errors import CaptureError  # noqa: E402


def _store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def _image_cdr(stamp_ns: int, h: int = 8, w: int = 10, value: int = 7) -> bytes:
    store = _store()
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id="cam")
    msg = t[IMAGE](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
                   data=np.full(h * w * 3, value, np.uint8))
    return bytes(store.serialize_cdr(msg, IMAGE))


def _frame(stamp_ns: int, **kw) -> list[CaptureMessage]:
    return [CaptureMessage("/image", IMAGE, stamp_ns, _image_cdr(stamp_ns, **kw))]


def _bags(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def _read(bag: Path) -> list[tuple[str, int]]:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        store = _store()
        return [(c.topic, store.deserialize_cdr(raw, c.msgtype).header.stamp.sec)
                for c, _t, raw in reader.messages()]


def test_uncertain_fraction_names_and_stamps() -> None:
    conf = np.array([[0.1, 0.6], [0.9, np.nan]], np.float32)
    assert uncertain_fraction(conf, 0.5) == 0.5  # 0.1 and NaN
    assert uncertain_fraction(conf, 0.0) == 0.25  # only NaN is below any floor
    assert topic_msgtype("/cam/depth/camera_info") == CAMERA_INFO
    assert topic_msgtype("depth/compressedDepth").endswith("CompressedImage")
    assert topic_msgtype("depth") == IMAGE
    assert cdr_stamp_ns(_image_cdr(3_000_000_017)) == 3_000_000_017
    extra = ExtraTopics([("/depth", IMAGE)])
    for sec in (1, 2, 5):
        extra.put("/depth", _image_cdr(sec * 1_000_000_000))
    (near,) = extra.nearest(4_200_000_000)
    assert near.stamp_ns == 5_000_000_000 and near.topic == "/depth"


def test_policy_uncertain_baseline_and_rate_limit(tmp_path) -> None:
    cfg = CaptureConfig(tmp_path, min_confidence=0.5, uncertain_fraction=0.25, every_s=10.0,
                        min_interval_s=2.0)
    policy = CapturePolicy(cfg, now=0.0)
    unsure = np.array([0.1, 0.2, 0.9, 0.9])  # half the pixels below 0.5 > 0.25
    sure = np.array([0.1, 0.9, 0.9, 0.9])  # a quarter: not more than 0.25
    assert policy.reason(unsure, 1.0) == "uncertain" and policy.reason(sure, 1.0) == ""
    assert policy.reason(None, 1.0) == ""  # no segmentation: only the baseline can capture
    policy.taken("uncertain", 1.0)
    assert policy.rate_limited(2.5) and not policy.rate_limited(3.0)
    assert policy.reason(sure, 9.9) == "" and policy.reason(sure, 10.0) == "baseline"
    policy.taken("baseline", 10.0)
    assert policy.reason(sure, 19.9) == "" and policy.reason(sure, 20.0) == "baseline"


def test_segments_are_complete_bags_and_counters(tmp_path) -> None:
    cfg = CaptureConfig(tmp_path / "cap", min_confidence=1.0, uncertain_fraction=0.0,
                        min_interval_s=0.0, segment_frames=2, queue_size=100)
    cap = FrameCapture(cfg)
    unsure = np.zeros(4)
    for i in range(5):
        assert cap.offer(unsure, lambda i=i: _frame((i + 1) * 1_000_000_000), now=float(i)) == "queued"
    assert cap.offer(np.ones(4), lambda: _frame(99), now=9.0) == ""  # confident: not wanted
    assert cap.close()
    bags = _bags(cfg.directory)
    assert len(bags) == 3  # 2 + 2 + 1 frames; the last one closed by close()
    assert [_read(b) for b in bags] == [[("/image", 1), ("/image", 2)], [("/image", 3), ("/image", 4)],
                                        [("/image", 5)]]
    values = cap.values()
    assert values["capture_captured_frames"] == "5" and values["capture_segments"] == "3"
    assert values["capture_uncertain_frames"] == "5" and values["capture_state"] == "capturing"
    assert not [p for p in cfg.directory.iterdir() if p.name.startswith(".")]  # no partials left


def test_budget_stops_capturing_and_never_overwrites(tmp_path) -> None:
    root = tmp_path / "cap"
    frame_bytes = len(_image_cdr(1, h=40, w=50))  # 6 kB
    cfg = CaptureConfig(root, min_confidence=1.0, uncertain_fraction=0.0, min_interval_s=0.0,
                        max_mb=(3 * frame_bytes + 12_000) / 1e6, segment_frames=1, queue_size=100)
    cap = FrameCapture(cfg)
    for i in range(8):
        cap.offer(np.zeros(4), lambda i=i: _frame((i + 1) * 1_000_000_000, h=40, w=50), now=float(i))
    cap.flush()
    assert cap.close()
    used = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert used <= cfg.max_bytes
    bags = _bags(root)
    assert 1 <= len(bags) < 8
    values = cap.values()
    assert values["capture_state"].startswith("budget reached")
    assert int(values["capture_skipped_budget"]) == 8 - len(bags)
    # a second run on the full folder: everything already there counts, nothing is replaced
    before = {b.name: b.stat().st_mtime_ns for b in bags}
    again = FrameCapture(cfg)
    again.offer(np.zeros(4), lambda: _frame(10**10, h=40, w=50), now=0.0)
    assert again.close()
    assert again.values()["capture_skipped_budget"] == "1"
    assert again.values()["capture_captured_frames"] == "0"
    assert {b.name: b.stat().st_mtime_ns for b in _bags(root)} == before


def test_slow_disk_drops_frames_instead_of_blocking(tmp_path) -> None:
    gate = threading.Event()

    def slow_serialize(obj):  # the writer thread is stuck until the gate opens
        gate.wait(10)
        return obj()

    cfg = CaptureConfig(tmp_path / "cap", min_confidence=1.0, uncertain_fraction=0.0,
                        min_interval_s=0.0, queue_size=2)
    cap = FrameCapture(cfg, serialize=slow_serialize)
    started = time.monotonic()
    results = [cap.offer(np.zeros(4), lambda i=i: [CaptureMessage(
        "/image", IMAGE, i + 1, lambda i=i: _image_cdr((i + 1) * 1_000_000_000))], now=float(i))
        for i in range(10)]
    assert time.monotonic() - started < 1.0  # the caller never waited for the disk
    assert results.count("dropped") >= 7 and cap.values()["capture_dropped_frames"] == str(
        results.count("dropped"))
    gate.set()
    assert cap.close()
    assert cap.values()["capture_captured_frames"] == str(10 - results.count("dropped"))


def test_stale_partials_removed_and_bad_dir_refused(tmp_path) -> None:
    root = tmp_path / "cap"
    stale = root / ".capture_x_0001.abc123.partial" / "capture_x_0001"
    stale.mkdir(parents=True)
    (stale / "capture_x_0001.mcap").write_bytes(b"cut off")
    FrameCapture(CaptureConfig(root)).close()
    assert not list(root.iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(CaptureError, match="capture.dir=.*set capture.dir to a writable folder"):
        FrameCapture(CaptureConfig(tmp_path / "file" / "sub"))
