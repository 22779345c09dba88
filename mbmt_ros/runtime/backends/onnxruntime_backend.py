"""ONNX Runtime backend: TensorRT / CUDA execution providers when present, CPU otherwise.

On CUDA with ``precision="fp16"`` the TensorRT EP builds FP16 engines (cached beside the
bundle under ``engines/ort_trt``); the CUDA EP runs ``model_fp16.onnx`` when the bundle has
one. The CPU EP always runs ``model.onnx`` in FP32.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from mbmt_ros.runtime.bundle import INPUT_NAME, Bundle
from mbmt_ros.runtime.cuda_device import device_count
from mbmt_ros.runtime.errors import BackendError, BackendNotInstalledError
from mbmt_ros.runtime.predictor import BundlePredictor

__all__ = ["availability", "open", "session_options"]

_log = logging.getLogger(__name__)
_INSTALL = ("ONNX Runtime is not installed: `pip install onnxruntime` (CPU) or "
            "`pip install onnxruntime-gpu` (CUDA / TensorRT execution providers)")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendNotInstalledError(_INSTALL) from exc
    return onnxruntime


def availability(device: str) -> str | None:
    try:
        ort = _ort()
    except BackendNotInstalledError:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "this onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu)"
        if device_count() == 0:
            return "no CUDA GPU is visible"
    return None


def session_options(num_threads: int | None = None) -> Any:
    """Session options: full graph optimisation, sequential execution, memory patterns on,
    ``num_threads`` intra-op threads (default: ONNX Runtime's choice, the physical cores)."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = True
    opts.enable_cpu_mem_arena = True
    opts.log_severity_level = 3  # errors only; our own logs say what was chosen
    if num_threads:
        opts.intra_op_num_threads = int(num_threads)
    return opts


def _providers(bundle: Bundle, precision: str, device: str,
               options: dict[str, Any]) -> tuple[list[Any], str]:
    """Execution providers to request, and the model file to load."""
    ort = _ort()
    available = ort.get_available_providers()
    model = bundle.model_path
    if device != "cuda":
        return ["CPUExecutionProvider"], str(model)
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available and options.get("ort_tensorrt", True):
        cache = os.fspath(options.get("engine_cache_dir") or bundle.engine_dir / "ort_trt")
        providers.append(("TensorrtExecutionProvider", {
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
        }))
    elif precision == "fp16" and bundle.fp16_model_path is not None:
        model = bundle.fp16_model_path
    providers += [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE"}),
                  "CPUExecutionProvider"]
    return providers, str(model)


class _OrtRunner:
    """Runs the bundle graph in one ``InferenceSession``."""

    max_batch: int | None

    def __init__(self, session: Any, bundle: Bundle) -> None:
        self._session = session
        self._outputs = list(bundle.output_names)
        shape = session.get_inputs()[0].shape
        self.max_batch = shape[0] if isinstance(shape[0], int) else None

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, {INPUT_NAME: images})
        return dict(zip(self._outputs, values, strict=True))

    def close(self) -> None:
        self._session = None


def open(bundle: Bundle, precision: str = "fp32", device: str = "cpu",  # noqa: A001
         **options: Any) -> BundlePredictor:
    """An ONNX Runtime predictor; options: ``num_threads``, ``engine_cache_dir``,
    ``ort_tensorrt`` (False disables the TensorRT EP)."""
    ort = _ort()
    if device == "cuda" and availability("cuda") is not None:
        _log.warning("onnxruntime: CUDA requested but %s; running on the CPU",
                     availability("cuda"))
        device = "cpu"
    providers, model = _providers(bundle, precision, device, options)
    try:
        session = ort.InferenceSession(model, sess_options=session_options(
            options.get("num_threads")), providers=providers)
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph...)
        raise BackendError(f"ONNX Runtime cannot load {model}: {exc}; the file may be "
                           f"corrupt - re-run `mbmt-train export`") from exc
    _check_io(session, bundle, model)
    active = session.get_providers()
    if device == "cuda" and active[0] == "CPUExecutionProvider":
        device = "cpu"
    used_precision = "fp16" if device == "cuda" and precision == "fp16" and (
        active[0] == "TensorrtExecutionProvider" or model.endswith("fp16.onnx")) else "fp32"
    if used_precision != precision:
        _log.info("onnxruntime: %s requested, running %s on %s", precision, used_precision,
                  device)
    _log.info("onnxruntime: %s with providers %s", model, active)
    return BundlePredictor(bundle, _OrtRunner(session, bundle), backend="onnxruntime",
                           precision=used_precision, device=device)


def _check_io(session: Any, bundle: Bundle, model: str) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or outputs != list(bundle.output_names):
        raise BackendError(f"{model} has inputs {inputs} and outputs {outputs}, but meta.json "
                           f"promises [{INPUT_NAME!r}] and {list(bundle.output_names)}; the "
                           f"bundle is inconsistent - re-run `mbmt-train export`")
