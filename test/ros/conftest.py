"""Fixtures of the ROS tests: a tiny exported model bundle and an in-process DDS harness.

The bundle is exported once per session from a tiny MBMT model (``test_efficientnet``
backbones) with ``mbmt-train export``; ``MBMT_TEST_BUNDLE=/path`` uses a ready one instead.
The harness runs the perception node and a separate client node in their own rclpy
context, spun by a multi-threaded executor in a background thread; messages travel over
DDS (loopback of the isolated namespace), nothing is mocked.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TINY_MODEL = {
    "arch": "mbmt", "backbones": ["test_efficientnet"] * 3, "backbone_checkpoints": None,
    "freeze_backbones": True, "fusion": "cat", "tasks": ["segmentation", "depth", "normals"],
    "num_classes": 13, "fpn_channels": 16, "head_channels": 8, "task_hidden_channels": 16,
}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle (ONNX + meta) of a tiny random-weight MBMT net at 64x64."""
    ready = os.environ.get("MBMT_TEST_BUNDLE")
    if ready:
        return Path(ready)
    pytest.importorskip("torch")
    from mbmt_ros.models import build_model, save_model

    root = tmp_path_factory.mktemp("bundle")
    ckpt = root / "model.safetensors"
    save_model(ckpt, build_model(TINY_MODEL, load_weights=False))
    out = root / "bundle"
    from training.cli import main as mbmt_train  # in-process: torch is already imported

    code = mbmt_train(["export", "--ckpt", str(ckpt), "--out", str(out), "--input-size", "64", "64",
                       "--no-fp16"])
    assert code == 0, "mbmt-train export failed (see the log above)"
    from mbmt_ros.runtime.trt_readiness import assert_bundle_tensorrt_ready

    assert_bundle_tensorrt_ready(out)  # every bundle the tests export is TensorRT-ready
    return out


class Collector:
    """Keeps every message received on one topic (thread-safe)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(msg)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.messages)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, period: float = 0.02) -> Any:
    """Poll ``condition`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(period)
    raise AssertionError(f"condition not met within {timeout} s")


class Harness:
    """The perception node and a client node in one private rclpy context."""

    def __init__(self, params: dict[str, Any], factory: Any = None,
                 node_name: str = "perception_node") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter

        from mbmt_ros.ros.perception_node import PerceptionNode

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = PerceptionNode(
            node_name, predictor_factory=factory, context=self.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.client = rclpy.create_node("test_client", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.prefix = f"/{node_name}"

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 10) -> Collector:
        collector = Collector()
        self.client.create_subscription(msg_type, topic, collector, qos)
        return collector

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        self.client.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5)


@pytest.fixture()
def harness_factory() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(params: dict[str, Any], factory: Any = None, node_name: str = "perception_node") -> Harness:
        harness = Harness(params, factory, node_name)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
