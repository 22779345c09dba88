"""The perception node's parameters, warm-up and timing figures over real DDS.

Parameters are set and read through the node's parameter services (rcl_interfaces
SetParameters / GetParameters / DescribeParameters, what ``ros2 param set/get/describe``
call); log lines are read from /rosout; figures from /diagnostics.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import wait_for
from rclpy.lifecycle import TransitionCallbackReturn

pytestmark = pytest.mark.ros

H, W = 32, 48
CPU = {"backend": "onnxruntime", "precision": "fp32", "device": "cpu"}


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _image(seed: int, stamp_sec: int):
    from std_msgs.msg import Header

    from mbmt_ros.ros.image_messages import numpy_to_image

    header = Header(frame_id="camera")
    header.stamp.sec = stamp_sec
    return numpy_to_image(_rgb(seed), "rgb8", header)


class ParamClient:
    """The node's parameter services, called as ``ros2 param`` calls them."""

    def __init__(self, h) -> None:
        from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters

        self._set = h.client.create_client(SetParameters, f"{h.prefix}/set_parameters")
        self._get = h.client.create_client(GetParameters, f"{h.prefix}/get_parameters")
        self._describe = h.client.create_client(DescribeParameters, f"{h.prefix}/describe_parameters")
        for client in (self._set, self._get, self._describe):
            assert client.wait_for_service(timeout_sec=30)

    @staticmethod
    def _call(client, request):
        future = client.call_async(request)
        wait_for(future.done, timeout=30)
        return future.result()

    def set(self, name: str, value):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self._call(self._set, request).results[0]

    def get(self, name: str):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        value = self._call(self._get, GetParameters.Request(names=[name])).values[0]
        return value.type, parameter_value_to_python(value)

    def describe(self, name: str):
        from rcl_interfaces.srv import DescribeParameters

        return self._call(self._describe, DescribeParameters.Request(names=[name])).descriptors[0]


def _rosout(h):
    from rcl_interfaces.msg import Log
    from rclpy.qos import DurabilityPolicy, QoSProfile

    return h.subscribe(Log, "/rosout", QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))


def test_parameters_are_checked_on_every_set_and_cosmetic_ones_apply_live(harness_factory, tiny_bundle):
    from rcl_interfaces.msg import ParameterType
    from sensor_msgs.msg import Image

    # its own node name: /rosout log routing is keyed by logger name, process-wide
    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "tasks": ["segmentation"],
                         "qos.input": "reliable", "overlay_alpha": 1.0},
                        node_name="params_perception")
    assert h.node.autostart(), h.node.transition_error
    log = _rosout(h)
    colour = h.subscribe(Image, f"{h.prefix}/segmentation/color")
    seg = h.subscribe(Image, f"{h.prefix}/segmentation")
    params = ParamClient(h)

    # refused, with the reason, and the value stays
    for name, value, reason in [("overlay_alpha", 5.0, "overlay_alpha"),
                                ("max_depth", "far", "type"),
                                ("pointcloud_stride", 0, "pointcloud_stride"),
                                ("backend", "tensorflow", "backend='tensorflow' is invalid"),
                                ("device", "gpu0", "device='gpu0' is invalid"),
                                ("tasks", ["depth", "edges"], "unknown task"),
                                ("bundle", "/nonexistent/bundle", "not a model bundle directory")]:
        result = params.set(name, value)
        assert not result.successful and reason in result.reason, (name, result.reason)
    assert params.get("overlay_alpha") == (ParameterType.PARAMETER_DOUBLE, 1.0)
    assert params.get("max_depth") == (ParameterType.PARAMETER_DOUBLE, 10.0)
    assert params.get("backend")[1] == "onnxruntime"

    # an integer for a float parameter is that float
    assert params.set("max_depth", 20).successful
    assert params.get("max_depth") == (ParameterType.PARAMETER_DOUBLE, 20.0)
    assert h.node._options.max_depth == 20.0

    # ranges are in the descriptors (ros2 param describe)
    alpha = params.describe("overlay_alpha")
    assert alpha.type == ParameterType.PARAMETER_DOUBLE
    assert (alpha.floating_point_range[0].from_value, alpha.floating_point_range[0].to_value) == (0.0, 1.0)
    stride = params.describe("pointcloud_stride")
    assert (stride.integer_range[0].from_value, stride.integer_range[0].to_value) == (1, 64)
    assert "openvino" in params.describe("backend").additional_constraints

    # structural: accepted, logged, applied only at the next configure
    for name, value in [("backend", "openvino"), ("device", "gpu"), ("precision", "bf16"),
                        ("num_threads", 1)]:
        assert params.set(name, value).successful, name
    wait_for(lambda: any("precision='bf16' accepted; it applies at the next configure" in m.msg
                         for m in log.snapshot()), timeout=10)
    assert h.node.predictor.backend == "onnxruntime" and h.node.params.backend == "onnxruntime"

    # cosmetic: the next frame already uses the new overlay opacity
    pub = h.client.create_publisher(Image, "image", 10)
    wait_for(lambda: pub.get_subscription_count()
             and h.node._outputs["~/segmentation/color"].get_subscription_count()
             and h.node._outputs["~/segmentation"].get_subscription_count())
    lut = h.node._options.lut
    for stamp, alpha_value in [(1, 1.0), (2, 0.0)]:
        if stamp == 2:
            assert params.set("overlay_alpha", alpha_value).successful
        msg = _image(stamp, stamp)

        def arrived(stamp=stamp, msg=msg):
            got = [m for m in colour.snapshot() if m.header.stamp.sec == stamp]
            ids = [m for m in seg.snapshot() if m.header.stamp.sec == stamp]
            return (got[0], ids[0]) if got and ids else pub.publish(msg)

        out, ids = wait_for(arrived, timeout=15, period=0.3)
        pixels = np.frombuffer(out.data, np.uint8).reshape(H, W, 3)
        classes = np.frombuffer(ids.data, np.uint8).reshape(H, W)
        expected = lut[classes] if alpha_value == 1.0 else _rgb(stamp)
        np.testing.assert_array_equal(pixels, expected)
    # /rosout is delivered asynchronously: wait for the line rather than race it
    wait_for(lambda: any("overlay_alpha=0.0 applies from the next frame" in m.msg
                         for m in log.snapshot()), timeout=10)


def test_bad_start_up_value_keeps_the_node_up_until_it_is_set(harness_factory, tiny_bundle):
    from rclpy.parameter import Parameter

    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "autostart": False, "max_depth": "far"})
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert "max_depth='far' must be a number" in h.node.transition_error
    assert h.node.get_parameter("max_depth").value == 10.0  # the default, typed
    assert h.node.set_parameters([Parameter("max_depth", value=5.0)])[0].successful
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS


class _CountingPredictor:
    """FOR THIS TEST ONLY: the real predictor, recording the images ``predict`` was given."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.backend, self.precision, self.device = inner.backend, inner.precision, inner.device
        self.tasks, self.class_names, self.palette = inner.tasks, inner.class_names, inner.palette
        self.bundle = inner.bundle
        self.shapes: list[tuple[int, ...]] = []
        self.options: dict = {}

    def predict(self, image):
        self.shapes.append(image.shape)
        return self._inner.predict(image)

    def close(self):
        self._inner.close()


def test_configure_warms_up_and_passes_the_thread_count(harness_factory, tiny_bundle):
    from mbmt_ros.runtime import open_predictor

    made = []

    def factory(*args, **options):
        made.append(_CountingPredictor(open_predictor(*args, **options)))
        made[-1].options = options
        return made[-1]

    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "autostart": False, "num_threads": 1,
                         "workspace_mb": 256}, factory)
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    # one predict of the bundle's size before activate
    assert made[0].shapes == [(*made[0].bundle.input_size, 3)]
    assert made[0].options == {"num_threads": 1, "workspace_mb": 256, "verify": True,
                               "allow_fallback": False}


def _diag(collector, node: str) -> dict[str, str]:
    for array in reversed(collector.snapshot()):
        for status in array.status:
            if status.name == f"{node}: perception":
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_diagnostics_report_what_runs_and_consistent_frame_timing(harness_factory, tiny_bundle):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from mbmt_ros.ros.diagnostics import SEGMENTS

    # asked for what a GPU robot asks, fallback accepted; this machine runs what it can -
    # diagnostics say which (and the fallback, when there was one)
    h = harness_factory({"bundle": str(tiny_bundle), "backend": "auto", "precision": "fp16",
                         "device": "cuda", "allow_fallback": True, "qos.input": "reliable",
                         "diagnostics_period": 0.2})
    started = time.monotonic()
    assert h.node.autostart(), h.node.transition_error
    outputs = {t: h.subscribe(Image, f"{h.prefix}/{t}") for t in ("segmentation", "depth", "normals")}
    diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
    pub = h.client.create_publisher(Image, "image", 10)
    wait_for(lambda: pub.get_subscription_count()
             and all(h.node._outputs[f"~/{t}"].get_subscription_count() for t in outputs))
    frames = 6
    for i in range(frames):  # one frame in flight at a time; stamps from 1970, as a bag without --clock
        msg = _image(i, 100 + i)
        wait_for(lambda msg=msg: all(any(m.header.stamp.sec == msg.header.stamp.sec for m in c.snapshot())
                                     for c in outputs.values()) or pub.publish(msg), timeout=15, period=0.5)
    values = wait_for(lambda: int(_diag(diagnostics, "perception_node").get("timing_frames", 0))
                      == h.node.stats.processed >= frames and _diag(diagnostics, "perception_node"))

    predictor = h.node.predictor
    assert (values["backend"], values["device"], values["precision"]) == (
        predictor.backend, predictor.device, predictor.precision)
    assert values["backend"] != "auto"
    from mbmt_ros.runtime import backend_availability

    if backend_availability("cuda")["onnxruntime"] is not None and values["backend"] == "onnxruntime":
        assert (values["device"], values["precision"]) == ("cpu", "fp32")  # never the requested ones
    if values["device"] != "cuda":
        assert "requested fp16 on cuda" in values["fallback"]

    timing = {k: float(v) for k, v in values.items() if k.endswith(("_p50_ms", "_p99_ms"))}
    assert set(timing) == {f"{s}_p{q}_ms" for s in (*SEGMENTS, "overhead", "input_delay")
                           for q in (50, 99)}
    assert timing["input_delay_p50_ms"] > 1e9  # 1970 stamps -> receipt now: decades
    assert all(v >= 0 for v in timing.values()), timing
    for q in (50, 99):
        assert timing[f"total_p{q}_ms"] >= timing[f"predict_p{q}_ms"] > 0
        assert timing[f"total_p{q}_ms"] >= max(timing[f"{s}_p{q}_ms"] for s in SEGMENTS)
        assert timing[f"total_p{q}_ms"] >= timing[f"overhead_p{q}_ms"]  # total - predict per frame
        assert float(values[f"overhead_p{q}_pct"]) >= 0
    assert timing["predict_p50_ms"] <= timing["predict_p99_ms"]
    assert values["skipped_frames"] == "0"
    # the stamps are from 1970: latency from the stamp is meaningless, from receipt it is not
    busy = [{kv.key: kv.value for kv in s.values} for a in diagnostics.snapshot() for s in a.status
            if s.name == "perception_node: perception"]
    busy = [v for v in busy if v["latency_receipt_median_ms"] != "nan"]
    assert busy and all(float(v["latency_median_ms"]) > 1e9 for v in busy)
    lived_ms = (time.monotonic() - started) * 1e3  # no frame waited longer than the node ran
    assert all(0 < float(v["latency_receipt_median_ms"]) < lived_ms for v in busy)
