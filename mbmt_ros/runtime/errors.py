"""Errors of the inference runtime; each message names the file or value and what to do."""
from __future__ import annotations

from mbmt_ros.errors import MbmtError

__all__ = [
    "RuntimeFailure", "BundleError", "SchemaVersionError", "InputError", "BackendError",
    "UnknownBackendError", "BackendNotInstalledError", "EngineBuildError", "EngineOutOfMemoryError",
    "InferenceOutOfMemoryError", "TensorRTReadinessError", "FallbackError", "VerificationError",
]


class RuntimeFailure(MbmtError, RuntimeError):
    """Base class of every runtime (inference-side) failure."""


class BundleError(RuntimeFailure):
    """A model bundle is missing, incomplete or corrupt."""


class SchemaVersionError(BundleError):
    """A bundle's ``meta.json`` has a schema version this runtime does not read."""


class InputError(RuntimeFailure, ValueError):
    """An image handed to a predictor has the wrong shape, channel count or dtype."""


class BackendError(RuntimeFailure):
    """A backend cannot be opened or failed while running."""


class UnknownBackendError(BackendError, ValueError):
    """A backend name that is not in :data:`mbmt_ros.runtime.BACKENDS`."""


class BackendNotInstalledError(BackendError, ImportError):
    """A backend's library is not installed; the message names the package to install."""


class EngineBuildError(BackendError):
    """TensorRT could not build an engine from ``model.onnx``."""


class EngineOutOfMemoryError(EngineBuildError, MemoryError):
    """The GPU ran out of memory while TensorRT built an engine (nothing was written)."""


class InferenceOutOfMemoryError(BackendError, MemoryError):
    """The GPU ran out of memory while loading or running an engine: a clear error, never a
    silent rebuild (rebuilding needs even more memory)."""


class TensorRTReadinessError(RuntimeFailure, ValueError):
    """An ONNX graph breaks a rule of the static TensorRT-readiness check
    (:mod:`mbmt_ros.runtime.trt_readiness`); the message lists every violation."""


class FallbackError(BackendError):
    """A backend would run another precision or device than the one explicitly requested
    (and ``allow_fallback`` was not given); the message names both."""


class VerificationError(BackendError):
    """The path chosen (backend, precision, device) fails the bundle's reference check
    (:mod:`mbmt_ros.runtime.verify`); the message names the figure and its limit."""
