"""The capture core without DDS: the per-frame decision in camera time (uncertain, baseline,
rate limit, the clock jumping back), segments closed atomically and readable by rosbags,
written and refused frames counted apart, the disk budget, a slow disk dropping frames
instead of blocking, the folder lock (one owner, stale lock taken over) and stale partial
segments removed at start."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from mbmt_ros.ros.capture import FrameCapture  # noqa: E402
from mbmt_ros.ros.capture_folder import LOCK_NAME  # noqa: E402
from mbmt_ros.ros.capture_policy import CaptureConfig, CapturePolicy, uncertain_fraction  # noqa: E402
from mbmt_ros.ros.capture_topics import (  # noqa: E402
    CAMERA_INFO,
    IMAGE,
    CaptureMessage,
    ExtraTopics,
    cdr_stamp_ns,
    topic_msgtype,
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


S = 1_000_000_000  # one second of camera time, in ns


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


def test_policy_uncertain_baseline_and_rate_limit_in_camera_time(tmp_path) -> None:
    cfg = CaptureConfig(tmp_path, min_confidence=0.5, uncertain_fraction=0.25, every_s=10.0,
                        min_interval_s=2.0)
    policy = CapturePolicy(cfg)
    unsure = np.array([0.1, 0.2, 0.9, 0.9])  # half the pixels below 0.5 > 0.25
    sure = np.array([0.1, 0.9, 0.9, 0.9])  # a quarter: not more than 0.25
    t0 = 1_700_000_000 * S  # header stamps: the baseline counts from the first frame
    assert policy.reason(sure, t0) == ""
    assert policy.reason(unsure, t0 + S) == "uncertain" and policy.reason(sure, t0 + S) == ""
    assert policy.reason(None, t0 + S) == ""  # no segmentation: only the baseline can capture
    assert not policy.rate_limited(t0 + S)
    policy.taken("uncertain", t0 + S)
    assert policy.rate_limited(t0 + 3 * S - 1) and not policy.rate_limited(t0 + 3 * S)
    assert policy.rate_limited(t0 + S - 1)  # a frame slightly out of order is limited too
    assert policy.reason(sure, t0 + 10 * S - 1) == "" and policy.reason(sure, t0 + 10 * S) == "baseline"
    assert policy.reason(sure, t0 + 11 * S) == "baseline"  # not taken: a due baseline stays due
    policy.taken("baseline", t0 + 11 * S)
    assert policy.reason(sure, t0 + 21 * S - 1) == "" and policy.reason(sure, t0 + 21 * S) == "baseline"
    # the clock jumps back (the bag is played again): the policy starts afresh
    assert policy.reason(sure, t0) == "" and not policy.rate_limited(t0)
    assert policy.reason(sure, t0 + 10 * S) == "baseline"


def test_segments_are_complete_bags_and_counters(tmp_path) -> None:
    cfg = CaptureConfig(tmp_path / "cap", min_confidence=1.0, uncertain_fraction=0.0,
                        min_interval_s=0.0, segment_frames=2, queue_size=100)
    cap = FrameCapture(cfg)
    unsure = np.zeros(4)
    for i in range(5):
        assert cap.offer(unsure, lambda i=i: _frame((i + 1) * S), (i + 1) * S) == "queued"
    assert cap.offer(np.ones(4), lambda: _frame(99 * S), 99 * S) == ""  # confident: not wanted
    assert cap.close()
    bags = _bags(cfg.directory)
    assert len(bags) == 3  # 2 + 2 + 1 frames; the last one closed by close()
    assert [_read(b) for b in bags] == [[("/image", 1), ("/image", 2)], [("/image", 3), ("/image", 4)],
                                        [("/image", 5)]]
    values = cap.values()
    assert values["capture_captured_frames"] == "5" and values["capture_segments"] == "3"
    assert values["capture_uncertain_frames"] == "5" and values["capture_state"] == "capturing"
    assert values["capture_refused_frames"] == "0" and values["capture_pending_frames"] == "0"
    node_md = (Path(__file__).resolve().parents[2] / "docs" / "node.md").read_text()
    assert [k for k in values if f"`{k}`" not in node_md] == []  # every key is documented
    # no partials left, and close() released the folder: no lock file either
    assert not [p for p in cfg.directory.iterdir() if p.name.startswith(".")]


def test_budget_stops_capturing_and_never_overwrites(tmp_path) -> None:
    root = tmp_path / "cap"
    frame_bytes = len(_image_cdr(1, h=40, w=50))  # 6 kB
    cfg = CaptureConfig(root, min_confidence=1.0, uncertain_fraction=0.0, min_interval_s=0.0,
                        max_mb=(3 * frame_bytes + 12_000) / 1e6, segment_frames=1, queue_size=100)
    cap = FrameCapture(cfg)
    for i in range(8):
        cap.offer(np.zeros(4), lambda i=i: _frame((i + 1) * S, h=40, w=50), (i + 1) * S)
    cap.flush()
    assert cap.close()
    used = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert used <= cfg.max_bytes
    bags = _bags(root)
    assert 1 <= len(bags) < 8
    values = cap.values()
    assert values["capture_state"].startswith("budget reached")
    # queued is not written: the uncertain counter holds the frames written, the refused apart
    assert values["capture_uncertain_frames"] == values["capture_captured_frames"] == str(len(bags))
    assert int(values["capture_skipped_budget"]) == 8 - len(bags)
    assert values["capture_refused_frames"] == values["capture_skipped_budget"]
    # a second run on the full folder: everything already there counts, nothing is replaced
    before = {b.name: b.stat().st_mtime_ns for b in bags}
    again = FrameCapture(cfg)
    again.offer(np.zeros(4), lambda: _frame(10 * S, h=40, w=50), 10 * S)
    assert again.close()
    assert again.values()["capture_skipped_budget"] == "1"
    assert again.values()["capture_captured_frames"] == "0"
    assert {b.name: b.stat().st_mtime_ns for b in _bags(root)} == before


def test_slow_disk_drops_frames_instead_of_blocking(tmp_path) -> None:
    gate, serialized = threading.Event(), []

    def slow_serialize(obj):  # the writer thread is stuck until the gate opens
        gate.wait(60)
        serialized.append(obj)
        return obj()

    cfg = CaptureConfig(tmp_path / "cap", min_confidence=1.0, uncertain_fraction=0.0,
                        min_interval_s=0.0, queue_size=2)
    cap = FrameCapture(cfg, serialize=slow_serialize)
    results = [cap.offer(np.zeros(4), lambda i=i: [CaptureMessage(
        "/image", IMAGE, (i + 1) * S, lambda i=i: _image_cdr((i + 1) * S))], (i + 1) * S)
        for i in range(10)]
    # every offer returned while the writer was still stuck: the caller never waits for the
    # disk; at most the queue and the frame in the writer's hands got in
    assert serialized == []
    assert results.count("dropped") >= 10 - cfg.queue_size - 1
    values = cap.values()
    assert values["capture_dropped_frames"] == str(results.count("dropped"))
    assert values["capture_captured_frames"] == "0"  # queued, not written
    assert values["capture_pending_frames"] == str(results.count("queued"))
    gate.set()
    assert cap.close()
    values = cap.values()
    assert values["capture_captured_frames"] == values["capture_uncertain_frames"] == str(
        results.count("queued"))
    assert values["capture_refused_frames"] == str(results.count("dropped"))
    assert values["capture_pending_frames"] == "0"


def test_written_and_refused_counters_add_up_after_a_write_failure(tmp_path) -> None:
    calls = []

    def failing_serialize(obj):  # the second frame's write fails (a full disk, say)
        calls.append(obj)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return obj()

    cfg = CaptureConfig(tmp_path / "cap", min_confidence=1.0, uncertain_fraction=0.0,
                        min_interval_s=0.0, queue_size=100)
    cap = FrameCapture(cfg, serialize=failing_serialize)
    results = [cap.offer(np.zeros(4), lambda i=i: [CaptureMessage(
        "/image", IMAGE, (i + 1) * S, lambda i=i: _image_cdr((i + 1) * S))], (i + 1) * S)
        for i in range(6)]
    cap.flush()
    results.append(cap.offer(np.zeros(4), lambda: _frame(7 * S), 7 * S))
    assert results[-1] == "error"
    assert cap.close()
    values = cap.values()
    assert values["capture_state"].startswith("error: OSError") and values["capture_errors"] == "1"
    assert values["capture_captured_frames"] == values["capture_uncertain_frames"] == "1"
    assert values["capture_skipped_error"] == "6"  # the failed one, 4 queued after it, 1 offered
    assert int(values["capture_refused_frames"]) + 1 == len(results)  # wanted = written + refused


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


def test_one_node_per_capture_folder_and_a_stale_lock_is_taken_over(tmp_path) -> None:
    root = tmp_path / "cap"
    first = FrameCapture(CaptureConfig(root))
    partial = root / ".capture_x_0001.abc123.partial"
    partial.mkdir()  # stands for the first node's open segment
    with pytest.raises(CaptureError) as err:  # a second owner, here in the same process
        FrameCapture(CaptureConfig(root))
    text = str(err.value)
    assert f"capture.dir={str(root)!r} is in use" in text and f"pid {os.getpid()} on " in text
    assert "give each node its own capture.dir" in text
    assert partial.is_dir()  # the refused node did not touch the other's open segment
    assert first.close()
    assert not (root / LOCK_NAME).exists()
    # a process that dies holding the lock leaves the file behind, but not the lock
    code = ("import sys, os; from pathlib import Path; "
            "from mbmt_ros.ros.capture_folder import FolderLock; "
            "FolderLock(Path(sys.argv[1])).acquire(); print(os.getpid()); os._exit(0)")
    dead = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    assert (root / LOCK_NAME).read_text().startswith(f"{dead} on ")
    logged: list[str] = []
    second = FrameCapture(CaptureConfig(root), log=logged.append)
    assert (root / LOCK_NAME).read_text().startswith(f"{os.getpid()} on ")
    assert not partial.exists()  # the new owner cleans up what the dead one left
    assert any(f"took over the lock of {root} from pid {dead} on " in line for line in logged)
    assert second.close()
