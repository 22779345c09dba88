"""ONNX Runtime backend: TensorRT / CUDA execution providers when present, CPU otherwise.

On CUDA with ``precision="fp16"`` the TensorRT EP builds FP16 engines (cached beside the
bundle under ``engines/ort_trt``); the CUDA EP runs ``model_fp16.onnx`` when the bundle has
one. The CPU EP runs ``model.onnx`` in FP32, or with ``precision="int8"`` the bundle's
``model_int8.onnx`` (``mbmt-train quantize``) when it has one.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.runtime.bundle import INPUT_NAME, Bundle
from mbmt_ros.runtime.cuda_device import device_count, workspace_bytes
from mbmt_ros.runtime.engine_cache import cache_dir
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
        return cuda_unavailable(ort.get_available_providers(), _visible_gpus())
    return None


_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _visible_gpus() -> int | None:
    """CUDA devices seen by cuda-python, or ``None`` when cuda-python is not installed (then
    ONNX Runtime's own provider list decides: onnxruntime-gpu does not need cuda-python)."""
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec(
            "cuda.bindings") is None:
        return None
    return device_count()


def cuda_unavailable(available: list[str], gpus: int | None) -> str | None:
    """Why ONNX Runtime cannot run on CUDA here (``None``: it can), from the execution
    providers this onnxruntime build offers; ``gpus`` (cuda-python's device count, ``None``
    when unknown) can only veto. A session that still falls back to the CPU (no driver, CUDA
    libraries missing) is detected after opening and reported as ``device="cpu"``."""
    if not any(p in available for p in _GPU_PROVIDERS):
        return "this onnxruntime has no CUDA/TensorRT execution provider (pip install " \
               "onnxruntime-gpu, or the `gpu` extra)"
    if gpus == 0:
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


def tensorrt_ep_cache(bundle: Bundle, override: str | os.PathLike[str] | None = None) -> Path:
    """Engine + timing cache folder of ONNX Runtime's TensorRT EP: ``override``, else
    ``engines/ort_trt`` beside the bundle when writable, else the user's cache (read-only
    bundles, e.g. installed under /opt) - the same rule as the TensorRT backend's engines."""
    return Path(override) if override else cache_dir(bundle) / "ort_trt"


def _providers(bundle: Bundle, precision: str, device: str, options: dict[str, Any],
               available: list[str] | None = None) -> tuple[list[Any], str]:
    """Execution providers to request, and the model file to load (``available``: the
    providers of this onnxruntime build, asked when not given)."""
    if available is None:
        available = _ort().get_available_providers()
    model = bundle.model_path
    if device != "cuda":
        if precision == "int8" and bundle.int8_model_path is not None:
            model = bundle.int8_model_path  # QDQ graph of `mbmt-train quantize`
        return ["CPUExecutionProvider"], str(model)
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available and options.get("ort_tensorrt", True):
        cache = os.fspath(tensorrt_ep_cache(bundle, options.get("engine_cache_dir")))
        os.makedirs(cache, exist_ok=True)
        height, width = bundle.input_size
        batch = int(options.get("batch", 1))
        low = 1 if options.get("dynamic_batch") else batch
        trt_options = {
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            # explicit profile: one engine for the bundle's fixed H x W, built at warm-up
            "trt_profile_min_shapes": f"{INPUT_NAME}:{low}x{height}x{width}x3",
            "trt_profile_opt_shapes": f"{INPUT_NAME}:{batch}x{height}x{width}x3",
            "trt_profile_max_shapes": f"{INPUT_NAME}:{batch}x{height}x{width}x3",
        }
        workspace = workspace_bytes(options)
        if workspace:
            trt_options["trt_max_workspace_size"] = workspace
        providers.append(("TensorrtExecutionProvider", trt_options))
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


def _provider_name(provider: Any) -> str:
    return provider if isinstance(provider, str) else provider[0]


def model_for_providers(bundle: Bundle, precision: str, active: list[str]) -> str:
    """The graph that matches the providers that *loaded* (not those requested): the FP16
    file only where the CUDA EP executes it, the INT8 file only on the CPU EP, else
    ``model.onnx`` (the TensorRT EP makes FP16 itself from the FP32 graph)."""
    first = active[0] if active else "CPUExecutionProvider"
    if first == "CUDAExecutionProvider" and precision == "fp16" \
            and bundle.fp16_model_path is not None:
        return str(bundle.fp16_model_path)
    if first == "CPUExecutionProvider" and precision == "int8" \
            and bundle.int8_model_path is not None:
        return str(bundle.int8_model_path)
    return str(bundle.model_path)


def ran_precision(model: str, active: list[str], precision: str) -> str:
    """What a session computes in: the TensorRT EP in FP16 when it was built with the FP16
    flag, the FP16 / INT8 graphs in their precision, everything else FP32."""
    if active and active[0] == "TensorrtExecutionProvider":
        return "fp16" if precision == "fp16" else "fp32"
    if model.endswith("fp16.onnx"):
        return "fp16"
    return "int8" if model.endswith("int8.onnx") else "fp32"


def _session(ort: Any, model: str, providers: list[Any], options: dict[str, Any]) -> Any:
    try:
        return ort.InferenceSession(model, sess_options=session_options(
            options.get("num_threads")), providers=providers)
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph...)
        raise BackendError(f"ONNX Runtime cannot load {model}: {exc}; the file may be "
                           f"corrupt - re-run `mbmt-train export`") from exc


def open(bundle: Bundle, precision: str = "fp32", device: str = "cpu",  # noqa: A001
         **options: Any) -> BundlePredictor:
    """An ONNX Runtime predictor; options: ``num_threads`` (CPU intra-op threads),
    ``engine_cache_dir``, ``ort_tensorrt`` (False disables the TensorRT EP), ``batch`` /
    ``dynamic_batch`` (the TensorRT EP's profile), ``workspace_mb``. ``.device``,
    ``.precision``, ``.providers`` and ``.model_file`` report what the session actually runs
    (read back with ``session.get_providers()`` after creation); ``.notes`` say why it
    differs from the request (the registry applies the fallback policy)."""
    ort = _ort()
    notes: list[str] = []
    if device == "cuda" and availability("cuda") is not None:
        notes.append(f"CUDA unavailable: {availability('cuda')}")
        device = "cpu"
    providers, model = _providers(bundle, precision, device, options)
    session = _session(ort, model, providers, options)
    active = list(session.get_providers())
    requested = [_provider_name(p) for p in providers]
    if active[:1] != requested[:1]:
        notes.append(f"requested providers {requested}, loaded {active}")
    wanted = model_for_providers(bundle, precision, active)
    if wanted != model:  # e.g. the TensorRT EP was skipped: the FP16 graph on the CUDA EP
        notes.append(f"{Path(model).name} was picked for {requested[0]} but {active[0]} "
                     f"loaded; running {Path(wanted).name}")
        model = wanted
        session = _session(ort, model, [p for p in providers if _provider_name(p) in active],
                           options)
        active = list(session.get_providers())
    _check_io(session, bundle, model)
    ran_on = "cuda" if active[0] in _GPU_PROVIDERS else "cpu"
    used_precision = ran_precision(model, active, precision)
    _log.info("onnxruntime: %s with providers %s (%s on %s)", Path(model).name, active,
              used_precision, ran_on)
    return BundlePredictor(bundle, _OrtRunner(session, bundle), backend="onnxruntime",
                           precision=used_precision, device=ran_on, provider=active[0],
                           model_file=Path(model).name, providers=tuple(active),
                           notes=tuple(notes))


def _check_io(session: Any, bundle: Bundle, model: str) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or outputs != list(bundle.output_names):
        raise BackendError(f"{model} has inputs {inputs} and outputs {outputs}, but meta.json "
                           f"promises [{INPUT_NAME!r}] and {list(bundle.output_names)}; the "
                           f"bundle is inconsistent - re-run `mbmt-train export`")
