"""The perception node with ``backend: openvino`` over real DDS: an INT8 bundle made with
``mbmt-train quantize`` runs INT8 in the node, its outputs equal the OpenVINO predictor run
directly, and /diagnostics reports what runs (openvino, int8, cpu)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]
pytest.importorskip("openvino")

H, W = 48, 64
TOPICS = ("segmentation", "depth", "normals")


def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat(np.repeat(rng.integers(0, 256, (H // 8, W // 8, 3), dtype=np.uint8), 8, 0),
                     8, 1)


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory):
    from training.cli import main as mbmt_train
    from training.data.synth.generate import write_synth_dataset

    root = tmp_path_factory.mktemp("openvino")
    data = write_synth_dataset(root / "data", count=8, height=64, width=64, seed=2, bag=False)
    bundle = shutil.copytree(tiny_bundle, root / "bundle")
    code = mbmt_train(["quantize", "--bundle", str(bundle), "--data", str(data), "--frames", "4",
                       "--backends", "openvino", "--max-miou-drop", "100",
                       "--max-depth-increase", "1000", "--max-normals-increase", "1000"])
    # random weights: any delta is fine
    assert code == 0, "mbmt-train quantize failed (see the log above)"
    return bundle


def _diag(collector) -> dict[str, str]:
    for array in reversed(collector.snapshot()):
        for status in array.status:
            if status.name.endswith(": perception"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_openvino_int8_node_equals_the_predictor_and_reports_it(harness_factory, int8_bundle):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mbmt_ros.imaging.encodings import image_to_numpy
    from mbmt_ros.ros.image_messages import numpy_to_image
    from mbmt_ros.runtime import open_predictor

    params = {"backend": "openvino", "precision": "int8", "device": "cpu"}
    h = harness_factory({"bundle": str(int8_bundle), **params})
    assert h.node.autostart(), h.node.transition_error
    outs = {t: h.subscribe(Image, f"{h.prefix}/{t}") for t in TOPICS}
    diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
    pub = h.client.create_publisher(Image, "image", 10)
    wait_for(lambda: pub.get_subscription_count()
             and all(h.node._outputs[f"~/{t}"].get_subscription_count() for t in TOPICS))
    with open_predictor(str(int8_bundle), **params) as direct:
        assert direct.precision == "int8"
        for i in range(2):
            rgb = _frame(i)
            msg = numpy_to_image(rgb, "rgb8", Header(frame_id="cam"))
            msg.header.stamp.sec = 500 + i

            def arrived(msg=msg):
                got = {t: [m for m in c.snapshot() if m.header.stamp.sec == msg.header.stamp.sec]
                       for t, c in outs.items()}
                if all(got.values()):
                    return {t: v[0] for t, v in got.items()}
                pub.publish(msg)  # sensor-data QoS is best effort: publish until through
                return None

            got = wait_for(arrived, timeout=20, period=0.3)
            expected = direct.predict(rgb)
            np.testing.assert_array_equal(image_to_numpy(got["segmentation"]),
                                          expected["segmentation"])
            np.testing.assert_allclose(image_to_numpy(got["depth"]), expected["depth"],
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(image_to_numpy(got["normals"]), expected["normals"],
                                       atol=1e-5)
    values = wait_for(lambda: _diag(diagnostics).get("processed_frames", "0") != "0"
                      and _diag(diagnostics), timeout=10)
    assert (values["backend"], values["precision"], values["device"]) == ("openvino", "int8",
                                                                           "cpu")
