"""Inference runtime: model bundles and backends (TensorRT, ONNX Runtime, PyTorch).

``open_predictor(bundle_dir, backend="auto", precision="auto", device="auto")`` returns a
:class:`Predictor` that reports what really runs (an explicit precision/device not delivered
is a :class:`FallbackError` unless ``allow_fallback``; ``verify=True`` checks it against the
bundle's reference set). Nothing here imports torch unless the torch backend is chosen.
"""
from __future__ import annotations

from mbmt_ros.runtime.bundle import (
    ENGINE_DIR,
    META_FILE,
    MODEL_FILE,
    MODEL_FP16_FILE,
    REFERENCE_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    Bundle,
    output_names,
)
from mbmt_ros.runtime.errors import (
    BackendError,
    BackendNotInstalledError,
    BundleError,
    EngineBuildError,
    EngineOutOfMemoryError,
    FallbackError,
    InferenceOutOfMemoryError,
    InputError,
    RuntimeFailure,
    SchemaVersionError,
    TensorRTReadinessError,
    UnknownBackendError,
    VerificationError,
)
from mbmt_ros.runtime.predictor import BundlePredictor, Predictor, Runner
from mbmt_ros.runtime.registry import (
    BACKENDS,
    DEVICES,
    PRECISIONS,
    BackendFactory,
    backend_availability,
    open_predictor,
)

__all__ = [
    "ENGINE_DIR", "META_FILE", "MODEL_FILE", "MODEL_FP16_FILE", "SCHEMA_VERSION", "WEIGHTS_FILE",
    "Bundle", "output_names", "BackendError", "BackendNotInstalledError", "BundleError",
    "EngineBuildError", "EngineOutOfMemoryError", "InferenceOutOfMemoryError",
    "TensorRTReadinessError", "InputError", "RuntimeFailure",
    "SchemaVersionError", "UnknownBackendError", "BundlePredictor", "Predictor", "Runner",
    "BACKENDS", "DEVICES", "PRECISIONS", "BackendFactory", "backend_availability",
    "open_predictor", "REFERENCE_FILE", "FallbackError", "VerificationError",
]
