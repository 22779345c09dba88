"""GPU facts through NVIDIA's ``cuda-python`` runtime bindings (no torch, no pycuda).

Used to decide whether GPU backends can run and to key the TensorRT engine cache by GPU
name and compute capability. Every function degrades to "no GPU" when ``cuda-python`` or a
driver is missing, so callers can probe freely.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any

from mbmt_ros.runtime.errors import BackendError, InferenceOutOfMemoryError

__all__ = ["GpuInfo", "cudart", "check", "device_count", "gpu_info", "DEFAULT_WORKSPACE_MB",
           "workspace_bytes", "CUDA_PYTHON_MIN", "cuda_python_problem"]

#: The first cuda-python with ``cuda.bindings`` (older ones only have ``cuda.cudart``).
CUDA_PYTHON_MIN = "12.6.1"
_CUDA_PYTHON_PIP = f'pip install "cuda-python>={CUDA_PYTHON_MIN}"'

#: TensorRT builder workspace limit (MiB) unless asked otherwise: fits an 8 GB Jetson Orin
#: (shared CPU/GPU memory, with ROS and the camera driver running beside the node).
DEFAULT_WORKSPACE_MB = 1024


def workspace_bytes(options: dict[str, Any]) -> int | None:
    """The workspace limit in bytes from backend options: ``workspace_bytes``, else
    ``workspace_mb`` (default :data:`DEFAULT_WORKSPACE_MB`); 0 means TensorRT's own default
    (no limit: all free GPU memory), returned as ``None``."""
    if options.get("workspace_bytes") is not None:
        value = int(options["workspace_bytes"])
    else:
        megabytes = options.get("workspace_mb")
        value = int(float(DEFAULT_WORKSPACE_MB if megabytes is None else megabytes) * (1 << 20))
    if value < 0:
        raise BackendError(f"workspace limit must be >= 0 MiB, got {value >> 20} MiB")
    return value or None


@dataclass(frozen=True)
class GpuInfo:
    """What identifies a GPU for engine compatibility."""

    name: str
    compute_capability: str  # "8.7"
    total_memory: int  # bytes
    multiprocessor_count: int = 0  # SMs: tells Orin Nano / NX / AGX apart (all named "Orin")


def cuda_python_problem() -> str | None:
    """Why ``cuda.bindings`` is missing (``None``: it is there): cuda-python not installed,
    or one older than :data:`CUDA_PYTHON_MIN`, which has ``cuda`` but not ``cuda.bindings``."""
    if importlib.util.find_spec("cuda") is None:
        return f"cuda-python is not installed ({_CUDA_PYTHON_PIP})"
    if importlib.util.find_spec("cuda.bindings") is None:
        try:
            version = importlib.metadata.version("cuda-python")
        except importlib.metadata.PackageNotFoundError:
            version = "(unknown version)"
        return (f"cuda-python {version} is too old: the backend needs cuda.bindings, which "
                f"cuda-python has from {CUDA_PYTHON_MIN} on (pip install --upgrade "
                f'"cuda-python>={CUDA_PYTHON_MIN}")')
    return None


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module; ImportError (saying why) without cuda-python
    :data:`CUDA_PYTHON_MIN` or newer."""
    try:
        from cuda.bindings import runtime  # optional dependency
    except ImportError as exc:
        raise ImportError(cuda_python_problem() or str(exc)) from exc
    return runtime


def check(result: Any, what: str) -> Any:
    """Unpack a ``cuda.bindings`` ``(err, *values)`` tuple, raising on a CUDA error."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        detail = f"{err.name}: {text.decode() if isinstance(text, bytes) else text}"
        if err == rt.cudaError_t.cudaErrorMemoryAllocation:
            raise InferenceOutOfMemoryError(
                f"the GPU is out of memory ({what}: {detail}); free GPU memory (stop other GPU "
                f"processes), lower the batch, or limit the TensorRT workspace")
        raise BackendError(f"CUDA error in {what}: {detail}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    """Number of usable CUDA devices (0 without cuda-python, a driver or a GPU)."""
    try:
        rt = cudart()
        err, count = rt.cudaGetDeviceCount()
    except Exception:  # any failure means "no GPU here"
        return 0
    return int(count) if err == rt.cudaError_t.cudaSuccess else 0


def gpu_info(device: int = 0) -> GpuInfo:
    """Name, compute capability and memory of CUDA device ``device``."""
    rt = cudart()
    prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return GpuInfo(name=str(name).strip(), compute_capability=f"{prop.major}.{prop.minor}",
                   total_memory=int(prop.totalGlobalMem),
                   multiprocessor_count=int(prop.multiProcessorCount))
