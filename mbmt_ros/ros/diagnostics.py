"""Frame statistics of the perception node and their diagnostic_msgs/DiagnosticStatus.

:class:`FrameStats` is thread-safe (the subscription callback, the inference worker and the
diagnostics timer all touch it) and ROS-free except for :meth:`FrameStats.to_status`.
Rates and latency figures cover the time since the previous report (about a second);
dropped / rejected / processed counters are totals since activation.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

__all__ = ["FrameStats", "StatsReport"]


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


@dataclass
class FrameStats:
    """Counters and per-frame latencies, reset per period by :meth:`report`."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    errors: int = 0
    last_error: str = ""
    _period_start: float = field(default_factory=time.monotonic)
    _period_received: int = 0
    _period_processed: int = 0
    _period_rejected: int = 0
    _period_errors: int = 0
    _latencies: list[float] = field(default_factory=list)
    _inference: list[float] = field(default_factory=list)

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

    def on_processed(self, latency_s: float, inference_s: float = float("nan")) -> None:
        """A frame's outputs are published: ``latency_s`` from its stamp, ``inference_s`` of
        it in the backend (the rest is the node's own overhead)."""
        with self._lock:
            self.processed += 1
            self._period_processed += 1
            self._latencies.append(latency_s)
            if inference_s == inference_s:
                self._inference.append(inference_s)

    def report(self, now: float | None = None) -> StatsReport:
        """Figures since the previous call; starts a new period."""
        now = time.monotonic() if now is None else now
        with self._lock:
            period = max(now - self._period_start, 1e-9)
            lat = self._latencies
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
                last_error=self.last_error)
            self._period_start = now
            self._period_received = self._period_processed = 0
            self._period_rejected = self._period_errors = 0
            self._latencies, self._inference = [], []
        return rep

    @staticmethod
    def to_status(report: StatsReport, name: str, hardware_id: str,
                  extra: dict[str, str] | None = None) -> DiagnosticStatus:
        """A DiagnosticStatus: OK, WARN when frames were rejected or no frame arrived in the
        period, ERROR when the backend failed on a frame in the period."""
        if report.errors_in_period:
            level, message = DiagnosticStatus.ERROR, f"inference failed: {report.last_error}"
        elif report.rejected_in_period:
            level, message = DiagnosticStatus.WARN, f"rejected frames: {report.last_error}"
        elif report.input_rate_hz == 0.0:
            level, message = DiagnosticStatus.WARN, "no input images"
        else:
            level, message = DiagnosticStatus.OK, "running"
        values = {
            "input_rate_hz": f"{report.input_rate_hz:.2f}",
            "output_rate_hz": f"{report.output_rate_hz:.2f}",
            "latency_median_ms": f"{report.latency_median_ms:.2f}",
            "latency_max_ms": f"{report.latency_max_ms:.2f}",
            "inference_median_ms": f"{report.inference_median_ms:.2f}",
            "received_frames": str(report.received),
            "processed_frames": str(report.processed),
            "dropped_frames": str(report.dropped),
            "rejected_frames": str(report.rejected),
            "inference_errors": str(report.errors),
        }
        values.update(extra or {})
        return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])
