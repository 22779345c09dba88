"""Full-size outputs reach another process on time with the launch defaults' transport.

Three processes, as on a robot: a camera driver (a subprocess publishing 480x640 ``rgb8``,
with the shipped profile: its frames are larger than the default segment too),
the ``perception_node`` console script with the environment the launch file gives it
(:func:`mbmt_ros.dds_profile.node_transport_env` with the default ``dds_profile:=``), and a
consumer (this test process, no profile: consumers need none). Without the shipped profile
Fast DDS's 512 KiB shared-memory segment cannot hold the outputs and some arrive 1-3 s late;
with it none is later than the node's predict + 1 s. ``MBMT_TEST_DDS_PROFILE=none`` runs the
same test without the profile (it then fails: how the test was checked).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from conftest import VENV_BIN, wait_for

from mbmt_ros.dds_profile import node_transport_env

pytestmark = pytest.mark.ros

OUTPUTS = ("segmentation", "segmentation/color", "depth", "normals", "normals/color")
FRAMES, RATE_HZ = 40, 4.0
BOUND_S = 1.0

CAMERA = """
import sys, time, numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from mbmt_ros.ros.image_messages import numpy_to_image
frames, rate = int(sys.argv[1]), float(sys.argv[2])
rclpy.init()
node = rclpy.create_node("camera_driver")
pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
while pub.get_subscription_count() == 0:
    time.sleep(0.05)
sys.stdin.readline()  # the consumer is ready
msg = numpy_to_image(np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8), "rgb8")
for _ in range(frames):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
    pub.publish(msg)
    time.sleep(1.0 / rate)
time.sleep(2.0)
"""


def test_full_size_outputs_arrive_within_predict_plus_1s(tiny_bundle) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    arg = os.environ.get("MBMT_TEST_DDS_PROFILE", "")
    transport = node_transport_env(os.environ, arg)
    assert transport.profile or arg == "none", transport.reason  # the launch default applies it
    log = tempfile.TemporaryFile(mode="w+")
    node = subprocess.Popen(
        [str(VENV_BIN / "perception_node"), "--ros-args", "-r", "image:=/camera/image_raw",
         "-p", f"bundle:={tiny_bundle}", "-p", "backend:=onnxruntime", "-p", "device:=cpu",
         "-p", "precision:=fp32", "-p", "num_threads:=1", "-p", "diagnostics_period:=0.5"],
        env={**os.environ, **transport.env}, stdout=log, stderr=subprocess.STDOUT)
    # the camera driver publishes 0.9 MB frames: it needs the segment as much as the node
    # (docs/node.md, Transports), so it gets the shipped profile whatever the node gets
    camera = subprocess.Popen([sys.executable, "-c", CAMERA, str(FRAMES), str(RATE_HZ)],
                              stdin=subprocess.PIPE, text=True,
                              env={**os.environ, **node_transport_env({}, "").env})
    context = Context()
    rclpy.init(context=context)
    client = rclpy.create_node("consumer", context=context)
    lock = threading.Lock()
    arrivals: dict[int, dict[str, float]] = {}  # stamp ns -> topic -> arrival - stamp (s)
    predict_ms: list[float] = []
    input_delay_ms: list[float] = []  # the node's input_delay_p50_ms reports

    def on_output(topic: str, msg: Image) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with lock:
            arrivals.setdefault(stamp, {})[topic] = (now - stamp) / 1e9

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith(": perception") and values.get("predict_p99_ms", "nan") != "nan":
                with lock:
                    predict_ms.append(float(values["predict_p99_ms"]))
                    input_delay_ms.append(float(values["input_delay_p50_ms"]))

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # as rviz subscribes
    subs = [client.create_subscription(Image, f"/perception_node/{t}",
                                       lambda m, t=t: on_output(t, m), qos) for t in OUTPUTS]
    client.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        wait_for(lambda: all(s.get_publisher_count() for s in subs) or node.poll() is not None,
                 timeout=120)
        assert node.poll() is None, "the node exited"
        camera.stdin.write("go\n")
        camera.stdin.flush()
        camera.wait(FRAMES / RATE_HZ + 60)
        time.sleep(BOUND_S + 2.0)  # the last outputs: in, or late
        with lock:
            got = {k: dict(v) for k, v in arrivals.items()}
            predict = max(predict_ms, default=float("nan"))
            delays = list(input_delay_ms)
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
        for proc in (camera, node):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    log.seek(0)
    text = log.read()[-2000:]
    assert predict == predict, f"no predict timing from /diagnostics; node log:\n{text}"
    assert len(got) >= FRAMES // 4, f"only {len(got)} frames came back; node log:\n{text}"
    worst = {stamp: max(times.values()) for stamp, times in got.items()}
    late = sorted(t for t in worst.values() if t > predict / 1e3 + BOUND_S)
    incomplete = [s for s, times in got.items() if len(times) < len(OUTPUTS)]
    assert not late, (f"{len(late)} of {len(got)} frames later than predict p99 {predict:.0f} ms "
                      f"+ {BOUND_S} s: {late} ({transport.reason})")
    assert len(incomplete) <= 1, f"{len(incomplete)} frames lack outputs ({transport.reason})"
    # camera stamp -> node receipt (same machine, same clock): >= 0 and less than stamp -> outputs
    assert delays and all(0.0 <= d < 1e3 * max(worst.values()) for d in delays), delays
