"""Errors of the ROS side: bad node parameters, replay and capture (all :class:`MbmtError`;
bad images are :class:`mbmt_ros.imaging.errors.ImageConversionError`)."""
from __future__ import annotations

from mbmt_ros.errors import MbmtError

__all__ = ["NodeParameterError", "ReplayError", "CaptureError"]


class NodeParameterError(MbmtError, ValueError):
    """A perception-node parameter has an invalid value; the message names it and the fix."""


class ReplayError(MbmtError):
    """A bag cannot be replayed (missing file, no image topic, unknown topic)."""


class CaptureError(MbmtError):
    """Capturing frames is impossible (capture.dir not writable, rosbags not installed)."""
