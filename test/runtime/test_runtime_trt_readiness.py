"""The static TensorRT-readiness check: exported bundles pass it, hand-built bad graphs fail it
with the rule that breaks, and an export whose graph fails it publishes nothing."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mbmt_ros.runtime.errors import TensorRTReadinessError
from mbmt_ros.runtime.trt_readiness import (
    READINESS_RULES,
    assert_bundle_tensorrt_ready,
    assert_tensorrt_ready,
    check_tensorrt_readiness,
)

H, W = 8, 12


def _graph(nodes: list, outputs: list, image_dims: list | None = None,
           initializers: list | None = None, opset: int = 17) -> onnx.ModelProto:
    """A model with the bundle's input ``image`` (uint8, NHWC) and the given nodes/outputs."""
    image = helper.make_tensor_value_info("image", TensorProto.UINT8,
                                          image_dims or ["batch", H, W, 3])
    graph = helper.make_graph(nodes, "g", [image], outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _out(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def _cast_first() -> list:
    """image -> Cast(float) -> Transpose(NCHW) -> ReduceMax over channels."""
    return [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("ReduceMax", ["x"], ["depth"], axes=[1], keepdims=0)]


def _rules(model: onnx.ModelProto) -> set[str]:
    return {v.rule for v in check_tensorrt_readiness(model)}


def test_cast_first_graph_is_ready() -> None:
    model = _graph(_cast_first(), [_out("depth", TensorProto.FLOAT, ["batch", H, W])])
    assert check_tensorrt_readiness(model) == []
    assert_tensorrt_ready(model)  # no exception


def test_transpose_before_cast_is_refused() -> None:
    """The pattern the bundle graph used to have: uint8 image -> Transpose -> Cast."""
    nodes = [helper.make_node("Transpose", ["image"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["depth"], to=TensorProto.FLOAT)]
    model = _graph(nodes, [_out("depth", TensorProto.FLOAT, ["batch", 3, H, W])])
    problems = check_tensorrt_readiness(model)
    assert {v.rule for v in problems} == {"edges", "operator"}
    assert any("feeds Transpose" in v.message and "cast first" in v.message for v in problems)
    with pytest.raises(TensorRTReadinessError, match=r"would not build with TensorRT .*"
                                                     r"\[edges\] input 'image'"):
        assert_tensorrt_ready(model, name="model.onnx")


def test_uint8_inside_the_graph_and_uint8_output_not_from_a_cast() -> None:
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["f"], ["u"], to=TensorProto.UINT8),
             helper.make_node("Identity", ["u"], ["label"])]
    model = _graph(nodes, [_out("label", TensorProto.UINT8, ["batch", H, W, 3])])
    messages = [str(v) for v in check_tensorrt_readiness(model)]
    assert any("UINT8 tensor 'u' inside the graph" in m for m in messages)
    assert any("output 'label'" in m and "not made by a Cast" in m for m in messages)


def test_int64_output_is_refused() -> None:
    nodes = [*_cast_first()[:2], helper.make_node("ArgMax", ["x"], ["segmentation"], axis=1,
                                                  keepdims=0)]
    model = _graph(nodes, [_out("segmentation", TensorProto.INT64, ["batch", H, W])])
    problems = check_tensorrt_readiness(model)
    assert [v.rule for v in problems] == ["outputs"]
    assert "INT64 output; cast it to INT32" in problems[0].message
    fixed = _graph([*nodes[:2], helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
                    helper.make_node("Cast", ["i"], ["segmentation"], to=TensorProto.INT32)],
                   [_out("segmentation", TensorProto.INT32, ["batch", H, W])])
    assert check_tensorrt_readiness(fixed) == []


@pytest.mark.parametrize("node, expected", [
    (helper.make_node("Det", ["x"], ["y"]), "ai.onnx.Det is not in TensorRT's supported"),
    (helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft"),
     "com.microsoft.Inverse is not in"),
])
def test_unsupported_operator_is_refused(node, expected: str) -> None:
    model = helper.make_model(helper.make_graph(
        [*_cast_first()[:2], node], "g",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", H, W, 3])],
        [_out("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    problems = check_tensorrt_readiness(model)
    assert [v.rule for v in problems] == ["operator"] and expected in problems[0].message


def test_unsupported_attribute_is_refused() -> None:
    """Resize is supported, but not in cubic mode or with antialiasing (opset 18)."""
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [*_cast_first()[:2],
             helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", antialias=1)]
    model = _graph(nodes, [_out("y", TensorProto.FLOAT, ["batch", 3, 2 * H, 2 * W])],
                   initializers=[scales], opset=18)
    messages = [v.message for v in check_tensorrt_readiness(model)]
    assert any("mode 'cubic'" in m for m in messages)
    assert any("antialias" in m for m in messages)


def test_opset_outside_tensorrt_range_is_refused() -> None:
    model = _graph(_cast_first()[:2], [_out("x", TensorProto.FLOAT, ["batch", 3, H, W])],
                   opset=8)
    assert any("opset 8" in v.message for v in check_tensorrt_readiness(model))


@pytest.mark.parametrize("dims", [["batch", "height", W, 3], ["batch", H, None, 3]])
def test_dynamic_height_or_width_is_refused(dims: list) -> None:
    model = _graph(_cast_first(), [_out("depth", TensorProto.FLOAT, ["batch", None, None])],
                   image_dims=dims)
    problems = check_tensorrt_readiness(model)
    assert [v.rule for v in problems] == ["shapes"]
    assert "only the batch may be dynamic" in problems[0].message


def test_fixed_batch_is_fine_and_rules_are_documented() -> None:
    model = _graph(_cast_first(), [_out("depth", TensorProto.FLOAT, [2, H, W])],
                   image_dims=[2, H, W, 3])
    assert check_tensorrt_readiness(model) == []
    assert set(READINESS_RULES) == {"edges", "operator", "outputs", "shapes"}


def test_exported_bundle_graphs_are_ready(tiny_bundle_master: Path) -> None:
    """Both exported graphs (fp32 and fp16) pass; meta.json records the check and that depth
    is clamped (never negative)."""
    import json

    assert assert_bundle_tensorrt_ready(tiny_bundle_master) == ["model.onnx", "model_fp16.onnx"]
    model = onnx.load(str(tiny_bundle_master / "model.onnx"))
    first = [n for n in model.graph.node if "image" in n.input]
    assert [n.op_type for n in first] == ["Cast"]  # the uint8 input feeds the Cast directly
    meta = json.loads((tiny_bundle_master / "meta.json").read_text())
    assert meta["tensorrt_ready"]["checked"] and meta["depth_min"] == 0.0


def test_depth_is_never_negative() -> None:
    """The bundle graph clamps depth at 0 (a network may regress small negative values)."""
    import torch

    from mbmt_ros.runtime.torch_graph import BundleGraph

    class NegativeDepth(torch.nn.Module):
        tasks = ("depth",)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"depth": x[:, :1] - 10.0}  # mostly negative

    graph = BundleGraph(NegativeDepth()).eval()
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 4, 5, 3),
                                                               dtype=np.uint8))
    (depth,) = graph(image)
    assert depth.shape == (1, 4, 5) and float(depth.min()) == 0.0


def test_export_of_a_graph_tensorrt_cannot_build_writes_nothing(
        tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old transpose-before-cast graph fails the export with the readiness message."""
    import torch

    from training import export as export_mod
    from training.export import ExportError, export_bundle

    def transpose_first(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image.permute(0, 3, 1, 2).to(torch.float32) * self.scale - self.shift
        return (self.model(x)["depth"][:, 0],)

    monkeypatch.setattr(export_mod.BundleGraph, "forward", transpose_first)
    with pytest.raises(ExportError, match=r"model.onnx would not build with TensorRT.*"
                                          r"feeds Transpose.*Nothing was written"):
        export_bundle(tiny_checkpoint, tmp_path / "out", input_size=(32, 32),
                      tasks=["depth"], exporter="torchscript", fp16=False)
    assert os.listdir(tmp_path) == []
