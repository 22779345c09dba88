"""Capture of the frames the perception node is unsure about, as rosbag2 (mcap) segments.

ROS-free core of the node's ``capture.*`` parameters (docs/node.md, "Capturing uncertain
frames"), one idea per module:

- :mod:`~mbmt_ros.ros.capture_policy`: which frames are wanted (uncertain, baseline, rate
  limit), in camera time (header stamps);
- :mod:`~mbmt_ros.ros.capture_topics`: the messages of a frame and the timestamp buffer of
  the extra topics (depth, camera_info);
- :mod:`~mbmt_ros.ros.capture_segment`: one segment, written hidden and renamed into place
  when complete;
- :mod:`~mbmt_ros.ros.capture_folder`: the capture folder and its lock (one node per folder);
- this module, :class:`FrameCapture`: the writer thread and the disk budget.

:class:`FrameCapture` hands wanted frames to its own writer thread through a bounded queue,
so capture never blocks inference: when the queue is full (slow disk) the frame is dropped
and counted. Segments are closed after ``segment_frames`` frames or ``segment_s`` seconds.
Disk budget: what the capture folder holds plus what would be written must stay within
``max_mb``; once a frame does not fit, capturing stops for good (nothing is deleted or
overwritten) and the diagnostics say so.

Counters: a wanted frame ends up *written* (``captured``, split by reason into
``uncertain`` / ``baseline``) or *refused* (``skipped_rate``, ``skipped_budget``,
``dropped``, ``skipped_error``), or is still *pending* in the queue: wanted = captured +
refused + pending at any time.

Message payloads are bytes (CDR, e.g. from a ``raw=True`` subscription) or message objects
that the writer thread serialises with the ``serialize`` function it was given (the node
passes ``rclpy.serialization.serialize_message``), so serialisation is off the inference
thread too.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np

from mbmt_ros.ros.capture_folder import claim_directory
from mbmt_ros.ros.capture_policy import CaptureConfig, CapturePolicy
from mbmt_ros.ros.capture_segment import Segment, estimate_bytes, folder_bytes
from mbmt_ros.ros.capture_topics import (
    CaptureMessage,
)
from mbmt_ros.ros.errors import CaptureError

__all__ = ["FrameCapture", "REFUSED"]

_MB = 1_000_000
_STOP = object()  # ends the writer thread
#: The counters of refused frames (their sum is ``capture_refused_frames``).
REFUSED = ("skipped_rate", "skipped_budget", "dropped", "skipped_error")


class FrameCapture:
    """Decide, queue and write captured frames (see the module docstring).

    The capture folder is created and locked (CaptureError when that is impossible, when
    another node owns it, or when the ``rosbags`` package is missing); partial segments of a
    killed earlier run are removed and the segments already there count against the budget.
    :meth:`offer` is called by the inference thread; :meth:`close` finishes the open segment
    and releases the folder.
    """

    def __init__(self, config: CaptureConfig, serialize: Callable[[Any], bytes] | None = None,
                 log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.config = config
        self._log = log or (lambda _text: None)
        self._warn = warn or self._log
        root, self._folder_lock = claim_directory(config.directory)
        if self._folder_lock.took_over:
            self._log(f"capture: took over the lock of {root} from pid "
                      f"{self._folder_lock.took_over} (no longer running)")
        try:
            used = folder_bytes(root)
        except OSError as exc:
            self._folder_lock.release()
            raise CaptureError(f"capture.dir={str(config.directory)!r} cannot be read: {exc}; "
                               "set capture.dir to a readable, writable folder") from exc
        self.root = root
        self._store = get_typestore(Stores.LATEST)
        self._serialize = serialize
        self.policy = CapturePolicy(config)
        self._queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(("captured", "uncertain", "baseline", *REFUSED, "pending",
                                     "segments", "errors"), 0)
        self._used = used  # bytes in the folder: closed segments and what was there before
        self._budget_full = used >= config.max_bytes
        self.last_error = ""
        self._segment: Segment | None = None
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="mbmt-capture", daemon=True)
        self._thread.start()
        if self._budget_full:
            self._warn(f"capture: {root} already holds {used / _MB:.2f} MB, the capture.max_mb "
                       f"budget ({config.max_mb} MB): nothing will be captured")

    # ------------------------------------------------------------------ inference thread
    def offer(self, confidence: np.ndarray | None,
              messages: Callable[[], list[CaptureMessage]], stamp_ns: int) -> str:
        """Decide about one frame stamped ``stamp_ns`` (camera time: its header stamp);
        ``messages`` builds what to write (called only for a frame that is taken). Returns
        ``"queued"``, ``""`` (not wanted), ``"rate"``, ``"budget"``, ``"dropped"`` (queue
        full) or ``"error"`` (capture stopped after a write failure)."""
        reason = self.policy.reason(confidence, stamp_ns)
        if not reason:
            return ""
        with self._lock:
            if self.last_error:
                self.counts["skipped_error"] += 1
                return "error"
            if self._budget_full:
                self.counts["skipped_budget"] += 1
                return "budget"
        if self.policy.rate_limited(stamp_ns):
            self._count("skipped_rate")
            return "rate"
        self.policy.taken(reason, stamp_ns)
        item = (reason, messages())
        self._count(pending=1)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count("dropped", pending=-1)
            return "dropped"
        return "queued"

    def _count(self, *keys: str, pending: int = 0) -> None:
        """Count a frame under ``keys`` and move it out of (or into) *pending* in one step,
        so that a snapshot of the counters always adds up."""
        with self._lock:
            for key in keys:
                self.counts[key] += 1
            self.counts["pending"] += pending

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
                outcome: tuple[str, ...] = ("skipped_error",)
                try:
                    outcome = self._write_frame(*item)
                finally:
                    self._count(*outcome, pending=-1)
                    self._queue.task_done()
            segment = self._segment
            if segment is not None and (segment.frames >= self.config.segment_frames or
                                        time.monotonic() - segment.opened >= self.config.segment_s):
                self._close_segment()
        self._close_segment()

    def _write_frame(self, reason: str, messages: list[CaptureMessage]) -> tuple[str, ...]:
        """Write one frame; the counters it goes to: ``captured`` and ``reason`` when written,
        else why not."""
        if self.last_error:
            return ("skipped_error",)
        try:
            data = [(m, m.payload if isinstance(m.payload, (bytes, bytearray, memoryview))
                     else self._serialize(m.payload)) for m in messages]  # type: ignore[misc]
            if self._budget_full or not self._fits(data):
                self._on_budget_full()
                return ("skipped_budget",)
            if self._segment is None:
                self._segment = Segment(self.root, self._next_name(), self._store)
            self._segment.write(data)
        except Exception as exc:  # disk full, permissions ...: stop capturing, keep the rest
            self._fail(exc)
            return ("skipped_error",)
        return ("captured", reason)

    def _fits(self, data: list[tuple[CaptureMessage, bytes]]) -> bool:
        needed = estimate_bytes(data, self._segment)
        with self._lock:
            return self._used + needed <= self.config.max_bytes

    def _on_budget_full(self) -> None:
        with self._lock:
            first = not self._budget_full
            self._budget_full = True
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
        """Write what is queued, close the open segment, end the thread and release the
        folder; True if the thread ended (the folder stays locked while it runs)."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._folder_lock.release()
        return True

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
            "capture_refused_frames": str(sum(counts[k] for k in REFUSED)),
            "capture_skipped_rate": str(counts["skipped_rate"]),
            "capture_skipped_budget": str(counts["skipped_budget"]),
            "capture_dropped_frames": str(counts["dropped"]),
            "capture_skipped_error": str(counts["skipped_error"]),
            "capture_pending_frames": str(counts["pending"]),
            "capture_segments": str(counts["segments"]),
            "capture_errors": str(counts["errors"]),
            "capture_used_mb": f"{used / _MB:.3f}",
            "capture_budget_mb": f"{self.config.max_mb:g}",
        }
