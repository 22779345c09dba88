"""Backend registry and :func:`open_predictor` (rosbags-style: a Protocol + a name mapping).

Backends are imported lazily by name, so choosing ``onnxruntime`` never imports torch or
TensorRT. ``auto`` tries TensorRT > ONNX Runtime (CUDA) > ONNX Runtime (CPU) > torch and
logs which one it took and why the others were passed over.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

from mbmt_ros.runtime.bundle import Bundle
from mbmt_ros.runtime.errors import BackendError, UnknownBackendError
from mbmt_ros.runtime.predictor import Predictor

__all__ = ["BackendFactory", "BACKENDS", "PRECISIONS", "DEVICES", "open_predictor",
           "backend_availability"]

_log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cuda", "cpu")


class BackendFactory(Protocol):
    """Opens one backend on a validated bundle."""

    name: str

    def availability(self, device: str) -> str | None:
        """``None`` when the backend can run on ``device`` here, else the reason it cannot."""
        ...

    def open(self, bundle: Bundle, precision: str, device: str, **options: Any) -> Predictor:
        ...


@dataclass(frozen=True)
class _LazyBackend:
    """A backend living in ``module`` (functions ``availability`` and ``open``), imported on use."""

    name: str
    module: str

    def _load(self) -> Any:
        return importlib.import_module(self.module)

    def availability(self, device: str) -> str | None:
        return self._load().availability(device)

    def open(self, bundle: Bundle, precision: str, device: str, **options: Any) -> Predictor:
        return self._load().open(bundle, precision, device, **options)


#: Backend name -> factory. ``auto`` is resolved by :func:`open_predictor`.
BACKENDS: dict[str, BackendFactory] = {
    "tensorrt": _LazyBackend("tensorrt", "mbmt_ros.runtime.backends.tensorrt_backend"),
    "onnxruntime": _LazyBackend("onnxruntime", "mbmt_ros.runtime.backends.onnxruntime_backend"),
    "torch": _LazyBackend("torch", "mbmt_ros.runtime.backends.torch_backend"),
}

# auto's preference: (backend, device it is tried on)
_AUTO_ORDER = (("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("onnxruntime", "cpu"),
               ("torch", "cuda"), ("torch", "cpu"))


def backend_availability(device: str = "cuda") -> dict[str, str | None]:
    """Each registered backend -> ``None`` if usable on ``device`` here, else why not."""
    return {name: factory.availability(device) for name, factory in BACKENDS.items()}


def open_predictor(bundle_dir: str | os.PathLike[str] | Bundle, backend: str = "auto",
                   precision: str = "fp16", device: str = "cuda", **options: Any) -> Predictor:
    """Open a :class:`Predictor` for a model bundle.

    ``backend``: ``auto`` or a key of :data:`BACKENDS`. ``precision``: ``fp16``, ``fp32``
    or ``int8`` (TensorRT 10.x only) - a backend that cannot honour it (e.g. any CPU backend
    for fp16) runs fp32 and says so in ``predictor.precision``. ``device``: ``cuda`` or
    ``cpu``. ``options`` go to the backend (``batch``, ``dynamic_batch``, ``compile``,
    ``cuda_graphs``, ``engine_cache_dir``, ``num_threads`` ...; see docs/deployment.md).
    A bundle given as a path is loaded with its files' SHA-256 checksums verified, so a
    corrupt or truncated ``model.onnx`` / weights file is refused with a message naming it
    (hashing costs ~0.1 s per 50 MB, once at start-up).
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {list(DEVICES)}")
    bundle = (bundle_dir if isinstance(bundle_dir, Bundle)
              else Bundle.load(bundle_dir, verify_checksums=True))
    if backend == "auto":
        return _open_auto(bundle, precision, device, options)
    if backend not in BACKENDS:
        raise UnknownBackendError(f"unknown backend {backend!r}; choose 'auto' or one of "
                                  f"{sorted(BACKENDS)}")
    return BACKENDS[backend].open(bundle, precision, device, **options)


def _open_auto(bundle: Bundle, precision: str, device: str, options: dict[str, Any]) -> Predictor:
    passed: list[str] = []
    for name, dev in _AUTO_ORDER:
        if device == "cpu" and dev == "cuda":
            continue
        reason = BACKENDS[name].availability(dev)
        if reason is None:
            why = "; ".join(passed) if passed else "it is the first choice"
            _log.info("backend auto: using %s on %s (%s)", name, dev,
                      f"passed over: {why}" if passed else why)
            return BACKENDS[name].open(bundle, precision, dev, **options)
        passed.append(f"{name}/{dev}: {reason}")
    raise BackendError("no inference backend is usable here: " + "; ".join(passed)
                       + ". Install onnxruntime (`pip install onnxruntime`) at least.")
