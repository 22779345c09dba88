"""What the image code needs of a message: its fields, as typing protocols.

rclpy's ``sensor_msgs.msg.Image`` / ``CompressedImage`` and the ``rosbags`` library's
messages both have these fields, so both decode alike, and nothing here imports ROS.
"""
from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ImageMessage", "CompressedMessage"]


class ImageMessage(Protocol):
    """The fields of a ``sensor_msgs/Image``."""

    height: int
    width: int
    step: int
    encoding: str
    is_bigendian: int
    data: Any  # bytes-like: array.array, bytes, a NumPy uint8 array


class CompressedMessage(Protocol):
    """The fields of a ``sensor_msgs/CompressedImage``."""

    format: str
    data: Any
