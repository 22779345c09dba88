"""``mbmt-replay BAG [--topic T ...] [--rate R] [--loop]``: publish a bag's camera topics.

A small stand-in for ``ros2 bag play`` (not installed everywhere) used by the tests and the
demo. It reads rosbag2 (and ROS 1) recordings with the ``rosbags`` library and publishes
every ``sensor_msgs/Image``, ``CompressedImage`` and ``CameraInfo`` topic (or those named
with ``--topic``) with the recorded headers, paced by the recording times divided by
``--rate`` (``--rate 0``: as fast as possible). ``--restamp`` sets each header stamp to
the publish time instead (for live latency figures). ROS arguments after ``--ros-args``
work as for any node, e.g. ``--ros-args -r /camera/image_raw:=/image``.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mbmt_ros.ros.errors import ReplayError

__all__ = ["REPLAY_TYPES", "bag_topics", "read_bag", "main"]

#: Message types replayed by default (rosbags type names).
REPLAY_TYPES: tuple[str, ...] = (
    "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
)


def _ros_class(msgtype: str) -> Any:
    """The rclpy message class of a rosbags type name (only the replayed types)."""
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
               "sensor_msgs/msg/CameraInfo": CameraInfo}
    return classes[msgtype]


def _select(path: Path, available: dict[str, str], topics: Sequence[str]) -> dict[str, str]:
    unknown = [t for t in topics if t not in available]
    if unknown:
        raise ReplayError(f"bag {path} has no topic(s) {unknown}; it has {sorted(available)}")
    bad = [t for t in topics if available[t] not in REPLAY_TYPES]
    if bad:
        raise ReplayError(f"topic(s) {bad} of {path} are not {list(REPLAY_TYPES)}")
    chosen = {t: m for t, m in available.items() if (t in topics if topics else m in REPLAY_TYPES)}
    if not chosen:
        raise ReplayError(f"bag {path} has no image or camera_info topic; it has {sorted(available)}")
    return chosen


def bag_topics(bag: str | Path, topics: Sequence[str] = ()) -> dict[str, str]:
    """The replayable topics of ``bag`` (``topic -> msgtype``), narrowed to ``topics``."""
    return dict((t, m) for t, m, _, _ in _read(bag, topics, messages=False))


def read_bag(bag: str | Path, topics: Sequence[str] = ()) -> Iterator[tuple[str, str, int, bytes]]:
    """Yield ``(topic, msgtype, log_time_ns, cdr_bytes)`` of the bag's replayable topics in
    recording order; ``topics`` narrows them (an unknown or non-image topic is a ReplayError)."""
    return _read(bag, topics, messages=True)


def _read(bag: str | Path, topics: Sequence[str], messages: bool) -> Iterator[tuple[str, str, int, bytes]]:
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    path = Path(bag)
    if not path.exists():
        raise ReplayError(f"bag {path} does not exist; pass a rosbag2 directory or .mcap/.db3/.bag file")
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    try:
        with AnyReader([path], default_typestore=typestore) as reader:
            chosen = _select(path, {c.topic: c.msgtype for c in reader.connections}, topics)
            if not messages:
                yield from ((t, m, 0, b"") for t, m in chosen.items())
                return
            connections = [c for c in reader.connections if c.topic in chosen]
            for conn, timestamp, raw in reader.messages(connections=connections):
                data = bytes(raw) if reader.is2 else typestore.ros1_to_cdr(raw, conn.msgtype)
                yield conn.topic, conn.msgtype, int(timestamp), data
    except AnyReaderError as exc:
        raise ReplayError(f"cannot read bag {path}: {exc}") from exc


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mbmt-replay",
        description="Publish the Image, CompressedImage and CameraInfo topics of a rosbag2 (or "
                    "ROS 1) recording with their recorded headers. ROS arguments go after "
                    "--ros-args, e.g. --ros-args -r /camera/image_raw:=/image.")
    parser.add_argument("bag", help="rosbag2 directory (or a .mcap / .db3 / ROS 1 .bag file)")
    parser.add_argument("--topic", action="append", default=[],
                        help="topic to publish (repeatable; default: every Image/CompressedImage/CameraInfo topic)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor (default 1.0; 0 = as fast as possible)")
    parser.add_argument("--loop", action="store_true", help="replay again and again until Ctrl-C")
    parser.add_argument("--restamp", action="store_true",
                        help="set header.stamp to the publish time instead of the recorded stamp")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                        help="before starting, wait up to SECONDS until every topic has a subscriber")
    parser.add_argument("--linger", type=float, default=0.5, metavar="SECONDS",
                        help="keep the publishers up this long after the last message (default 0.5)")
    parser.add_argument("--qos-depth", type=int, default=10, help="publisher history depth (default 10)")
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error(f"--rate must be >= 0, got {args.rate}")
    return args


def _wait_for_subscribers(node: Any, publishers: dict[str, Any], timeout: float) -> None:
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in publishers.values()):
        rclpy.spin_once(node, timeout_sec=0.05)


def _linger(node: Any, seconds: float) -> None:
    """Let reliable subscribers fetch the last messages before the publishers go away."""
    import rclpy

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)


def _play(node: Any, publishers: dict[str, Any], args: argparse.Namespace) -> int:
    """One pass over the bag; returns the number of messages published."""
    from rclpy.serialization import deserialize_message

    count = 0
    start_wall = start_bag = None
    for topic, msgtype, stamp, data in read_bag(args.bag, args.topic):
        if args.rate > 0:
            if start_wall is None:
                start_wall, start_bag = time.monotonic(), stamp
            delay = start_wall + (stamp - start_bag) / 1e9 / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        msg = deserialize_message(data, _ros_class(msgtype))
        if args.restamp:
            msg.header.stamp = node.get_clock().now().to_msg()
        publishers[topic].publish(msg)
        count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mbmt-replay``; exits 2 with a one-line message on a ReplayError."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else ["mbmt-replay", *argv])
    args = _parse(remove_ros_args(argv)[1:])
    try:
        topics = bag_topics(args.bag, args.topic)
    except ReplayError as exc:
        print(f"mbmt-replay: error: {exc}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    node = rclpy.create_node("mbmt_replay")
    try:
        publishers = {t: node.create_publisher(_ros_class(m), t, args.qos_depth) for t, m in topics.items()}
        if args.wait_for_subscribers > 0:
            _wait_for_subscribers(node, publishers, args.wait_for_subscribers)
        while True:
            count = _play(node, publishers, args)
            node.get_logger().info(f"published {count} messages from {args.bag}")
            if not args.loop:
                break
        _linger(node, args.linger)
    except ReplayError as exc:
        print(f"mbmt-replay: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
