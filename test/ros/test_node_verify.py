"""The node checks what it runs at configure (issue 20), over real rclpy: a bundle whose graph
was deliberately broken (a perturbed weight, checksum re-stamped) is refused, naming the
figure; a good one reports the check, the providers and the model file in /diagnostics; a
bundle without a reference set configures with a WARN; an explicit precision this machine
cannot run fails configure unless allow_fallback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import wait_for

from mbmt_ros.runtime.bundle import sha256_file

pytestmark = pytest.mark.ros
CPU = {"backend": "onnxruntime", "precision": "fp32", "device": "cpu"}


def _restamp(bundle: Path, name: str) -> None:
    meta = json.loads((bundle / "meta.json").read_text())
    meta["files"][name] = {"sha256": sha256_file(bundle / name),
                           "size": (bundle / name).stat().st_size}
    (bundle / "meta.json").write_text(json.dumps(meta))


def _broken_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """The bundle with its last convolution's weight scaled by -3 and the checksum re-stamped."""
    import onnx
    from onnx import numpy_helper

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "broken"))
    model = onnx.load(str(bundle / "model.onnx"))
    last_conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    weight = next(t for t in model.graph.initializer if t.name == last_conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * -3.0, weight.name))
    onnx.save(model, str(bundle / "model.onnx"))
    _restamp(bundle, "model.onnx")
    return bundle


def _diag(collector) -> dict[str, str]:
    for array in reversed(collector.snapshot()):
        for status in array.status:
            if status.name.endswith(": perception"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_broken_graph_is_refused_at_configure_naming_the_figure(harness_factory, tiny_bundle,
                                                                tmp_path):
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn

    broken = _broken_copy(tiny_bundle, tmp_path)
    h = harness_factory({"bundle": str(broken), **CPU, "autostart": False})
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    error = h.node.transition_error
    assert error.startswith("configure failed: verify onnxruntime fp32 on cpu: FAILED")
    assert any(f in error for f in ("segmentation agreement", "depth relative error",
                                    "normals angle error")), error
    assert h.node.predictor is None and h.node.params is None  # stays unconfigured
    # verify: false opens the same path (the user's explicit choice), with the check not run
    h.node.set_parameters([rclpy.parameter.Parameter("verify", value=False)])
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node._runtime_report["verify"] == "not run"


def test_good_bundle_reports_the_check_and_what_runs(harness_factory, tiny_bundle):
    from diagnostic_msgs.msg import DiagnosticArray

    h = harness_factory({"bundle": str(tiny_bundle), **CPU, "diagnostics_period": 0.2})
    diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
    assert h.node.autostart(), h.node.transition_error
    assert h.node.params.verify is True and h.node.params.allow_fallback is False  # defaults
    values = wait_for(lambda: _diag(diagnostics))
    assert values["verify"].startswith("passed (fp32 limits): segmentation agreement")
    assert values["providers"] == "CPUExecutionProvider"
    assert values["model_file"] == "model.onnx" and values["fallback"] == "none"


def test_bundle_without_reference_set_configures_with_a_warning(harness_factory, tiny_bundle,
                                                                tmp_path, caplog):
    import logging

    old = Path(shutil.copytree(tiny_bundle, tmp_path / "old"))
    meta = json.loads((old / "meta.json").read_text())
    del meta["files"]["reference.npz"]
    (old / "meta.json").write_text(json.dumps(meta))
    (old / "reference.npz").unlink()
    caplog.set_level(logging.WARNING, logger="mbmt_ros.runtime")
    h = harness_factory({"bundle": str(old), **CPU})
    assert h.node.autostart(), h.node.transition_error
    assert h.node._runtime_report["verify"].startswith("skipped: ")
    assert any(r.levelno == logging.WARNING and "no reference set" in r.getMessage()
               for r in caplog.records)


def test_explicit_precision_not_delivered_fails_configure_unless_allowed(harness_factory,
                                                                         tiny_bundle):
    from mbmt_ros.runtime import BACKENDS

    if BACKENDS["onnxruntime"].availability("cuda") is None:
        pytest.skip("this machine runs CUDA: fp16 on cuda is delivered")
    h = harness_factory({"bundle": str(tiny_bundle), "backend": "onnxruntime",
                         "precision": "fp16", "device": "cuda", "autostart": False})
    h.node.trigger_configure()
    assert "requested fp16 on cuda, ran fp32 on cpu" in h.node.transition_error
    assert "allow_fallback" in h.node.transition_error
    h2 = harness_factory({"bundle": str(tiny_bundle), "backend": "onnxruntime",
                          "precision": "fp16", "device": "cuda", "allow_fallback": True},
                         node_name="perception_fallback")
    assert h2.node.autostart(), h2.node.transition_error
    assert h2.node._runtime_report["fallback"].startswith("onnxruntime: requested fp16 on cuda")
    assert h2.node.predictor.precision == "fp32"
