"""Errors of the ROS side: bad images and bad node parameters (both :class:`MbmtError`)."""
from __future__ import annotations

from mbmt_ros.errors import MbmtError

__all__ = ["ImageConversionError", "NodeParameterError", "ReplayError", "CaptureError"]


class ImageConversionError(MbmtError, ValueError):
    """An image message cannot be read (bad size/step/length, unknown encoding, corrupt data)."""


class NodeParameterError(MbmtError, ValueError):
    """A perception-node parameter has an invalid value; the message names it and the fix."""


class ReplayError(MbmtError):
    """A bag cannot be replayed (missing file, no image topic, unknown topic)."""


class CaptureError(MbmtError):
    """Capturing frames is impossible (capture.dir not writable, rosbags not installed)."""
