"""TensorRT backend: a cached engine run through ``cuda.bindings.runtime`` (no torch, no pycuda).

At open: find or build the engine (:mod:`mbmt_ros.runtime.trt_build`), deserialise it,
allocate one device buffer and one pinned host buffer per I/O tensor for the largest batch,
bind the device buffers with ``set_tensor_address`` and create one CUDA stream. Per frame:
copy into the pinned input, async H2D, ``execute_async_v3``, async D2H, synchronise -
no allocation. The CUDA runtime API uses the device's primary context, so the predictor
can be called from any thread (the node's inference thread); calls are serialised by the
:class:`~mbmt_ros.runtime.predictor.BundlePredictor` lock.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
from typing import Any

import numpy as np

from mbmt_ros.runtime.bundle import INPUT_NAME, Bundle
from mbmt_ros.runtime.cuda_device import (
    check,
    cuda_python_problem,
    cudart,
    device_count,
    gpu_info,
    workspace_bytes,
)
from mbmt_ros.runtime.errors import (
    BackendError,
    BackendNotInstalledError,
    InferenceOutOfMemoryError,
)
from mbmt_ros.runtime.predictor import BundlePredictor
from mbmt_ros.runtime.processing import check_batch, resize_images
from mbmt_ros.runtime.trt_build import (
    BuildSettings,
    import_tensorrt,
    is_out_of_memory,
    load_or_build_engine,
    make_logger,
)

__all__ = ["availability", "open", "TensorRTRunner", "UnusableEngine", "context_error"]

_log = logging.getLogger(__name__)


class UnusableEngine(BackendError):
    """A cached engine that passed the file checks but that TensorRT cannot use (cannot
    deserialise, wrong tensors): rebuilt once. Out-of-memory is *not* this - a rebuild would
    need even more memory - and stays an :class:`InferenceOutOfMemoryError`."""


def availability(device: str) -> str | None:
    if device != "cuda":
        return "TensorRT runs only on a CUDA GPU"
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (JetPack: apt install nvidia-tensorrt; x86: pip " \
               "install tensorrt)"
    if (problem := cuda_python_problem()) is not None:  # missing, or older than 12.6.1
        return problem
    if device_count() == 0:
        return "no CUDA GPU is visible"
    return None


def _pinned_view(pointer: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A NumPy array over pinned host memory at ``pointer`` (owned by the runner)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = (ctypes.c_byte * nbytes).from_address(int(pointer))
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def context_error(errors: list[str]) -> BackendError:
    """The error for ``create_execution_context`` returning None: out of memory only when
    TensorRT's log says so, else what TensorRT logged (never a guessed out-of-memory)."""
    if is_out_of_memory(errors):
        return InferenceOutOfMemoryError(
            "TensorRT could not create an execution context: the GPU is out of memory ("
            + "; ".join(errors[-3:]) + "); free GPU memory, lower the batch, or limit the "
            "workspace")
    return BackendError("TensorRT could not create an execution context: "
                        + ("; ".join(errors[-3:]) or "no error was logged - run with "
                           "--verbose for TensorRT's log") + ". Rebuild the engine "
                        "(`mbmt-engine build --force`) if it was built by another TensorRT")


class TensorRTRunner:
    """Executes one deserialised engine with preallocated buffers and a single stream."""

    def __init__(self, trt: Any, payload: bytes, bundle: Bundle, settings: BuildSettings,
                 logger: Any, device: int = 0) -> None:
        self._rt = rt = cudart()
        self._device = device
        check(rt.cudaSetDevice(device), "cudaSetDevice")
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(payload)
        if self._engine is None:
            if is_out_of_memory(getattr(logger, "errors", [])):
                raise InferenceOutOfMemoryError(
                    "the GPU ran out of memory while loading the TensorRT engine; free GPU "
                    "memory (stop other GPU processes) or lower the batch")
            raise UnusableEngine("TensorRT could not deserialise the cached engine")
        self._context = self._engine.create_execution_context()
        if self._context is None:  # None: out of memory, or another error TensorRT logged
            raise context_error(getattr(logger, "errors", []))
        self.max_batch: int | None = settings.batch
        self._dynamic = settings.dynamic_batch
        self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._outputs = list(bundle.output_names)
        missing = sorted(set(self._outputs + [INPUT_NAME]) - set(self._names))
        if missing:
            raise UnusableEngine(f"the engine lacks the tensors {missing}; rebuild it "
                                 f"(`mbmt-engine build --force`)")
        height, width = bundle.input_size
        self._set_shape((settings.batch, height, width, 3))
        self._device_ptr: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._host_ptr: dict[str, int] = {}
        try:
            for name in self._names:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                nbytes = int(np.prod(shape)) * dtype.itemsize
                self._device_ptr[name] = int(check(rt.cudaMalloc(nbytes), "cudaMalloc"))
                self._host_ptr[name] = int(check(rt.cudaMallocHost(nbytes), "cudaMallocHost"))
                self._host[name] = _pinned_view(self._host_ptr[name], shape, dtype)
                if not self._context.set_tensor_address(name, self._device_ptr[name]):
                    raise BackendError(f"TensorRT refused the device address of tensor "
                                       f"{name!r} (set_tensor_address returned False; see the "
                                       f"TensorRT log)")
            self._stream = check(rt.cudaStreamCreateWithFlags(
                rt.cudaStreamNonBlocking), "cudaStreamCreate")
        except Exception:
            self.close()
            raise
        self._input_shape = (height, width, 3)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        rt = self._rt
        count = len(images)
        check(rt.cudaSetDevice(self._device), "cudaSetDevice")  # the caller's thread
        host_in = self._host[INPUT_NAME]
        host_in[:count] = images
        batch = count if self._dynamic else self.max_batch
        if self._dynamic:
            self._set_shape((count, *self._input_shape))
        self._copy(self._device_ptr[INPUT_NAME], self._host_ptr[INPUT_NAME],
                   host_in[:batch].nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
        if not self._context.execute_async_v3(int(self._stream)):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name in self._outputs:
            self._copy(self._host_ptr[name], self._device_ptr[name], self._host[name][:count].nbytes,
                       rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        check(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: self._host[name][:count].copy() for name in self._outputs}

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        """``set_input_shape`` returns False (it does not raise) for a shape outside the
        engine's optimisation profile; running on would compute garbage."""
        if not self._context.set_input_shape(INPUT_NAME, shape):
            raise BackendError(f"TensorRT refused input shape {shape} for {INPUT_NAME!r} "
                               f"(outside the engine's optimisation profile); rebuild the "
                               f"engine with a matching --batch / --dynamic-batch")

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        check(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), "cudaMemcpyAsync")

    def close(self) -> None:
        rt = self._rt
        if getattr(self, "_stream", None) is not None:
            rt.cudaStreamSynchronize(self._stream)
            rt.cudaStreamDestroy(self._stream)
            self._stream = None
        self._host.clear()
        for ptr in self._device_ptr.values():
            rt.cudaFree(ptr)
        for ptr in self._host_ptr.values():
            rt.cudaFreeHost(ptr)
        self._device_ptr.clear()
        self._host_ptr.clear()
        self._context = None
        self._engine = None


def open(bundle: Bundle, precision: str = "fp16", device: str = "cuda",  # noqa: A001
         **options: Any) -> BundlePredictor:
    """A TensorRT predictor. Options: ``batch`` (default 1), ``dynamic_batch`` (default
    False), ``workspace_mb`` (builder workspace limit, default 1024 MiB - fits an 8 GB
    Jetson; 0 = TensorRT's default) or ``workspace_bytes``, ``strongly_typed``,
    ``engine_cache_dir``, ``rebuild``, ``calibration_images`` (INT8), ``gpu`` (device index,
    default 0). Out of GPU memory raises :class:`InferenceOutOfMemoryError` (no rebuild)."""
    if device != "cuda":
        raise BackendError("the tensorrt backend needs device='cuda'; use onnxruntime or "
                           "torch on the CPU")
    trt = import_tensorrt()
    if (problem := cuda_python_problem()) is not None:
        raise BackendNotInstalledError(problem)
    if device_count() == 0:
        raise BackendError("the tensorrt backend found no CUDA GPU (check the NVIDIA driver "
                           "and CUDA_VISIBLE_DEVICES)")
    gpu_index = int(options.get("gpu", 0))
    calibration = options.get("calibration_images")
    if calibration is not None:
        calibration = resize_images(check_batch(calibration), bundle.input_size)
    settings = BuildSettings(precision=precision, batch=int(options.get("batch", 1)),
                             dynamic_batch=bool(options.get("dynamic_batch", False)),
                             workspace_bytes=workspace_bytes(options),
                             strongly_typed=options.get("strongly_typed"),
                             calibration_images=calibration)
    logger = make_logger(trt)
    gpu = gpu_info(gpu_index)
    payload, path = load_or_build_engine(trt, bundle, settings, gpu, logger,
                                         options.get("engine_cache_dir"),
                                         rebuild=bool(options.get("rebuild", False)))
    try:
        runner = TensorRTRunner(trt, payload, bundle, settings, logger, gpu_index)
    except UnusableEngine as exc:
        _log.warning("TensorRT: rebuilding %s because %s", path, exc)
        payload, path = load_or_build_engine(trt, bundle, settings, gpu, logger,
                                             options.get("engine_cache_dir"), rebuild=True)
        runner = TensorRTRunner(trt, payload, bundle, settings, logger, gpu_index)
    _log.info("tensorrt: %s engine %s on %s (sm %s), TensorRT %s", precision, path.name,
              gpu.name, gpu.compute_capability, trt.__version__)
    return BundlePredictor(bundle, runner, backend="tensorrt", precision=precision,
                           device="cuda", provider=f"TensorRT {trt.__version__} {path.name}",
                           model_file=path.name,
                           providers=(f"TensorRT {trt.__version__} {gpu.name}",))
