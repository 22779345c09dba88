"""``mbmt-replay``: a rosbag2 recording written with rosbags is published with its stamps."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import VENV_BIN

from mbmt_ros.ros.errors import ReplayError
from mbmt_ros.ros.replay import bag_topics, read_bag

FRAMES = 5


def _write_bag(path: Path) -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Info = store.types["sensor_msgs/msg/CameraInfo"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    String = store.types["std_msgs/msg/String"]
    RoI = store.types["sensor_msgs/msg/RegionOfInterest"]
    with Writer(path, version=9) as writer:
        image = writer.add_connection("/camera/image_raw", Image.__msgtype__, typestore=store)
        info = writer.add_connection("/camera/camera_info", Info.__msgtype__, typestore=store)
        other = writer.add_connection("/chatter", String.__msgtype__, typestore=store)
        for i in range(FRAMES):
            t = 1_000_000_000 + i * 50_000_000  # 20 Hz
            header = Header(stamp=Time(sec=1, nanosec=i * 50_000_000), frame_id="cam")
            pixels = np.full((4, 6, 3), i, np.uint8)
            msg = Image(header=header, height=4, width=6, encoding="rgb8", is_bigendian=0, step=18,
                        data=pixels.reshape(-1))
            writer.write(image, t, store.serialize_cdr(msg, Image.__msgtype__))
            cam = Info(header=header, height=4, width=6, distortion_model="plumb_bob",
                       d=np.zeros(5), k=np.eye(3).reshape(-1), r=np.eye(3).reshape(-1),
                       p=np.zeros(12), binning_x=0, binning_y=0,
                       roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            writer.write(info, t, store.serialize_cdr(cam, Info.__msgtype__))
            writer.write(other, t, store.serialize_cdr(String(data="x"), String.__msgtype__))
    return path


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_bag(tmp_path_factory.mktemp("bags") / "camera")


def test_read_bag_selects_camera_topics(bag: Path) -> None:
    assert bag_topics(bag) == {"/camera/image_raw": "sensor_msgs/msg/Image",
                               "/camera/camera_info": "sensor_msgs/msg/CameraInfo"}
    items = list(read_bag(bag, ["/camera/image_raw"]))
    assert len(items) == FRAMES and {t for t, *_ in items} == {"/camera/image_raw"}
    with pytest.raises(ReplayError, match="no topic"):
        bag_topics(bag, ["/nope"])
    with pytest.raises(ReplayError, match="are not"):
        bag_topics(bag, ["/chatter"])
    with pytest.raises(ReplayError, match="does not exist"):
        bag_topics(bag.parent / "missing")


def test_cli_error_is_one_line_exit_2(bag: Path) -> None:
    proc = subprocess.run([str(VENV_BIN / "mbmt-replay"), str(bag), "--topic", "/nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mbmt-replay: error: bag") and "/nope" in proc.stderr


@pytest.mark.ros
def test_replay_publishes_every_frame_with_its_stamp(bag: Path) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image

    from mbmt_ros.imaging.encodings import image_to_numpy

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("replay_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    images: list[Image] = []
    infos: list[CameraInfo] = []
    node.create_subscription(Image, "/image", images.append, 10)
    node.create_subscription(CameraInfo, "/camera/camera_info", infos.append, 10)
    try:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mbmt-replay"), str(bag), "--rate", "2", "--wait-for-subscribers", "20",
             "--ros-args", "-r", "/camera/image_raw:=/image"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 60:
            executor.spin_once(timeout_sec=0.05)
        while (len(images) < FRAMES or len(infos) < FRAMES) and time.monotonic() - started < 90:
            executor.spin_once(timeout_sec=0.05)  # what DDS still holds, however busy the machine
        out = proc.communicate(timeout=10)[0]
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, out
    assert [m.header.stamp.nanosec for m in images] == [i * 50_000_000 for i in range(FRAMES)]
    assert all(m.header.stamp.sec == 1 and m.header.frame_id == "cam" for m in images)
    assert [int(image_to_numpy(m)[0, 0, 0]) for m in images] == list(range(FRAMES))
    assert len(infos) == FRAMES and infos[0].width == 6
    assert "published 10 messages" in out
