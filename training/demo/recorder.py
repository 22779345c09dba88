"""The output recorder: an rclpy node that keeps what the perception node publishes.

It subscribes to the perception node's ``~/segmentation``, ``~/depth`` and ``~/normals``
(serialised messages, ``raw=True``: they go to the output bag unchanged), to the camera
image the replay publishes, to its CameraInfo (only so that ``mbmt-replay
--wait-for-subscribers`` waits for this recorder as well as for the node) and to
``/diagnostics``. Times come from the middleware (``MessageInfo``, system clock): the
latency of a frame is the time the last of its outputs was received here minus the time
the replay published its image - the whole way camera -> node -> consumer over DDS. Frames
are matched by header stamp, as everywhere in the demo.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["OUTPUT_TOPICS", "RecordedFrame", "OutputRecorder", "latency_stats"]

#: task -> private output topic of the perception node (relative to its node name)
OUTPUT_TOPICS: dict[str, str] = {
    "segmentation": "segmentation", "depth": "depth", "normals": "normals",
}
_IMAGE = "sensor_msgs/msg/Image"


@dataclass
class RecordedFrame:
    """One input frame: when it was published and when each of its outputs arrived (ns,
    system clock)."""

    stamp_ns: int
    input_ns: int | None = None
    outputs_ns: dict[str, int] = field(default_factory=dict)


def _stamp(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


class OutputRecorder:
    """Record the outputs of ``node_name`` (e.g. ``/perception_node``) on ``node``; the
    publication time of each image on ``input_topic`` is the frame's input time;
    ``info_topic`` (optional) is subscribed only to be waited for.

    ``node`` is an rclpy node the caller spins; callbacks may run on any executor thread.
    """

    def __init__(self, node: Any, node_name: str, input_topic: str, info_topic: str = "",
                 tasks: tuple[str, ...] = tuple(OUTPUT_TOPICS)) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self._node = node
        self._lock = threading.Lock()
        self.topics = {task: f"{node_name.rstrip('/')}/{OUTPUT_TOPICS[task]}" for task in tasks}
        #: (topic, stamp) -> (topic, msgtype, receive time, CDR): the latest output of a
        #: frame per topic (a frame re-sent after a drop is recorded once)
        self.messages: dict[tuple[str, int], tuple[str, str, int, bytes]] = {}
        self.frames: dict[int, RecordedFrame] = {}
        #: the node's last diagnostics values, and the last ones of a period with output
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_active: dict[str, str] = {}
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self._subs = [node.create_subscription(Image, topic, self._output_cb(task, topic), reliable,
                                               raw=True)
                      for task, topic in self.topics.items()]
        self._subs.append(node.create_subscription(Image, input_topic, self._on_input, reliable))
        if info_topic:
            self._subs.append(node.create_subscription(CameraInfo, info_topic,
                                                       lambda _msg: None, reliable))
        self._subs.append(node.create_subscription(DiagnosticArray, "/diagnostics",
                                                   self._on_diagnostics, 10))
        self._node_name = node_name.strip("/")

    def _frame(self, stamp: int) -> RecordedFrame:
        frame = self.frames.get(stamp)
        if frame is None:
            frame = self.frames[stamp] = RecordedFrame(stamp)
        return frame

    def _output_cb(self, task: str, topic: str) -> Any:
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        def callback(data: bytes, info: Any) -> None:
            now = int(info["received_timestamp"])
            stamp = _stamp(deserialize_message(data, Image))
            with self._lock:  # log time = receive time, as `ros2 bag record` does
                self.messages[(topic, stamp)] = (topic, _IMAGE, now, bytes(data))
                self._frame(stamp).outputs_ns[task] = now

        return callback

    def _on_input(self, msg: Any, info: Any) -> None:
        sent = int(info["source_timestamp"])
        with self._lock:  # the latest publication: a frame re-sent after a drop starts again
            self._frame(_stamp(msg)).input_ns = sent

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if self._node_name and self._node_name not in status.name:
                continue
            values = {kv.key: kv.value for kv in status.values}
            with self._lock:
                self.diagnostics = values
                if _positive(values.get("output_rate_hz")):
                    self.diagnostics_active = values

    # ------------------------------------------------------------------ queries
    def connected(self) -> bool:
        """True once every output subscription is matched with a publisher."""
        return all(sub.get_publisher_count() > 0 for sub in self._subs[:len(self.topics)])

    def complete_stamps(self) -> set[int]:
        """Stamps for which every output topic has arrived."""
        with self._lock:
            return {s for s, f in self.frames.items() if len(f.outputs_ns) == len(self.topics)}

    def snapshot(self) -> tuple[list[tuple[str, str, int, bytes]], dict[int, RecordedFrame],
                                dict[str, dict[str, str]]]:
        """Copies of the messages, the frames and ``{"last": ..., "active": ...}`` diagnostics."""
        with self._lock:
            return list(self.messages.values()), dict(self.frames), {
                "last": dict(self.diagnostics), "active": dict(self.diagnostics_active)}


def _positive(text: str | None) -> bool:
    try:
        return float(text or "nan") > 0
    except ValueError:
        return False


def latency_stats(frames: dict[int, RecordedFrame], n_topics: int) -> dict[str, float]:
    """Latency percentiles (ms) and the output rate (Hz) of the complete frames."""
    done = [f for f in frames.values() if len(f.outputs_ns) == n_topics]
    lat = np.array([(max(f.outputs_ns.values()) - f.input_ns) / 1e6 for f in done
                    if f.input_ns is not None], dtype=np.float64)
    ends = sorted(max(f.outputs_ns.values()) for f in done)
    rate = (len(ends) - 1) / ((ends[-1] - ends[0]) / 1e9) if len(ends) > 1 and ends[-1] > ends[0] \
        else float("nan")
    stats = {"frames": float(len(done)), "output_rate_hz": float(rate)}
    for q in (50, 90, 99):
        stats[f"latency_p{q}_ms"] = float(np.percentile(lat, q)) if lat.size else float("nan")
    stats["latency_max_ms"] = float(lat.max()) if lat.size else float("nan")
    return stats
