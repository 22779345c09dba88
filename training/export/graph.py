"""The bundle's ONNX graph: export :class:`~mbmt_ros.runtime.torch_graph.BundleGraph` (uint8
NHWC RGB in, normalisation, argmax + confidence and the task outputs inside the graph, a
dynamic batch axis) with the TorchScript or torch.export exporter, declare the contract's
static output shapes, and refuse a graph TensorRT could not build (static check, no TensorRT
needed)."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbmt_ros.runtime.bundle import INPUT_NAME, output_names
from mbmt_ros.runtime.errors import TensorRTReadinessError
from mbmt_ros.runtime.torch_graph import BundleGraph
from mbmt_ros.runtime.trt_readiness import assert_tensorrt_ready
from mbmt_ros.tasks import NORMALS
from training.errors import ExportError

__all__ = ["EXPORTERS", "sample_images", "export_onnx", "check_tensorrt_ready"]

_log = logging.getLogger(__name__)

#: ONNX exporters: ``torchscript`` (opset 17, fast, TensorRT 8.6+), ``dynamo``
#: (torch.export based, opset 18), ``auto`` = torchscript where this torch still has it.
EXPORTERS = ("auto", "torchscript", "dynamo")


def check_tensorrt_ready(path: Path) -> None:
    """The static TensorRT-readiness check (no TensorRT needed): a graph TensorRT could not
    build fails the export here, before anything is published, instead of on the robot."""
    try:
        assert_tensorrt_ready(path, name=path.name)
    except TensorRTReadinessError as exc:
        raise ExportError(f"{exc}. Nothing was written; see docs/deployment.md "
                          f"(TensorRT readiness)") from exc


def sample_images(height: int, width: int, count: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 RGB test inputs: smooth random fields (image-like) and noise."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        if i % 2 == 0:
            coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 6, 8)).astype(np.float32))
            smooth = torch.nn.functional.interpolate(coarse, size=(height, width),
                                                     mode="bicubic", align_corners=False)
            images[i] = smooth[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()
        else:
            images[i] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return images


def export_onnx(graph: BundleGraph, path: Path, samples: np.ndarray, exporter: str) -> str:
    """Export ``graph`` to ``path`` with a dynamic batch axis; returns the exporter used.

    ``auto`` tries the TorchScript exporter (seconds, opset 17) and falls back to the
    torch.export one (slower, opset 18) where the former is gone or fails.
    """
    import onnx

    order = {"auto": ("torchscript", "dynamo")}.get(exporter, (exporter,))
    errors: list[str] = []
    for kind in order:
        try:
            _run_exporter(graph, path, samples, kind)
            _declare_output_shapes(path, samples.shape[1:3])
            onnx.checker.check_model(str(path), full_check=True)
            return kind
        except Exception as exc:  # torch.onnx / onnx raise many unrelated types
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            if kind != order[-1]:
                _log.warning("ONNX export with %s failed (%s); trying %s", kind, exc, order[-1])
    raise ExportError(f"ONNX export of {path.name} failed: " + " | ".join(errors))


def _declare_output_shapes(path: Path, size: tuple[int, int]) -> None:
    """Write the contract's static output shapes (batch stays symbolic) into the graph, which
    the TorchScript exporter leaves symbolic; TensorRT and readers of the bundle rely on them."""
    import onnx

    model = onnx.load(str(path))
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        static = [3, *size] if output.name == NORMALS else list(size)
        if len(dims) != 1 + len(static):
            raise ExportError(f"output {output.name} has rank {len(dims)}, expected "
                              f"{1 + len(static)}")
        dims[0].dim_param = "batch"
        for dim, value in zip(dims[1:], static, strict=True):
            dim.dim_value = value
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    _shapes_from_the_cast(model)
    onnx.save(model, str(path))


def _shapes_from_the_cast(model: Any) -> None:
    """Let ``Shape``/``Size`` nodes that read the uint8 input read its Cast instead.

    The torch.export exporter takes the batch size from ``image`` directly; TensorRT wants
    a uint8 input to feed only a Cast. The graph casts first (same shape), so reading the
    Cast's output is equivalent.
    """
    nodes = model.graph.node
    cast = next((n for n in nodes if n.op_type == "Cast" and INPUT_NAME in n.input), None)
    if cast is None:
        return
    for node in nodes:
        if node.op_type in ("Shape", "Size"):
            node.input[:] = [cast.output[0] if n == INPUT_NAME else n for n in node.input]
    order = [cast] + [n for n in nodes if n is not cast]  # the Cast reads only the input
    copies = [type(cast)() for _ in order]
    for copy_, node in zip(copies, order, strict=True):
        copy_.CopyFrom(node)
    del nodes[:]
    nodes.extend(copies)


def _run_exporter(graph: BundleGraph, path: Path, samples: np.ndarray, kind: str) -> None:
    example = (torch.from_numpy(samples),)
    names = list(output_names(graph.tasks))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # shape asserts
        if kind == "torchscript":
            torch.onnx.export(graph, example, str(path), input_names=[INPUT_NAME],
                              output_names=names, opset_version=17, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"},
                                            **{n: {0: "batch"} for n in names}})
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(graph, example, input_names=[INPUT_NAME],
                                        output_names=names, opset_version=18, dynamo=True,
                                        dynamic_shapes=({0: batch},), verbose=False)
            program.save(str(path))
