"""Capture of the frames the perception node is unsure about, as rosbag2 (mcap) segments.

ROS-free core of the node's ``capture.*`` parameters (docs/node.md, "Capturing uncertain
frames"):

- :class:`CapturePolicy` decides per frame: *uncertain* when more than
  ``uncertain_fraction`` of the pixels have a segmentation confidence below
  ``min_confidence``; *baseline* once every ``every_s`` seconds whatever the confidence (an
  unbiased sample to compare against); a capture closer than ``min_interval_s`` to the
  previous one is skipped (rate limit).
- :class:`FrameCapture` hands wanted frames to its own writer thread through a bounded queue,
  so capture never blocks inference: when the queue is full (slow disk) the frame is dropped
  and counted. The thread writes the input image and the nearest message of each extra topic
  (depth, camera_info; :class:`ExtraTopics`) with the ``rosbags`` library (mcap storage, CDR
  as received) into *segments*: each is written in a hidden ``.<name>.<random>.partial``
  folder, closed after ``segment_frames`` frames or ``segment_s`` seconds, fsynced and
  renamed into place. A killed node therefore leaves only complete, readable bags (and a
  hidden partial folder that the next start removes); ``mbmt-train extract-bag`` reads each
  segment like any recording.
- Disk budget: what the capture folder holds plus what would be written must stay within
  ``max_mb``; once a frame does not fit, capturing stops for good (nothing is deleted or
  overwritten) and the diagnostics say so.

Message payloads are bytes (CDR, e.g. from a ``raw=True`` subscription) or message objects
that the writer thread serialises with the ``serialize`` function it was given (the node
passes ``rclpy.serialization.serialize_message``), so serialisation is off the inference
thread too.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import remove_stale_temporaries
from mbmt_ros.ros.errors import CaptureError

__all__ = ["IMAGE", "COMPRESSED", "CAMERA_INFO", "DEFAULT_TOPICS", "CaptureConfig",
           "CaptureMessage", "CapturePolicy", "ExtraTopics", "FrameCapture", "cdr_stamp_ns",
           "prepare_directory", "topic_msgtype", "uncertain_fraction"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
#: Extra topics captured with each frame when ``capture.topics`` is unset.
DEFAULT_TOPICS = ("depth", "camera_info")
#: Conservative size estimates (bytes) of mcap/rosbag2 overhead, used for the budget until a
#: segment is closed and its real size is known (measured: ~6 KB per segment with three
#: topics, ~50 B per message).
_SEGMENT_OVERHEAD = 4096
_TOPIC_OVERHEAD = 2048
_MESSAGE_OVERHEAD = 96
_MB = 1_000_000
_STOP = object()  # ends the writer thread


def uncertain_fraction(confidence: np.ndarray, min_confidence: float) -> float:
    """Fraction of pixels whose confidence is below ``min_confidence`` (NaN counts as below)."""
    conf = np.asarray(confidence)
    if conf.size == 0:
        return 0.0
    return float(np.count_nonzero(~(conf >= min_confidence))) / conf.size


def topic_msgtype(topic: str) -> str:
    """The message type of an extra capture topic, from its name: ``.../camera_info`` ->
    CameraInfo, ``.../compressed`` or ``.../compressedDepth`` -> CompressedImage, else Image."""
    last = topic.rstrip("/").rsplit("/", 1)[-1]
    if last == "camera_info":
        return CAMERA_INFO
    if last in ("compressed", "compressedDepth"):
        return COMPRESSED
    return IMAGE


def cdr_stamp_ns(data: bytes | bytearray | memoryview) -> int:
    """The header stamp (ns) of a CDR-serialised message that starts with a std_msgs/Header
    (Image, CompressedImage, CameraInfo); 0 when ``data`` is too short."""
    raw = bytes(data[:12])
    if len(raw) < 12:
        return 0
    order = "<" if raw[1] & 1 else ">"  # encapsulation 0x0001 = CDR little endian
    sec, nanosec = struct.unpack(f"{order}iI", raw[4:12])
    return sec * 1_000_000_000 + nanosec


@dataclass(frozen=True)
class CaptureConfig:
    """What and when to capture (the node's ``capture.*`` parameters)."""

    directory: Path
    min_confidence: float = 0.5
    uncertain_fraction: float = 0.2
    every_s: float = 0.0
    min_interval_s: float = 1.0
    max_mb: float = 1024.0
    segment_frames: int = 100
    segment_s: float = 30.0
    queue_size: int = 8

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * _MB)

    @classmethod
    def from_params(cls, params: Any) -> CaptureConfig:
        """From the node's validated parameters (``capture_*`` fields of NodeParams)."""
        return cls(Path(params.capture_dir).expanduser(), params.capture_min_confidence,
                   params.capture_uncertain_fraction, params.capture_every_s,
                   params.capture_min_interval_s, params.capture_max_mb,
                   params.capture_segment_frames, params.capture_segment_s,
                   params.capture_queue_size)


@dataclass(frozen=True)
class CaptureMessage:
    """One message to write: topic (fully qualified), type, header stamp (ns; the bag's log
    time) and payload (CDR bytes or a message object for ``serialize``)."""

    topic: str
    msgtype: str
    stamp_ns: int
    payload: Any


class CapturePolicy:
    """The per-frame decision (not thread-safe: the inference thread owns it)."""

    def __init__(self, config: CaptureConfig, now: float | None = None) -> None:
        self.config = config
        start = time.monotonic() if now is None else now
        self._last_capture = -math.inf
        self._next_baseline = start + config.every_s if config.every_s > 0 else math.inf

    def reason(self, confidence: np.ndarray | None, now: float) -> str:
        """``"uncertain"``, ``"baseline"`` or ``""`` (not wanted)."""
        cfg = self.config
        if confidence is not None and \
                uncertain_fraction(confidence, cfg.min_confidence) > cfg.uncertain_fraction:
            return "uncertain"
        if now >= self._next_baseline:
            return "baseline"
        return ""

    def rate_limited(self, now: float) -> bool:
        return now - self._last_capture < self.config.min_interval_s

    def taken(self, reason: str, now: float) -> None:
        """A wanted frame was handed to the writer."""
        self._last_capture = now
        if reason == "baseline":
            self._next_baseline = now + self.config.every_s


class ExtraTopics:
    """The last few messages (CDR bytes) of each extra topic; :meth:`nearest` picks, per
    topic, the one whose header stamp is closest to a frame's. Thread-safe."""

    def __init__(self, topics: Iterable[tuple[str, str]], history: int = 16) -> None:
        self._types = dict(topics)
        self._lock = threading.Lock()
        self._buffers: dict[str, deque[tuple[int, bytes]]] = {
            t: deque(maxlen=history) for t in self._types}

    def put(self, topic: str, data: bytes, received_ns: int = 0) -> None:
        stamp = cdr_stamp_ns(data) or received_ns
        with self._lock:
            self._buffers[topic].append((stamp, bytes(data)))

    def nearest(self, stamp_ns: int) -> list[CaptureMessage]:
        out = []
        with self._lock:
            for topic, buffer in self._buffers.items():
                if buffer:
                    stamp, data = min(buffer, key=lambda item: abs(item[0] - stamp_ns))
                    out.append(CaptureMessage(topic, self._types[topic], stamp, data))
        return out


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Segment:
    """One rosbag2 folder being written in a hidden partial folder of the capture folder."""

    def __init__(self, root: Path, name: str, store: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.root, self.name, self._store = root, name, store
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
        self._writer = Writer(self.tmp / name, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.frames = 0
        self.payload = 0
        self.opened = time.monotonic()

    def estimate(self, messages: Sequence[tuple[CaptureMessage, bytes]]) -> int:
        """Bytes the segment would take on disk with ``messages`` added (an upper estimate)."""
        topics = set(self._connections) | {m.topic for m, _ in messages}
        return (_SEGMENT_OVERHEAD + _TOPIC_OVERHEAD * len(topics) + self.payload
                + sum(len(d) + _MESSAGE_OVERHEAD for _, d in messages))

    def write(self, messages: Sequence[tuple[CaptureMessage, bytes]]) -> None:
        for msg, data in messages:
            conn = self._connections.get(msg.topic)
            if conn is None:
                conn = self._connections[msg.topic] = self._writer.add_connection(
                    msg.topic, msg.msgtype, typestore=self._store)
            self._writer.write(conn, msg.stamp_ns, data)
            self.payload += len(data) + _MESSAGE_OVERHEAD
        self.frames += 1

    def close(self) -> tuple[Path, int]:
        """Finish the bag, fsync it and rename it into the capture folder (a free name:
        nothing is ever overwritten); its final path and size."""
        self._writer.close()
        bag = self.tmp / self.name
        for f in bag.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(bag)
        final = self.root / self.name
        seq = 1
        while True:
            try:
                os.rename(bag, final)  # refuses a non-empty target; checked empty first
                break
            except OSError:
                if not final.exists():
                    raise
                final = self.root / f"{self.name}_{seq}"
                seq += 1
        shutil.rmtree(self.tmp, ignore_errors=True)
        _fsync_dir(self.root)
        return final, _folder_bytes(final)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def prepare_directory(directory: str | os.PathLike[str]) -> Path:
    """Check that capturing can work and make the capture folder: the ``rosbags`` package is
    importable and ``directory`` is a writable folder (created if missing); partial segments
    of a killed earlier run are removed. CaptureError (one line, with the fix) otherwise."""
    try:
        import rosbags.rosbag2  # noqa: F401
    except ImportError as exc:
        raise CaptureError("capture.enabled needs the rosbags package: pip install rosbags "
                           "(or mbmt_ros[capture])") from exc
    root = Path(directory).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(f"{root} is not writable")
        remove_stale_temporaries(root)
    except OSError as exc:
        raise CaptureError(f"capture.dir={str(directory)!r} cannot be used: {exc}; "
                           "set capture.dir to a writable folder") from exc
    return root


class FrameCapture:
    """Decide, queue and write captured frames (see the module docstring).

    The capture folder is created (CaptureError when that is impossible, or when the
    ``rosbags`` package is missing); partial segments of a killed earlier run are removed and
    the segments already there count against the budget. :meth:`offer` is called by the
    inference thread; :meth:`close` finishes the open segment.
    """

    def __init__(self, config: CaptureConfig, serialize: Callable[[Any], bytes] | None = None,
                 log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.config = config
        root = prepare_directory(config.directory)
        used = _folder_bytes(root)
        self.root = root
        self._store = get_typestore(Stores.LATEST)
        self._serialize = serialize
        self._log = log or (lambda _text: None)
        self._warn = warn or self._log
        self.policy = CapturePolicy(config)
        self._queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(("captured", "uncertain", "baseline", "skipped_rate",
                                     "skipped_budget", "dropped", "segments", "errors"), 0)
        self._used = used  # bytes in the folder: closed segments and what was there before
        self._budget_full = used >= config.max_bytes
        self.last_error = ""
        self._segment: _Segment | None = None
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="mbmt-capture", daemon=True)
        self._thread.start()
        if self._budget_full:
            self._warn(f"capture: {root} already holds {used / _MB:.2f} MB, the capture.max_mb "
                      f"budget ({config.max_mb} MB): nothing will be captured")

    # ------------------------------------------------------------------ inference thread
    def offer(self, confidence: np.ndarray | None,
              messages: Callable[[], list[CaptureMessage]], now: float | None = None) -> str:
        """Decide about one frame; ``messages`` builds what to write (called only for a frame
        that is taken). Returns ``"queued"``, ``""`` (not wanted), ``"rate"``, ``"budget"``,
        ``"dropped"`` (queue full) or ``"error"`` (capture stopped after a write failure)."""
        now = time.monotonic() if now is None else now
        reason = self.policy.reason(confidence, now)
        if not reason:
            return ""
        with self._lock:
            if self.last_error:
                return "error"
            if self._budget_full:
                self.counts["skipped_budget"] += 1
                return "budget"
        if self.policy.rate_limited(now):
            self._count("skipped_rate")
            return "rate"
        self.policy.taken(reason, now)
        try:
            self._queue.put_nowait(messages())
        except queue.Full:
            self._count("dropped")
            return "dropped"
        self._count(reason)
        return "queued"

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        period = min(0.5, self.config.segment_s)
        while True:
            try:
                item = self._queue.get(timeout=period)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._queue.task_done()
                break
            if item is not None:
                try:
                    self._write_frame(item)
                finally:
                    self._queue.task_done()
            segment = self._segment
            if segment is not None and (segment.frames >= self.config.segment_frames or
                                        time.monotonic() - segment.opened >= self.config.segment_s):
                self._close_segment()
        self._close_segment()

    def _write_frame(self, messages: list[CaptureMessage]) -> None:
        if self.last_error:
            return
        try:
            data = [(m, m.payload if isinstance(m.payload, (bytes, bytearray, memoryview))
                     else self._serialize(m.payload)) for m in messages]  # type: ignore[misc]
            if self._budget_full or not self._fits(data):
                self._on_budget_full()
                return
            if self._segment is None:
                self._segment = _Segment(self.root, self._next_name(), self._store)
            self._segment.write(data)
            self._count("captured")
        except Exception as exc:  # disk full, permissions ...: stop capturing, keep the rest
            self._fail(exc)

    def _fits(self, data: list[tuple[CaptureMessage, bytes]]) -> bool:
        if self._segment is not None:
            needed = self._segment.estimate(data)
        else:
            topics = {m.topic for m, _ in data}
            needed = (_SEGMENT_OVERHEAD + _TOPIC_OVERHEAD * len(topics)
                      + sum(len(d) + _MESSAGE_OVERHEAD for _, d in data))
        with self._lock:
            return self._used + needed <= self.config.max_bytes

    def _on_budget_full(self) -> None:
        with self._lock:
            first = not self._budget_full
            self._budget_full = True
            self.counts["skipped_budget"] += 1
        if first:
            self._warn(f"capture: the capture.max_mb budget ({self.config.max_mb} MB) is "
                      f"reached in {self.root}; capturing stops (nothing is overwritten)")

    def _next_name(self) -> str:
        self._seq += 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        return f"capture_{stamp}_{os.getpid()}_{self._seq:04d}"

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            path, size = segment.close()
        except Exception as exc:
            segment.abort()
            self._fail(exc)
            return
        with self._lock:
            self._used += size
            self.counts["segments"] += 1
        self._log(f"capture: wrote {path} ({segment.frames} frames, {size / _MB:.2f} MB)")

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self.counts["errors"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
        self._warn(f"capture: writing failed, capturing stops: {self.last_error}")

    # ------------------------------------------------------------------ control, reporting
    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued, close the open segment and end the thread; True if it ended."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the queue is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def state(self) -> str:
        """``capturing``, ``budget reached ...`` or ``error: ...`` (what /diagnostics shows)."""
        with self._lock:
            if self.last_error:
                return f"error: {self.last_error}"
            if self._budget_full:
                return (f"budget reached ({self._used / _MB:.2f} of {self.config.max_mb} MB): "
                        "not capturing")
            return "capturing"

    def values(self) -> dict[str, str]:
        """The ``capture_*`` key/values of /diagnostics."""
        state = self.state
        with self._lock:
            counts, used = dict(self.counts), self._used
        return {
            "capture_state": state, "capture_dir": str(self.root),
            "capture_captured_frames": str(counts["captured"]),
            "capture_uncertain_frames": str(counts["uncertain"]),
            "capture_baseline_frames": str(counts["baseline"]),
            "capture_skipped_rate": str(counts["skipped_rate"]),
            "capture_skipped_budget": str(counts["skipped_budget"]),
            "capture_dropped_frames": str(counts["dropped"]),
            "capture_segments": str(counts["segments"]),
            "capture_errors": str(counts["errors"]),
            "capture_used_mb": f"{used / _MB:.3f}",
            "capture_budget_mb": f"{self.config.max_mb:g}",
        }
