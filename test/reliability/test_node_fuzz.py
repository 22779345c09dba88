"""The live perception node (real rclpy, DDS on loopback) fed arbitrary malformed camera
messages - any size, step, encoding, byte length - keeps running: each bad frame is counted
as rejected, and the next good frame is still answered."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

pytest.importorskip("rclpy")
from message_strategies import image_messages  # noqa: E402

TINY = {"arch": "mbmt", "backbones": ["test_efficientnet"] * 3, "backbone_checkpoints": None,
        "freeze_backbones": True, "fusion": "cat", "tasks": ["segmentation", "depth", "normals"],
        "num_classes": 13, "fpn_channels": 16, "head_channels": 8, "task_hidden_channels": 16}


class LiveNode:
    """The perception node and a camera/consumer node in one private context."""

    def __init__(self, bundle: Path) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from mbmt_ros.ros.perception_node import PerceptionNode

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        params = {"bundle": str(bundle), "backend": "onnxruntime", "device": "cpu",
                  "precision": "fp32", "qos.input": "reliable", "qos.input_depth": 1}
        self.node = PerceptionNode("fuzz_node", context=self.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        assert self.node.autostart(), self.node.transition_error
        self.client = rclpy.create_node("fuzz_client", context=self.context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.client.create_publisher(Image, "/image", reliable)
        self._lock = threading.Lock()
        self.depth_stamps: set[int] = set()
        self.client.create_subscription(Image, "/fuzz_node/depth", self._on_depth, reliable)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_depth(self, msg) -> None:
        with self._lock:
            self.depth_stamps.add(msg.header.stamp.sec)

    def answered(self, sec: int) -> bool:
        with self._lock:
            return sec in self.depth_stamps

    def settled(self, received: int) -> bool:
        """The node has received ``received`` frames and is done with each of them (processed,
        rejected, dropped, skipped or failed): none is waiting or in flight."""
        s = self.node.stats
        with s._lock:
            done = s.processed + s.rejected + s.dropped + s.skipped + s.errors
            return s.received >= received and done == s.received

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        self.client.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from mbmt_ros.models import build_model, save_model
    from training.cli import main

    root = tmp_path_factory.mktemp("fuzz")
    save_model(root / "m.safetensors", build_model(TINY, load_weights=False))
    assert main(["export", "--ckpt", str(root / "m.safetensors"), "--out", str(root / "bundle"),
                 "--input-size", "32", "32", "--no-fp16"]) == 0
    node = LiveNode(root / "bundle")
    deadline = time.monotonic() + 20
    while node.pub.get_subscription_count() == 0 or not node.node._outputs:
        assert time.monotonic() < deadline, "node did not come up"
        time.sleep(0.05)
    yield node
    node.close()


_counter = iter(range(1, 10**6))


def _good_frame(sec: int):
    from mbmt_ros.ros.image_messages import numpy_to_image

    msg = numpy_to_image(np.full((24, 40, 3), 128, np.uint8), "rgb8")
    msg.header.stamp.sec = sec
    return msg


@pytest.mark.ros
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(bad=image_messages())
def test_malformed_frames_never_stop_the_node(live: LiveNode, bad) -> None:
    bad.header.stamp.sec = 0
    received = live.node.stats.received + 1
    live.pub.publish(bad)
    deadline = time.monotonic() + 60
    while not live.settled(received):  # the node took it before the good frame can replace it
        assert time.monotonic() < deadline, "the bad frame was never taken"
        time.sleep(0.005)
    sec = next(_counter)
    live.pub.publish(_good_frame(sec))
    deadline = time.monotonic() + 60
    while not live.answered(sec):
        assert time.monotonic() < deadline, "the node stopped answering after a bad frame"
        time.sleep(0.01)


@pytest.mark.ros
def test_bad_frames_were_rejected_and_counted(live: LiveNode) -> None:
    stats = live.node.stats
    assert stats.rejected > 0 and stats.errors == 0
