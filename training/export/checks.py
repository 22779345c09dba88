"""The export's checks: ONNX Runtime's outputs against PyTorch's on sample inputs (the parity
check, stored in ``meta.json``; an FP32 graph outside :data:`PARITY_TOLERANCES` fails the
export), and the bundle's reference set that any robot verifies its path against
(:mod:`mbmt_ros.runtime.verify`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbmt_ros.runtime.bundle import INPUT_NAME, REFERENCE_FILE, output_names
from mbmt_ros.runtime.torch_graph import BundleGraph
from mbmt_ros.runtime.verify import reference_frames, save_reference
from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION
from training.errors import ExportError

__all__ = ["PARITY_TOLERANCES", "REFERENCE_FRAMES", "parity_check", "fp16_parity",
           "enforce_parity", "write_reference_set"]

_log = logging.getLogger(__name__)

#: FP32 ONNX Runtime vs PyTorch bounds; an export outside them fails.
PARITY_TOLERANCES = {"segmentation_agreement_min": 0.999, "segmentation_confidence_max_abs": 1e-3,
                     "depth_max_abs": 1e-3, "depth_max_rel": 1e-3, "normals_max_abs": 1e-3}


def parity_check(graph: BundleGraph, onnx_path: Path, samples: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime (CPU) on ``onnx_path`` vs PyTorch FP32 ``graph`` on ``samples``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {INPUT_NAME: samples}), strict=True))
    with torch.no_grad():
        ref = dict(zip(output_names(graph.tasks),
                       (t.numpy() for t in graph(torch.from_numpy(samples))), strict=True))
    report: dict[str, Any] = {"samples": int(len(samples)), "backend": "onnxruntime-cpu",
                              "reference": "pytorch-fp32-cpu"}
    if SEGMENTATION in ref:
        report["segmentation_agreement"] = float(np.mean(got[SEGMENTATION] == ref[SEGMENTATION]))
        report["segmentation_confidence_max_abs"] = _max_abs(got, ref, "segmentation_confidence")
    if DEPTH in ref:
        report["depth_max_abs"] = _max_abs(got, ref, DEPTH)
        report["depth_max_rel"] = report["depth_max_abs"] / max(1.0, float(np.abs(ref[DEPTH]).max()))
    if NORMALS in ref:
        report["normals_max_abs"] = _max_abs(got, ref, NORMALS)
    return report


#: Frames in the bundle's reference set (``mbmt-engine verify``, the node's configure check).
REFERENCE_FRAMES = 3


def write_reference_set(onnx_path: Path, out: Path, size: tuple[int, int],
                        count: int = REFERENCE_FRAMES) -> dict[str, Any]:
    """Write the bundle's reference set: ``count`` image-like frames at the bundle size and
    the outputs of the exported FP32 graph (ONNX Runtime, CPU) on them; returns its record
    for ``meta.json["reference"]`` (see :mod:`mbmt_ros.runtime.verify`)."""
    import onnxruntime as ort

    frames = reference_frames(*size, count=count)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {INPUT_NAME: frames}), strict=True))
    save_reference(out, frames, outputs)
    return {"file": REFERENCE_FILE, "frames": count, "producer": "onnxruntime CPU fp32, "
            + onnx_path.name, "bytes": out.stat().st_size}


def fp16_parity(graph: BundleGraph, path: Path, samples: np.ndarray) -> dict[str, Any]:
    """The FP16 graph's parity report; reported, not enforced (FP16 error depends on the
    weights), and an ONNX Runtime CPU build lacking an FP16 kernel is recorded, not fatal."""
    try:
        return parity_check(graph, path, samples)
    except Exception as exc:  # onnxruntime raises its own exception types
        _log.warning("FP16 parity check skipped: ONNX Runtime (CPU) cannot run %s: %s",
                     path.name, exc)
        return {"skipped": f"onnxruntime CPU cannot run {path.name}: {exc}"}


def _max_abs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], name: str) -> float:
    return float(np.abs(got[name].astype(np.float64) - ref[name].astype(np.float64)).max())


def enforce_parity(report: dict[str, Any]) -> None:
    tol = PARITY_TOLERANCES
    failures = []
    if report.get("segmentation_agreement", 1.0) < tol["segmentation_agreement_min"]:
        failures.append(f"segmentation agreement {report['segmentation_agreement']:.5f} < "
                        f"{tol['segmentation_agreement_min']}")
    for key in ("segmentation_confidence_max_abs", "depth_max_rel", "normals_max_abs"):
        if report.get(key, 0.0) > tol[key]:
            failures.append(f"{key} {report[key]:.3g} > {tol[key]}")
    if failures:
        raise ExportError("the exported ONNX graph disagrees with PyTorch: " + "; ".join(failures)
                          + ". Check the model for export-unsafe operations")
