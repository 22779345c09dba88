"""The messages of a captured frame and the timestamp buffer of the extra topics.

A captured frame is the input image plus, per extra topic (depth, camera_info), the received
message whose header stamp is nearest the image's. :class:`ExtraTopics` keeps the last few
messages of each extra topic undecoded (CDR bytes, as a ``raw=True`` subscription hands
them over) and picks that nearest one; :func:`cdr_stamp_ns` reads a stamp without
deserialising. ROS-free (part of ``mbmt_ros.ros.capture``).
"""
from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["IMAGE", "COMPRESSED", "CAMERA_INFO", "DEFAULT_TOPICS", "CaptureMessage",
           "ExtraTopics", "cdr_stamp_ns", "topic_msgtype"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
#: Extra topics captured with each frame when ``capture.topics`` is unset.
DEFAULT_TOPICS = ("depth", "camera_info")


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
class CaptureMessage:
    """One message to write: topic (fully qualified), type, header stamp (ns; the bag's log
    time) and payload (CDR bytes or a message object for the capture's ``serialize``)."""

    topic: str
    msgtype: str
    stamp_ns: int
    payload: Any


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
