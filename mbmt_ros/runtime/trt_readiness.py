"""Static TensorRT-readiness check of an ONNX graph: no TensorRT, no GPU, only ``onnx``.

A Jetson is the wrong place to learn that a graph cannot be built (with ``backend=auto``
there is no fallback once TensorRT is chosen), so ``mbmt-train export`` runs this check on
every graph it writes and refuses to publish a bundle that fails it. The rules:

1. **uint8/bool only at the edges, next to a Cast.** TensorRT supports UINT8 only as a
   network input or output, and a uint8 input must feed a Cast directly (a Transpose of
   the uint8 ``image`` before the cast leaves TensorRT 10 with an empty network). So every
   consumer of a uint8/bool graph input is a Cast, every uint8/bool graph output is made by
   a Cast, and no other tensor is uint8/bool.
2. **Supported operators.** Every node is an ``ai.onnx`` operator in :data:`TENSORRT_OPS`
   (TensorRT 10.x's supported list), for an opset TensorRT 10.3 (JetPack 6) reads
   (:data:`OPSET_RANGE`), its data input of a type TensorRT supports for that operator,
   and the attributes that matter within TensorRT's restrictions (:func:`_restrictions`).
3. **No int64 graph outputs** (TensorRT has no INT64 output bindings on older versions and
   our runtimes expect int32 class ids), and no float64 outputs.
4. **Fixed H x W with a coverable batch.** Every graph input has static non-batch
   dimensions, and a batch dimension that is either a positive integer or one symbolic
   dimension an optimisation profile (min/opt/max) can cover.

:func:`check_tensorrt_readiness` returns the violations; :func:`assert_tensorrt_ready`
raises :class:`~mbmt_ros.runtime.errors.TensorRTReadinessError` with all of them on one
line. Imports ``onnx`` lazily (it is a training-side dependency).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mbmt_ros.runtime.errors import TensorRTReadinessError

__all__ = ["OPSET_RANGE", "READINESS_RULES", "TENSORRT_OPS", "Violation",
           "check_tensorrt_readiness", "assert_tensorrt_ready", "assert_bundle_tensorrt_ready"]

#: The rules, by the name a :class:`Violation` reports (recorded in a bundle's meta.json).
READINESS_RULES = {
    "edges": "uint8/bool tensors only as graph inputs/outputs, and only next to a Cast",
    "operator": "every operator, its data type and the attributes that matter in TensorRT "
                "10.x's supported ONNX operator list, opset within OPSET_RANGE",
    "outputs": "no int64 (or float64) graph outputs",
    "shapes": "fixed H x W; a batch dimension that is a positive size or one named dynamic "
              "dimension an optimisation profile covers",
}

#: Opsets TensorRT 10.3 (JetPack 6) parses: "TensorRT 10.0 supports operators in the
#: inclusive range of opset 9 to opset 20" (onnx-tensorrt docs/operators.md, 10.x).
OPSET_RANGE = (9, 20)

_F = ("FP32", "FP16", "BF16")
_FI = (*_F, "INT32", "INT64")
_FIB = (*_FI, "BOOL")
_B = ("BOOL",)

#: Operators TensorRT 10.x's ONNX parser supports and the data types of their (first) data
#: input, transcribed from https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md
#: (the TensorRT 10.x "Operator Support Matrix"; rows marked "N" are left out). UINT8 is
#: listed only for Cast/CastLike: "UINT8 is only supported as network input or output tensor
#: types". Attribute restrictions from the same table are enforced in :func:`_restrictions`.
TENSORRT_OPS: dict[str, tuple[str, ...]] = {
    "Abs": _FI, "Acos": _F, "Acosh": _F, "Add": _FI, "And": _B, "ArgMax": _FI, "ArgMin": _FI,
    "Asin": _F, "Asinh": _F, "Atan": _F, "Atanh": _F, "AveragePool": _F,
    "BatchNormalization": _F, "BlackmanWindow": ("FP32", "FP16"),
    "Cast": (*_FIB, "UINT8"), "CastLike": (*_FIB, "UINT8"), "Ceil": _F, "Celu": _F,
    "Clip": _F, "Concat": _FIB, "Constant": _FIB, "ConstantOfShape": _FIB, "Conv": _F,
    "ConvTranspose": _F, "Cos": _F, "Cosh": _F, "CumSum": _F, "DepthToSpace": _FI,
    "DequantizeLinear": ("INT8", "FP8", "INT4"), "Div": _FI, "Dropout": _F, "Einsum": _F,
    "Elu": _F, "Equal": _FI, "Erf": _F, "Exp": _F, "Expand": _FIB, "EyeLike": _FIB,
    "Flatten": _FIB, "Floor": _F, "Gather": _FIB, "GatherElements": _FIB, "GatherND": _FIB,
    "Gelu": _FI, "Gemm": _F, "GlobalAveragePool": _F, "GlobalLpPool": _F,
    "GlobalMaxPool": _F, "Greater": _FI, "GreaterOrEqual": _FI, "GridSample": ("FP32", "FP16"),
    "GroupNormalization": _F, "GRU": _F, "HammingWindow": ("FP32", "FP16"),
    "HannWindow": ("FP32", "FP16"), "HardSigmoid": _F, "HardSwish": _F, "Hardmax": _F,
    "Identity": _FIB, "If": _FIB, "ImageScaler": _F, "InstanceNormalization": _F,
    "IsInf": _F, "IsNaN": _FI, "LayerNormalization": _F, "LeakyRelu": _F, "Less": _FI,
    "LessOrEqual": _FI, "Log": _F, "LogSoftmax": _F, "Loop": _FIB, "LRN": _F, "LSTM": _F,
    "LpNormalization": _F, "LpPool": _F, "MatMul": _F, "Max": _FI, "MaxPool": _F,
    "Mean": _FI, "MeanVarianceNormalization": _F, "Min": _FI, "Mish": ("FP32", "FP16"),
    "Mod": _FI, "Mul": _FI, "Neg": _FI, "NonMaxSuppression": ("FP32", "FP16"),
    "NonZero": ("FP32", "FP16"), "Not": _B, "OneHot": _FIB, "Or": _B, "Pad": _FI,
    "ParametricSoftplus": _F, "Pow": _FI, "PRelu": _F, "QuantizeLinear": _F,
    "RandomNormal": _F, "RandomNormalLike": _F, "RandomUniform": _F, "RandomUniformLike": _F,
    "Range": _FI, "Reciprocal": _F, "ReduceL1": _FI, "ReduceL2": _FI, "ReduceLogSum": _FI,
    "ReduceLogSumExp": _FI, "ReduceMax": _FI, "ReduceMean": _FI, "ReduceMin": _FI,
    "ReduceProd": _FI, "ReduceSum": _FI, "ReduceSumSquare": _FI, "Relu": _FI,
    "Reshape": _FIB, "Resize": _F, "ReverseSequence": _FIB, "RNN": _F,
    "RoiAlign": ("FP32", "FP16"), "Round": _F, "ScaledTanh": _F, "Scan": _F, "Scatter": _FI,
    "ScatterElements": _FI, "ScatterND": _FI, "Selu": _F, "Shape": _FIB, "Shrink": _FI,
    "Sigmoid": _F, "Sign": _FI, "Sin": _F, "Sinh": _F, "Size": _FIB, "Slice": _FIB,
    "Softmax": _F, "Softplus": _F, "Softsign": _F, "SpaceToDepth": _FI, "Split": _FIB,
    "Sqrt": _F, "Squeeze": _FIB, "Sub": _FI, "Sum": _FI, "Tan": _F, "Tanh": _F,
    "ThresholdedRelu": _F, "Tile": _FIB, "TopK": _FI, "Transpose": _FIB, "Trilu": _FIB,
    "Unsqueeze": _FIB, "Upsample": _F, "Where": _FIB, "Xor": _B,
}

_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                  "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_REDUCE_WITH_AXES_INPUT = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                           "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
                           "ReduceSumSquare", "Squeeze", "Unsqueeze"}
_EDGE_TYPES = {"UINT8", "BOOL"}


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` (edges | operator | outputs | shapes), where, and why."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def _type_name(elem_type: int) -> str:
    import onnx

    name = onnx.TensorProto.DataType.Name(elem_type)
    return {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "DOUBLE": "FP64",
            "FLOAT8E4M3FN": "FP8"}.get(name, name)


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    return onnx.shape_inference.infer_shapes(model)


def _tensor_types(graph: Any) -> dict[str, str]:
    """Every typed tensor of ``graph`` (inputs, outputs, inferred values, initializers)."""
    types: dict[str, str] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = _type_name(value.type.tensor_type.elem_type)
    for init in graph.initializer:
        types[init.name] = _type_name(init.data_type)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = _type_name(attr.t.data_type)
    return types


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    values = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _name(node: Any) -> str:
    return f"{node.op_type} node {node.name or node.output[0]!r}"


def _restrictions(node: Any, constants: set[str]) -> list[str]:
    """TensorRT 10.x's attribute/input restrictions for the operators that have them."""
    attrs, op, problems = _attrs(node), node.op_type, []
    if op == "Resize":
        if attrs.get("mode", "nearest") not in _RESIZE_MODES:
            problems.append(f"mode {attrs['mode']!r} (TensorRT: {sorted(_RESIZE_MODES)})")
        coords = attrs.get("coordinate_transformation_mode", "half_pixel")
        if coords not in _RESIZE_COORDS:
            problems.append(f"coordinate_transformation_mode {coords!r}")
        if attrs.get("mode", "nearest") == "nearest" and \
                attrs.get("nearest_mode", "round_prefer_floor") not in _RESIZE_NEAREST:
            problems.append(f"nearest_mode {attrs['nearest_mode']!r}")
        if attrs.get("antialias", 0):
            problems.append("antialias is not supported")
        if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            problems.append("keep_aspect_ratio_policy must be 'stretch'")
    elif op in ("AveragePool", "MaxPool", "LpPool"):
        if len(attrs.get("kernel_shape", [])) not in (2, 3):
            problems.append("only 2D or 3D pooling is supported")
        if any(d != 1 for d in attrs.get("dilations", [])):
            problems.append("dilations must be empty or all ones")
        if op == "MaxPool" and len([o for o in node.output if o]) > 1:
            problems.append("the Indices output is not supported")
    elif op == "TopK" and attrs.get("sorted", 1) != 1:
        problems.append("sorted must be 1")
    elif op == "ScatterND" and attrs.get("reduction", "none") != "none":
        problems.append("reduction other than 'none' is not supported")
    elif op == "LayerNormalization" and len([o for o in node.output if o]) > 1:
        problems.append("only the first output Y is supported")
    elif op == "Constant" and set(attrs) & {"sparse_value", "value_string", "value_strings"}:
        problems.append("sparse/string constants are not supported")
    elif op == "Dropout" and len(node.input) > 2 and node.input[2] \
            and node.input[2] not in constants:
        problems.append("is_training must be an initializer (False)")
    elif op == "CumSum" and len(node.input) > 1 and node.input[1] not in constants:
        problems.append("axis must be a build-time constant")
    if op in _REDUCE_WITH_AXES_INPUT and len(node.input) > 1 and node.input[1] \
            and node.input[1] not in constants:
        problems.append("axes must be an initializer / constant")
    return problems


def check_tensorrt_readiness(model: Any) -> list[Violation]:
    """The readiness violations of ``model`` (an ``onnx.ModelProto`` or a path); [] = ready.

    Four checks, each its own function: the opset range, uint8/bool only at the graph's
    edges next to a Cast, every operator (and the attributes that matter) supported, no
    int64/float64 outputs, and a fixed H x W (only the batch may be dynamic).
    """
    model = _load(model)
    graph = model.graph
    found: list[Violation] = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    low, high = OPSET_RANGE
    version = opsets.get("ai.onnx")
    if version is None or not low <= version <= high:
        found.append(Violation("operator", "model", f"opset {version} is outside TensorRT "
                                                    f"10.3's range {low}..{high}"))
    types = _tensor_types(graph)
    inputs = {v.name for v in graph.input} - {i.name for i in graph.initializer}
    found += _edge_violations(graph, types, inputs)
    found += _operator_violations(graph, types)
    found += _output_violations(graph, types)
    found += _shape_violations(graph, inputs)
    return found


def _edge_violations(graph: Any, types: dict[str, str], inputs: set[str]) -> list[Violation]:
    """uint8/bool only at the edges, next to a Cast."""
    found: list[Violation] = []
    outputs = {v.name for v in graph.output}
    producer = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for name, kind in types.items():
        if kind not in _EDGE_TYPES:
            continue
        if name in inputs:
            bad = [n for n in consumers.get(name, []) if n.op_type != "Cast"]
            if bad:
                found.append(Violation("edges", f"input {name!r}", f"{kind} input feeds "
                                       f"{_name(bad[0])}; TensorRT needs it to feed a Cast "
                                       f"directly (cast first)"))
        elif name in outputs:
            made_by = producer.get(name)
            if made_by is None or made_by.op_type != "Cast":
                found.append(Violation("edges", f"output {name!r}", f"{kind} output is not "
                                       f"made by a Cast"))
        else:
            made_by = producer.get(name)
            where = _name(made_by) if made_by is not None else f"initializer {name!r}"
            found.append(Violation("edges", where, f"{kind} tensor {name!r} inside the graph; "
                                   f"TensorRT allows {kind} only at the graph's inputs/outputs"))
    return found


def _operator_violations(graph: Any, types: dict[str, str]) -> list[Violation]:
    """Every operator (and the attributes that matter) supported by TensorRT."""
    found: list[Violation] = []
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        domain = node.domain or "ai.onnx"
        if domain != "ai.onnx" or node.op_type not in TENSORRT_OPS:
            found.append(Violation("operator", _name(node), f"{domain}.{node.op_type} is not in "
                                   f"TensorRT's supported ONNX operators"))
            continue
        allowed = TENSORRT_OPS[node.op_type]
        if node.op_type in ("Cast", "CastLike"):
            target = _attrs(node).get("to")
            if target is not None and _type_name(target) not in allowed:
                found.append(Violation("operator", _name(node), f"casts to "
                                       f"{_type_name(target)}, which TensorRT does not support"))
        data = node.input[0] if node.input else ""
        kind = types.get(data)
        if kind is not None and kind not in allowed and not (
                kind in _EDGE_TYPES and node.op_type == "Cast"):
            found.append(Violation("operator", _name(node), f"{kind} data input {data!r}; "
                                   f"TensorRT runs {node.op_type} on {', '.join(allowed)}"))
        for problem in _restrictions(node, constants):
            found.append(Violation("operator", _name(node), problem))
    return found


def _output_violations(graph: Any, types: dict[str, str]) -> list[Violation]:
    """No int64 / float64 graph outputs."""
    found: list[Violation] = []
    for value in graph.output:
        kind = types.get(value.name)
        if kind in ("INT64", "FP64"):
            found.append(Violation("outputs", f"output {value.name!r}", f"{kind} output; cast "
                                   f"it to {'INT32' if kind == 'INT64' else 'FP32'} in the graph"))
    return found


def _shape_violations(graph: Any, inputs: set[str]) -> list[Violation]:
    """A fixed H x W and a batch dimension an optimisation profile can cover."""
    found: list[Violation] = []
    for value in graph.input:
        if value.name not in inputs:
            continue
        dims = list(value.type.tensor_type.shape.dim)
        if not dims:
            found.append(Violation("shapes", f"input {value.name!r}", "has no static rank"))
            continue
        batch, rest = dims[0], dims[1:]
        if not (batch.dim_param or batch.dim_value > 0):
            found.append(Violation("shapes", f"input {value.name!r}", "batch dimension is "
                                   "neither a positive size nor a named dynamic dimension"))
        dynamic = [i + 1 for i, d in enumerate(rest) if not d.dim_value > 0]
        if dynamic:
            found.append(Violation("shapes", f"input {value.name!r}", f"dimension(s) {dynamic} "
                                   f"are not fixed; only the batch may be dynamic (export at a "
                                   f"fixed H x W)"))
    return found


def assert_tensorrt_ready(model: Any, name: str | None = None) -> None:
    """Raise :class:`TensorRTReadinessError` listing every violation of ``model``."""
    problems = check_tensorrt_readiness(model)
    if problems:
        label = name or (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "graph")
        raise TensorRTReadinessError(
            f"{label} would not build with TensorRT ({len(problems)} problem"
            f"{'s' if len(problems) > 1 else ''}): " + "; ".join(map(str, problems)))


def assert_bundle_tensorrt_ready(bundle_dir: str | os.PathLike[str]) -> list[str]:
    """Check every ONNX graph of a bundle folder (``model.onnx``, ``model_fp16.onnx``);
    returns the names checked, raises :class:`TensorRTReadinessError` on the first failure."""
    from pathlib import Path

    from mbmt_ros.runtime.bundle import MODEL_FILE, MODEL_FP16_FILE

    folder = Path(bundle_dir)
    checked = []
    for name in (MODEL_FILE, MODEL_FP16_FILE):
        if (folder / name).is_file():
            assert_tensorrt_ready(folder / name, name=str(folder / name))
            checked.append(name)
    if not checked:
        raise TensorRTReadinessError(f"{folder} holds no {MODEL_FILE}; is it a model bundle?")
    return checked
