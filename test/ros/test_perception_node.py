"""The perception node over real DDS: every encoding in, every topic out (equal to the
Predictor run directly), newest-frame processing under load, malformed input, lifecycle
transitions through the lifecycle services, bad parameters, and the console script."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, VENV_BIN, wait_for
from rclpy.lifecycle import TransitionCallbackReturn

pytestmark = pytest.mark.ros

H, W = 32, 48
CPU = {"backend": "onnxruntime", "precision": "fp32", "device": "cpu"}
IMAGE_TOPICS = ("segmentation", "segmentation/color", "depth", "normals", "normals/color")
ENCODED = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "uyvy", "yuv422_yuy2", "yuyv"]


def _rgb(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (H // 4, W // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)  # blocky: survives YUV and JPEG


def _image(encoding: str, seed: int, stamp_sec: int):
    from std_msgs.msg import Header

    from mbmt_ros.imaging.encodings import ENCODINGS, rgb8_to_yuv422
    from mbmt_ros.ros.image_messages import encode_compressed, numpy_to_image

    rgb = _rgb(seed)
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec = stamp_sec
    if encoding in ("jpeg", "png"):
        return encode_compressed(rgb, encoding, header)
    info = ENCODINGS[encoding]
    if info.yuv:
        pixels = rgb8_to_yuv422(rgb, info.yuv)
    elif encoding == "mono8":
        pixels = rgb[..., 0]
    else:
        pixels = rgb[..., ::-1] if encoding.startswith("bgr") else rgb
        if info.channels == 4:
            pixels = np.concatenate([pixels, np.full((H, W, 1), 255, np.uint8)], axis=2)
    # odd padding so that no row is aligned: the node must honour msg.step
    return numpy_to_image(np.ascontiguousarray(pixels), encoding, header,
                          step=W * info.bytes_per_pixel + 5)


def _camera_info():
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=W, height=H)
    info.header.frame_id = "camera_optical_frame"
    info.k = [40.0, 0.0, W / 2, 0.0, 40.0, H / 2, 0.0, 0.0, 1.0]
    return info


def _diag_values(collector, node: str = "") -> dict[str, str]:
    for array in reversed(collector.snapshot()):
        for status in array.status:
            if status.name.endswith(": perception") and status.name.startswith(node):
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_every_encoding_gives_every_topic_equal_to_the_predictor(harness_factory, tiny_bundle):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

    from mbmt_ros.imaging.compressed import decode_compressed
    from mbmt_ros.imaging.encodings import image_to_numpy, to_rgb8
    from mbmt_ros.runtime import open_predictor

    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "pointcloud": True,
                         "pointcloud_stride": 2, "overlay_alpha": 1.0, "max_depth": 1000.0})
    assert h.node.autostart(), h.node.transition_error
    outs = {t: h.subscribe(Image, f"{h.prefix}/{t}") for t in IMAGE_TOPICS}
    points = h.subscribe(PointCloud2, f"{h.prefix}/points")
    diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
    image_pub = h.client.create_publisher(Image, "image", 10)
    compressed_pub = h.client.create_publisher(CompressedImage, "image/compressed", 10)
    info_pub = h.client.create_publisher(CameraInfo, "camera_info", 10)

    def connected(pub):
        return lambda: pub.get_subscription_count() and all(
            h.node._outputs[f"~/{t}"].get_subscription_count() for t in IMAGE_TOPICS)

    wait_for(connected(image_pub))
    assert compressed_pub.get_subscription_count() == 0  # one transport: raw unless use_compressed
    wait_for(lambda: (info_pub.publish(_camera_info()), h.node._camera_info)[1], timeout=10)

    reference = open_predictor(str(tiny_bundle), **CPU)
    lut = h.node._options.lut
    for i, encoding in enumerate([*ENCODED, "jpeg", "png"]):
        if encoding == "jpeg":  # use_compressed swaps the transport at the next configure
            from rclpy.parameter import Parameter

            assert h.node.set_parameters([Parameter("use_compressed", value=True)])[0].successful
            for step in ("deactivate", "cleanup", "configure", "activate"):
                assert getattr(h.node, f"trigger_{step}")() == TransitionCallbackReturn.SUCCESS, step
            wait_for(connected(compressed_pub))
            wait_for(lambda: image_pub.get_subscription_count() == 0)
            wait_for(lambda: (info_pub.publish(_camera_info()), h.node._camera_info)[1], timeout=10)
        stamp = 100 + i
        msg = _image(encoding, i, stamp)
        pub = compressed_pub if encoding in ("jpeg", "png") else image_pub

        def arrived(stamp=stamp, msg=msg, pub=pub):
            got = {t: [m for m in c.snapshot() if m.header.stamp.sec == stamp] for t, c in outs.items()}
            got["points"] = [m for m in points.snapshot() if m.header.stamp.sec == stamp]
            if all(got.values()):
                return {t: v[0] for t, v in got.items()}
            pub.publish(msg)  # sensor-data QoS is best effort: publish again until it is through
            return None

        got = wait_for(arrived, timeout=15, period=0.3)
        rgb = decode_compressed(msg) if encoding in ("jpeg", "png") else np.asarray(to_rgb8(msg))
        expected = reference.predict(np.ascontiguousarray(rgb))
        for topic, out in got.items():
            assert out.header.frame_id == "camera_optical_frame", topic
            if topic != "points":
                assert (out.height, out.width) == (H, W), topic
        assert got["segmentation"].encoding == "mono8"
        assert got["segmentation/color"].encoding == "rgb8"
        assert got["depth"].encoding == "32FC1" and got["normals"].encoding == "32FC3"
        assert got["normals/color"].encoding == "rgb8"
        seg = image_to_numpy(got["segmentation"])
        np.testing.assert_array_equal(seg, expected["segmentation"], err_msg=encoding)
        np.testing.assert_array_equal(image_to_numpy(got["segmentation/color"]), lut[seg])
        np.testing.assert_allclose(image_to_numpy(got["depth"]), expected["depth"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(image_to_numpy(got["normals"]), expected["normals"], atol=1e-5)
        cloud = got["points"]
        assert (cloud.height, cloud.width) == (H // 2, W // 2)
        z = np.frombuffer(cloud.data, dtype=np.float32).reshape(H // 2, W // 2, 5)[..., 2]
        d = expected["depth"][::2, ::2]
        valid = (d > 0) & (d <= 1000.0)  # a random-weight net may predict invalid depth
        np.testing.assert_allclose(z, np.where(valid, d, np.nan), rtol=1e-5, equal_nan=True)
    reference.close()

    values = wait_for(lambda: _diag_values(diagnostics).get("processed_frames", "0") != "0"
                      and _diag_values(diagnostics), timeout=30)
    assert values["backend"] == "onnxruntime" and values["precision"] == "fp32"
    assert values["rejected_frames"] == "0"


class SlowPredictor:
    """FOR THIS TEST ONLY: the real predictor plus a fixed delay, to play a slow GPU."""

    def __init__(self, inner, delay: float) -> None:
        self._inner, self._delay = inner, delay
        self.backend, self.precision, self.tasks = inner.backend, inner.precision, inner.tasks
        self.device, self.bundle = inner.device, inner.bundle
        self.class_names, self.palette = inner.class_names, inner.palette

    def predict(self, image):
        time.sleep(self._delay)
        return self._inner.predict(image)

    def close(self):
        self._inner.close()


class CountingPredictor(SlowPredictor):
    """FOR THIS TEST ONLY: the real predictor, counting its calls."""

    def __init__(self, inner) -> None:
        super().__init__(inner, delay=0.0)
        self.calls = 0

    def predict(self, image):
        self.calls += 1
        return super().predict(image)


def test_nothing_is_computed_without_subscribers(harness_factory, tiny_bundle):
    from sensor_msgs.msg import Image

    from mbmt_ros.runtime import open_predictor

    made = []

    def counting_factory(*args, **options):
        made.append(CountingPredictor(open_predictor(*args, **options)))
        return made[-1]

    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "release_on_deactivate": True,
                         "qos.input": "reliable"}, counting_factory)
    assert h.node.autostart(), h.node.transition_error
    warm_up_calls = made[0].calls  # the warm-up predict of configure
    pub = h.client.create_publisher(Image, "image", 10)
    wait_for(lambda: pub.get_subscription_count())
    for i in range(5):
        pub.publish(_image("rgb8", i, 300 + i))
        time.sleep(0.05)
    # every frame that arrived is done with (dropped or skipped): nothing is waiting
    wait_for(lambda: h.node.stats.received >= 3 and h.node.stats.skipped
             == h.node.stats.received - h.node.stats.dropped)  # skipped: not even decoded
    assert made[0].calls == warm_up_calls  # frames arrive, but nobody listens: the backend stays idle
    assert h.node.stats.processed == 0
    depth = h.subscribe(Image, f"{h.prefix}/depth")
    wait_for(lambda: h.node._outputs["~/depth"].get_subscription_count())
    wait_for(lambda: depth.snapshot() or pub.publish(_image("rgb8", 9, 309)), period=0.3)
    assert made[0].calls >= 1
    assert h.node._outputs["~/segmentation/color"].get_subscription_count() == 0
    # release_on_deactivate frees the backend and activate opens a new one
    assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert h.node.predictor is None
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert len(made) == 2 and h.node.predictor is made[1]


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_60hz_camera_with_slow_backend_processes_newest_and_counts_drops(harness_factory, tiny_bundle):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from mbmt_ros.runtime import open_predictor

    delay = 0.1  # the backend can never produce more than one output per 0.1 s

    def slow_factory(bundle, backend, precision, device, **options):
        return SlowPredictor(open_predictor(bundle, backend, precision, device, **options), delay)

    # a deep reliable output queue (node and subscriber), so that every output the node
    # publishes is received whatever the load: outputs can then be counted exactly
    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "tasks": ["depth"],
                         "qos.output_depth": 100}, slow_factory)
    assert h.node.autostart(), h.node.transition_error
    depth = h.subscribe(Image, f"{h.prefix}/depth", QoSProfile(depth=100))
    diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
    pub = h.client.create_publisher(Image, "image", 10)
    wait_for(lambda: pub.get_subscription_count() and h.node._outputs["~/depth"].get_subscription_count())

    frames = [_image("rgb8", i % 4, 1000 + i) for i in range(240)]  # 4 s at 60 Hz
    stats = h.node.stats

    def counts() -> tuple[int, int, int]:  # one consistent snapshot
        with stats._lock:
            return stats.received, stats.processed, stats.dropped

    start = time.monotonic()
    rss = []
    for i, msg in enumerate(frames):
        pub.publish(msg)
        if i in (60, 239):
            rss.append(_rss_mb())
        time.sleep(max(0.0, start + (i + 1) / 60 - time.monotonic()))
    # best-effort input may lose frames in DDS under load (seen: 110 of 240 arrived on a busy
    # 2-core CI machine); those never reach the node. Wait until the node has settled: every
    # frame it received is processed (and its output received) or dropped.
    wait_for(lambda: any(m.header.stamp.sec >= 1000 + 230 for m in depth.snapshot()), timeout=60)
    received, processed, dropped = wait_for(
        lambda: (c := counts())[1] + c[2] == c[0] and len(depth.snapshot()) == c[1] and c,
        timeout=60)
    elapsed = time.monotonic() - start
    stamps = [m.header.stamp.sec for m in depth.snapshot()]
    assert len(stamps) == processed and all(1000 <= s < 1240 for s in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # in order, no repeats
    # never more than the slow backend could produce in the time it had, however fast or
    # slow this machine is; the camera outpaced it and what it could not process was dropped
    # and counted: received = processed + dropped, nothing is queued behind
    assert 2 <= processed <= elapsed / delay + 1, (processed, elapsed)
    assert received > processed and dropped == received - processed
    assert max(stamps) >= 1000 + 230  # the newest frames, not a backlog
    assert rss[1] - rss[0] < 30, f"memory grew from {rss[0]:.0f} to {rss[1]:.0f} MB"
    # /diagnostics reports the same totals (a report after the node settled)
    wait_for(lambda: (v := _diag_values(diagnostics)).get("dropped_frames") == str(dropped)
             and v.get("processed_frames") == str(processed), timeout=30)


def test_malformed_messages_are_rejected_and_counted(harness_factory, tiny_bundle):
    import array

    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import Image

    # One node per test: two rclpy harnesses in one process can deadlock Fast DDS when their
    # writers are destroyed (eProsima/Fast-DDS#6193); the compressed input has its own test.
    h = harness_factory({"bundle": str(tiny_bundle), **CPU,
                         "tasks": ["segmentation"], "qos.input": "reliable",
                         "diagnostics_period": 0.2}, node_name="raw_perception")
    assert h.node.autostart(), h.node.transition_error
    seg = h.subscribe(Image, f"{h.prefix}/segmentation")
    statuses = h.subscribe(DiagnosticArray, "/diagnostics")
    pub = h.client.create_publisher(Image, "image", 10)
    wait_for(lambda: pub.get_subscription_count() == 1
             and h.node._outputs["~/segmentation"].get_subscription_count())

    def bad(**fields):
        msg = _image("rgb8", 0, 7)
        for key, value in fields.items():
            setattr(msg, key, value)
        return msg

    malformed = [bad(step=10), bad(data=array.array("B", bytes(100))), bad(encoding="bayer_xyz8"),
                 bad(height=0, width=0, step=0, data=array.array("B"))]
    for n, msg in enumerate(malformed, 1):
        pub.publish(msg)
        # one at a time: the newest-frame slot would otherwise drop some
        wait_for(lambda n=n: h.node.stats.rejected == n)
    assert h.node.stats.dropped == 0
    values = wait_for(lambda: _diag_values(statuses, "raw_perception").get("rejected_frames") == "4"
                      and _diag_values(statuses, "raw_perception"))
    assert values["rejected_frames"] == "4"
    assert any(s.level == DiagnosticStatus.WARN for a in statuses.snapshot() for s in a.status)
    # still alive: a good frame after the bad ones is processed
    good = _image("rgb8", 1, 8)
    wait_for(lambda: [m for m in seg.snapshot() if m.header.stamp.sec == 8] or pub.publish(good),
             timeout=10, period=0.3)
    assert h.node.stats.errors == 0


@pytest.mark.ros
def test_truncated_compressed_frame_is_rejected_and_counted(harness_factory, tiny_bundle):
    import array

    from sensor_msgs.msg import CompressedImage, Image

    hc = harness_factory({"bundle": str(tiny_bundle), **CPU, "use_compressed": True,
                          "tasks": ["segmentation"], "qos.input": "reliable"},
                         node_name="compressed_perception")
    assert hc.node.autostart(), hc.node.transition_error
    seg = hc.subscribe(Image, f"{hc.prefix}/segmentation")
    cpub = hc.client.create_publisher(CompressedImage, "image/compressed", 10)
    wait_for(lambda: cpub.get_subscription_count() == 1
             and hc.node._outputs["~/segmentation"].get_subscription_count())
    jpeg = _image("jpeg", 0, 7)
    payload = bytes(jpeg.data)
    cpub.publish(CompressedImage(format="jpeg", data=array.array("B", payload[: len(payload) // 3])))
    wait_for(lambda: hc.node.stats.rejected == 1)
    # still alive: the whole frame after the truncated one is processed
    good = _image("jpeg", 1, 8)
    wait_for(lambda: [m for m in seg.snapshot() if m.header.stamp.sec == 8] or cpub.publish(good),
             timeout=10, period=0.3)
    assert hc.node.stats.rejected == 1 and hc.node.stats.errors == 0


class LifecycleClient:
    """change_state / get_state service clients of the node (made once: discovery is slow)."""

    def __init__(self, h) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self._change = h.client.create_client(ChangeState, f"{h.prefix}/change_state")
        self._get = h.client.create_client(GetState, f"{h.prefix}/get_state")
        assert self._change.wait_for_service(timeout_sec=30)
        assert self._get.wait_for_service(timeout_sec=30)

    def change(self, transition: int) -> bool:
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = transition
        future = self._change.call_async(request)
        wait_for(future.done, timeout=60)
        return future.result().success

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        future = self._get.call_async(GetState.Request())
        wait_for(future.done, timeout=30)
        return future.result().current_state.label


def test_lifecycle_transitions_in_and_out_of_order(harness_factory, tiny_bundle):
    from lifecycle_msgs.msg import Transition

    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "autostart": False})
    lc = LifecycleClient(h)
    names = lambda: {n for n, _ in h.client.get_topic_names_and_types()}  # noqa: E731
    assert lc.state() == "unconfigured"
    assert not lc.change(Transition.TRANSITION_ACTIVATE)  # out of order: not configured
    assert not lc.change(Transition.TRANSITION_DEACTIVATE)
    assert lc.state() == "unconfigured" and h.node.predictor is None

    assert lc.change(Transition.TRANSITION_CONFIGURE)
    assert lc.state() == "inactive" and h.node.predictor is not None
    assert not lc.change(Transition.TRANSITION_CONFIGURE)  # already configured
    assert lc.change(Transition.TRANSITION_ACTIVATE)
    assert lc.state() == "active"
    wait_for(lambda: f"{h.prefix}/depth" in names())
    assert h.node._worker is not None and h.node._worker.alive
    assert not lc.change(Transition.TRANSITION_CLEANUP)  # not from active

    worker = h.node._worker
    assert lc.change(Transition.TRANSITION_DEACTIVATE)
    assert lc.state() == "inactive" and not worker.alive and h.node._outputs == {}
    wait_for(lambda: f"{h.prefix}/depth" not in names())
    assert lc.change(Transition.TRANSITION_ACTIVATE)  # re-activate works
    assert lc.change(Transition.TRANSITION_DEACTIVATE)
    assert lc.change(Transition.TRANSITION_CLEANUP)
    assert lc.state() == "unconfigured" and h.node.predictor is None
    assert lc.change(Transition.TRANSITION_CONFIGURE)  # configure again after cleanup
    assert lc.change(Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert lc.state() == "finalized" and h.node.predictor is None


@pytest.mark.parametrize("params, message", [
    ({"bundle": ""}, "parameter bundle is empty"),
    ({"backend": "tensorflow"}, "backend='tensorflow' is invalid"),
    ({"overlay_alpha": 2.0}, "overlay_alpha=2.0 is out of range"),
    ({"tasks": ["depth", "edges"]}, "unknown task(s) ['edges']"),
    ({"pointcloud": True, "tasks": ["segmentation"]}, "pointcloud=true needs the depth task"),
])
def test_bad_parameters_fail_configure_with_a_clear_message(harness_factory, tiny_bundle, params, message):
    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "autostart": False, **params})
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert message in h.node.transition_error
    assert h.node.predictor is None


def test_console_script_autostarts_and_stops_on_sigint(tiny_bundle):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    proc = subprocess.Popen(
        [str(VENV_BIN / "perception_node"), "--ros-args", "-r", "__node:=cam_perception",
         "--params-file", str(REPO / "config" / "perception.yaml"), "-p", f"bundle:={tiny_bundle}", "-p", "backend:=auto", "-p", "precision:=fp32",
         "-p", "device:=cpu", "-r", "image:=/camera/image_raw"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("script_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        got = []
        node.create_subscription(Image, "/cam_perception/depth", got.append, 10)
        pub = node.create_publisher(Image, "/camera/image_raw", 10)
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline and proc.poll() is None:
            pub.publish(_image("bgr8", 3, 5))
            executor.spin_once(timeout_sec=0.2)
        assert got and got[0].header.stamp.sec == 5 and got[0].encoding == "32FC1"
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    # what auto chose on this CPU machine, never "auto" (nor the requested device) itself
    assert re.search(r"opened bundle .*: backend (onnxruntime|openvino|torch), precision fp32, "
                     r"device cpu", out), out
    assert "[mbmt_ros.runtime" in out  # the runtime's own log reaches the ROS logger


def test_console_script_exits_1_with_the_reason_for_a_bad_bundle(tmp_path):
    proc = subprocess.run(
        [str(VENV_BIN / "perception_node"), "--ros-args", "-p", f"bundle:={tmp_path}/missing"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "not a model bundle directory" in proc.stderr + proc.stdout, proc.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
