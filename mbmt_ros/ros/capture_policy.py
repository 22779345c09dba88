"""The capture trigger policy: which frames the perception node wants to keep, in camera time.

Per frame (``capture.*`` parameters, docs/node.md "Capturing uncertain frames"):

- *uncertain* when more than ``uncertain_fraction`` of the pixels have a segmentation
  confidence below ``min_confidence``;
- *baseline* once every ``every_s`` seconds whatever the confidence (an unbiased sample to
  compare against), counted from the first frame and then from the last baseline capture;
- a wanted frame closer than ``min_interval_s`` to the previous capture is refused (rate
  limit); a due baseline stays due.

All times are the frames' header stamps (*camera time*, integer nanoseconds), not the time
the node happens to process them: replaying a bag faster or slower, a simulation clock or a
node that lags behind its camera captures the same frames. A stamp earlier than the
baseline's reference (the clock jumped back: a bag played again, a simulation reset) starts
the policy afresh. ROS-free (part of ``mbmt_ros.ros.capture``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CaptureConfig", "CapturePolicy", "uncertain_fraction"]

_MB = 1_000_000
_NS = 1_000_000_000


def uncertain_fraction(confidence: np.ndarray, min_confidence: float) -> float:
    """Fraction of pixels whose confidence is below ``min_confidence`` (NaN counts as below)."""
    conf = np.asarray(confidence)
    if conf.size == 0:
        return 0.0
    return float(np.count_nonzero(~(conf >= min_confidence))) / conf.size


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


class CapturePolicy:
    """The per-frame decision in camera time (not thread-safe: the inference thread owns it).

    Call :meth:`reason` for every frame (it follows the camera clock), then, for a wanted
    frame, :meth:`rate_limited` and, if the frame is handed to the writer, :meth:`taken`.
    """

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self._min_interval_ns = round(config.min_interval_s * _NS)
        self._every_ns = round(config.every_s * _NS) if config.every_s > 0 else None
        self._reference: int | None = None  # the baseline period counts from here
        self._last_capture: int | None = None

    def reason(self, confidence: np.ndarray | None, stamp_ns: int) -> str:
        """``"uncertain"``, ``"baseline"`` or ``""`` (not wanted) for a frame stamped
        ``stamp_ns``."""
        if self._reference is None or stamp_ns < self._reference:  # first frame / clock jumped back
            self._reference, self._last_capture = stamp_ns, None
        cfg = self.config
        if confidence is not None and \
                uncertain_fraction(confidence, cfg.min_confidence) > cfg.uncertain_fraction:
            return "uncertain"
        if self._every_ns is not None and stamp_ns - self._reference >= self._every_ns:
            return "baseline"
        return ""

    def rate_limited(self, stamp_ns: int) -> bool:
        """Closer than ``min_interval_s`` to the last capture, in either direction (frames
        a little out of order are limited too)."""
        last = self._last_capture
        return last is not None and abs(stamp_ns - last) < self._min_interval_ns

    def taken(self, reason: str, stamp_ns: int) -> None:
        """A wanted frame was handed to the writer."""
        self._last_capture = stamp_ns
        if reason == "baseline":
            self._reference = stamp_ns
