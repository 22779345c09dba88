"""Frame statistics of the perception node and their diagnostic_msgs/DiagnosticStatus.

:class:`FrameStats` is thread-safe (the subscription callback, the inference worker and the
diagnostics timer all touch it) and ROS-free except for :meth:`FrameStats.to_status`.
Rates and latency figures cover the time since the previous report (about a second);
dropped / rejected / processed counters are totals since activation. Per-frame timing
segments (:class:`FrameTiming`: stamps taken in the node from receipt to the last publish)
are kept for the last ``window`` processed frames, whose p50/p99 each report gives, with the
node's overhead ``(receipt -> last publish - predict) / predict`` per frame: a few frames
per period are too few for a p99. Over the same window, ``input_delay`` is the header stamp ->
receipt by the subscription callback (the camera's and DDS's share of the latency, on the node's
clock: meaningful when the camera stamps with a clock synchronised to the node's).
"""
from __future__ import annotations

import statistics
import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

__all__ = ["FrameStats", "FrameTiming", "StatsReport", "SEGMENTS"]

#: Timing segments of one frame, in order; ``total`` is receipt -> last publish returned.
SEGMENTS = ("queue", "convert", "predict", "build", "publish", "total")


@dataclass(frozen=True)
class FrameTiming:
    """Monotonic stamps (``time.monotonic_ns``) of one frame's way through the node:
    received by the subscription callback, taken by the inference thread, converted to RGB,
    predict started / returned, output messages built, last publish returned."""

    received: int
    taken: int
    converted: int
    predict_start: int
    predict_end: int
    built: int
    published: int

    def segments_ms(self) -> dict[str, float]:
        """Milliseconds per segment of :data:`SEGMENTS` (``total`` also holds the short step
        between conversion and predict, so it is at least the sum of the others)."""
        ms = 1e-6
        return {"queue": (self.taken - self.received) * ms,
                "convert": (self.converted - self.taken) * ms,
                "predict": (self.predict_end - self.predict_start) * ms,
                "build": (self.built - self.predict_end) * ms,
                "publish": (self.published - self.built) * ms,
                "total": (self.published - self.received) * ms}

    def overhead_pct(self) -> float:
        """The node's overhead on this frame: (total - predict) / predict, in percent."""
        predict = self.predict_end - self.predict_start
        return 100.0 * (self.published - self.received - predict) / predict if predict > 0 else float("nan")


@dataclass(frozen=True)
class StatsReport:
    """One reporting period's figures (rates in Hz, latencies in milliseconds)."""

    input_rate_hz: float
    output_rate_hz: float
    latency_median_ms: float
    latency_max_ms: float
    inference_median_ms: float
    received: int
    processed: int
    dropped: int
    rejected: int
    errors: int
    rejected_in_period: int
    errors_in_period: int
    last_error: str = ""
    receipt_latency_median_ms: float = float("nan")
    receipt_latency_max_ms: float = float("nan")
    skipped: int = 0
    #: ``<segment>_p50_ms`` / ``_p99_ms`` and ``overhead_p50_pct`` / ``_p99_pct`` over the window
    timing: dict[str, float] = field(default_factory=dict)
    timing_frames: int = 0


@dataclass
class FrameStats:
    """Counters and per-frame latencies, reset per period by :meth:`report`; frame timings
    of the last ``window`` processed frames."""

    window: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    errors: int = 0
    skipped: int = 0
    last_error: str = ""
    _period_start: float = field(default_factory=time.monotonic)
    _period_received: int = 0
    _period_processed: int = 0
    _period_rejected: int = 0
    _period_errors: int = 0
    _latencies: list[float] = field(default_factory=list)
    _inference: list[float] = field(default_factory=list)
    _receipt: list[float] = field(default_factory=list)
    _timings: deque = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self._timings = deque(maxlen=max(1, int(self.window)))

    def on_skipped(self) -> None:
        """A frame was not even decoded: no output had a subscriber."""
        with self._lock:
            self.skipped += 1

    def on_received(self, dropped_older: bool) -> None:
        """A frame arrived; ``dropped_older`` when it replaced one never processed."""
        with self._lock:
            self.received += 1
            self._period_received += 1
            self.dropped += int(dropped_older)

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self._period_rejected += 1
            self.last_error = reason

    def on_error(self, reason: str) -> None:
        """The backend failed on a frame (not the frame's fault)."""
        with self._lock:
            self.errors += 1
            self._period_errors += 1
            self.last_error = reason

    def on_processed(self, latency_s: float, inference_s: float = float("nan"),
                     timing: FrameTiming | None = None,
                     input_delay_s: float = float("nan")) -> None:
        """A frame's outputs are published: ``latency_s`` from its header stamp,
        ``inference_s`` of it in the backend, ``timing`` its stamps in the node (giving the
        latency from receipt and the segments), ``input_delay_s`` from its header stamp to
        its receipt (NaN when the frame had no stamp)."""
        with self._lock:
            self.processed += 1
            self._period_processed += 1
            self._latencies.append(latency_s)
            if inference_s == inference_s:
                self._inference.append(inference_s)
            if timing is not None:
                segments = timing.segments_ms()
                self._receipt.append(segments["total"] / 1e3)
                self._timings.append((*(segments[s] for s in SEGMENTS), timing.overhead_pct(),
                                      segments["total"] - segments["predict"],
                                      1e3 * input_delay_s))

    def _timing_percentiles(self) -> dict[str, float]:
        if not self._timings:
            return {}
        table = np.asarray(self._timings, dtype=np.float64)
        with warnings.catch_warnings():  # an all-NaN column (no stamped frames) gives NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            p50, p99 = np.nanpercentile(table, [50, 99], axis=0)
        out: dict[str, float] = {}
        columns = [*((s, "ms") for s in SEGMENTS), ("overhead", "pct"), ("overhead", "ms"),
                   ("input_delay", "ms")]
        for i, (name, unit) in enumerate(columns):
            out[f"{name}_p50_{unit}"], out[f"{name}_p99_{unit}"] = float(p50[i]), float(p99[i])
        return out

    def report(self, now: float | None = None) -> StatsReport:
        """Figures since the previous call; starts a new period."""
        now = time.monotonic() if now is None else now
        with self._lock:
            period = max(now - self._period_start, 1e-9)
            lat, receipt = self._latencies, self._receipt
            rep = StatsReport(
                input_rate_hz=self._period_received / period,
                output_rate_hz=self._period_processed / period,
                latency_median_ms=1e3 * statistics.median(lat) if lat else float("nan"),
                latency_max_ms=1e3 * max(lat) if lat else float("nan"),
                inference_median_ms=(1e3 * statistics.median(self._inference) if self._inference
                                     else float("nan")),
                received=self.received, processed=self.processed, dropped=self.dropped,
                rejected=self.rejected, errors=self.errors,
                rejected_in_period=self._period_rejected, errors_in_period=self._period_errors,
                last_error=self.last_error,
                receipt_latency_median_ms=1e3 * statistics.median(receipt) if receipt else float("nan"),
                receipt_latency_max_ms=1e3 * max(receipt) if receipt else float("nan"),
                skipped=self.skipped, timing=self._timing_percentiles(),
                timing_frames=len(self._timings))
            self._period_start = now
            self._period_received = self._period_processed = 0
            self._period_rejected = self._period_errors = 0
            self._latencies, self._inference, self._receipt = [], [], []
        return rep

    @staticmethod
    def to_status(report: StatsReport, name: str, hardware_id: str,
                  extra: dict[str, str] | None = None,
                  conditions: Sequence[tuple[bytes, str]] = ()) -> DiagnosticStatus:
        """A DiagnosticStatus: ERROR when the backend failed on a frame in the period, WARN
        when frames were rejected or no frame arrived in the period, plus ``conditions``
        ``(level, message)`` of other parts (the capture's ``budget reached``).

        Precedence, so that no condition hides another: the level is the highest of those
        present (OK when none: ``running``); the message lists every condition present,
        joined by ``; ``, highest level first and, within a level, in this order: inference
        failed, rejected frames, no input images, then ``conditions`` in their order."""
        present = list(filter(None, [
            report.errors_in_period and (DiagnosticStatus.ERROR,
                                         f"inference failed: {report.last_error}"),
            report.rejected_in_period and (DiagnosticStatus.WARN,
                                           f"rejected frames: {report.last_error}"),
            report.input_rate_hz == 0.0 and (DiagnosticStatus.WARN, "no input images"),
            *conditions]))
        present.sort(key=lambda condition: condition[0], reverse=True)  # stable: keeps the order
        level = present[0][0] if present else DiagnosticStatus.OK
        message = "; ".join(text for _, text in present) or "running"
        values = {
            "input_rate_hz": f"{report.input_rate_hz:.2f}",
            "output_rate_hz": f"{report.output_rate_hz:.2f}",
            "latency_median_ms": f"{report.latency_median_ms:.2f}",
            "latency_max_ms": f"{report.latency_max_ms:.2f}",
            "latency_receipt_median_ms": f"{report.receipt_latency_median_ms:.2f}",
            "latency_receipt_max_ms": f"{report.receipt_latency_max_ms:.2f}",
            "inference_median_ms": f"{report.inference_median_ms:.2f}",
            "timing_frames": str(report.timing_frames),
            **{k: f"{v:.3f}" for k, v in report.timing.items()},
            "received_frames": str(report.received),
            "processed_frames": str(report.processed),
            "dropped_frames": str(report.dropped),
            "skipped_frames": str(report.skipped),
            "rejected_frames": str(report.rejected),
            "inference_errors": str(report.errors),
        }
        values.update(extra or {})
        return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])
