"""Frame N-1's outputs are built and published while frame N is predicted (the publish stage,
:mod:`mbmt_ros.ros.publish_stage`): the stage on its own, and the node over real DDS with a
backend of fixed, known latency and a camera faster than it."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import wait_for

from mbmt_ros.ros.publish_stage import PublishStage

CPU = {"backend": "onnxruntime", "precision": "fp32", "device": "cpu"}
PREDICT_S = 0.15  # the test double's fixed latency


# ------------------------------------------------------------------ the stage, ROS-free
def test_stage_publishes_in_order_once_each_while_the_producer_goes_on() -> None:
    started, release = threading.Event(), threading.Event()
    published: list[int] = []

    def publish(item: int) -> None:
        if item == 0:
            started.set()
            assert release.wait(10)
        published.append(item)

    stage: PublishStage[int] = PublishStage(publish, lambda exc: None)
    stage.start()
    assert stage.put(0) and started.wait(10)
    # item 0 is being published: the producer hands over item 1 without waiting ...
    assert stage.put(1, timeout=5)
    # ... and item 2 waits until item 1 has been taken (at most one item waits)
    assert not stage.put(2, timeout=0.05)
    release.set()
    assert stage.put(2, timeout=10)
    for i in range(3, 50):
        assert stage.put(i, timeout=10)
    assert stage.stop()
    assert published == list(range(50))  # every item, once, in order (3..49 after 2)
    assert stage.handed_over == stage.published == 50 and stage.idle()
    assert not stage.put(99) and published[-1] == 49  # refused once stopped


def test_stage_survives_a_failing_publish_and_drains_on_stop() -> None:
    errors: list[BaseException] = []
    done: list[int] = []

    def publish(item: int) -> None:
        if item == 1:
            raise RuntimeError("bad frame")
        time.sleep(0.01)
        done.append(item)

    stage: PublishStage[int] = PublishStage(publish, errors.append)
    stage.start()
    for i in range(4):
        assert stage.put(i, timeout=10)
    assert stage.stop() and not stage.alive
    assert done == [0, 2, 3] and [str(e) for e in errors] == ["bad frame"]


# ------------------------------------------------------------------ the node, real rclpy
class FixedLatencyPredictor:
    """FOR THIS TEST ONLY: the real predictor, taking exactly ``latency`` seconds per call
    (sleeping the rest); records, per call, its start / end and how many frames the node had
    published by then."""

    def __init__(self, inner, latency: float) -> None:
        self._inner, self._latency = inner, latency
        self.backend, self.precision, self.tasks = inner.backend, inner.precision, inner.tasks
        self.device, self.bundle = inner.device, inner.bundle
        self.class_names, self.palette = inner.class_names, inner.palette
        self.node = None
        self.calls: list[dict[str, int]] = []
        self.starts = 0  # predict calls begun (the warm-up included)
        self.cond = threading.Condition()

    def predict(self, image):
        start = time.monotonic()
        with self.cond:
            self.starts += 1
            self.cond.notify_all()
        out = self._inner.predict(image)
        time.sleep(max(0.0, self._latency - (time.monotonic() - start)))
        if self.node is not None:
            self.calls.append({"start": start, "end": time.monotonic(),
                               "published_at_end": self.node.stats.processed})
        return out

    def close(self) -> None:
        self._inner.close()


@pytest.mark.ros
def test_node_publishes_frame_n_minus_1_while_predicting_frame_n(harness_factory, tiny_bundle,
                                                                monkeypatch):
    from sensor_msgs.msg import Image

    import mbmt_ros.ros.perception_node as perception_node
    from mbmt_ros.ros.image_messages import numpy_to_image
    from mbmt_ros.runtime import open_predictor

    made: list[FixedLatencyPredictor] = []

    def factory(bundle, backend, precision, device, **options):
        made.append(FixedLatencyPredictor(open_predictor(bundle, backend, precision, device,
                                                         **options), PREDICT_S))
        return made[-1]

    # Building frame N-1's outputs waits until predict of frame N has started: with one thread
    # doing both this could never happen (the wait would time out and the test fail).
    build = perception_node.build_outputs
    overlapped: list[bool] = []
    first: list[int] = []  # predict calls before the first camera frame (warm-up)

    def build_after_next_predict_started(*args, **kwargs):
        predictor = made[-1]
        frame_call = first[0] + len(overlapped) + 1  # the predict call of the frame built now
        with predictor.cond:
            overlapped.append(predictor.cond.wait_for(lambda: predictor.starts > frame_call, 5.0))
        return build(*args, **kwargs)

    monkeypatch.setattr(perception_node, "build_outputs", build_after_next_predict_started)

    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "tasks": ["depth", "segmentation"]},
                        factory)
    assert h.node.autostart(), h.node.transition_error
    made[-1].node = h.node
    first.append(made[-1].starts)
    depth = h.subscribe(Image, f"{h.prefix}/depth", 100)
    seg = h.subscribe(Image, f"{h.prefix}/segmentation", 100)
    pub = h.client.create_publisher(Image, "image", 10)
    wait_for(lambda: pub.get_subscription_count()
             and h.node._outputs["~/depth"].get_subscription_count()
             and h.node._outputs["~/segmentation"].get_subscription_count())

    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    sent = 0
    deadline = time.monotonic() + 60
    while h.node.stats.processed < 12 and time.monotonic() < deadline:  # camera at ~40 Hz
        msg = numpy_to_image(rgb, "rgb8")
        msg.header.stamp.sec = 1000 + sent
        pub.publish(msg)
        sent += 1
        time.sleep(0.025)
    assert h.node.stats.processed >= 12, "the node stopped publishing"
    h.node.trigger_deactivate()  # the last frames: published before the threads end

    stats, calls = h.node.stats, made[-1].calls
    assert stats.dropped > 0  # the camera outpaced the backend: newest-frame policy
    # while frames kept coming, every frame's outputs were built while the next one was
    # predicted (the last two may wait for a predict that deactivate never starts)
    assert len(overlapped) >= 12 and all(overlapped[:-2]), overlapped
    # publish of N-1 happened before predict of N finished (the node's own counter)
    for k, call in enumerate(calls[1:], start=1):
        assert call["published_at_end"] >= k, (k, call)
    wait_for(lambda: len(depth.snapshot()) >= stats.processed - 1, timeout=10)
    for got in (depth, seg):
        stamps = [m.header.stamp.sec for m in got.snapshot()]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # in order, never twice
        assert set(stamps) <= set(range(1000, 1000 + sent))
        assert stats.processed - 1 <= len(stamps) <= stats.processed
    assert stats.processed == len(calls)  # each predicted frame published exactly once
