"""Backend registry and :func:`open_predictor` (rosbags-style: a Protocol + a name mapping).

Backends are imported lazily by name, so choosing ``onnxruntime`` never imports torch or
TensorRT. ``auto`` tries TensorRT > ONNX Runtime (CUDA) > OpenVINO (CPU) > ONNX Runtime
(CPU) > torch and logs which one it took and why the others were passed over; a backend
whose library (or module) is missing is passed over with the reason, never a crash.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

from mbmt_ros.runtime.bundle import Bundle
from mbmt_ros.runtime.errors import BackendError, BackendNotInstalledError, UnknownBackendError
from mbmt_ros.runtime.predictor import Predictor

__all__ = ["BackendFactory", "BACKENDS", "PRECISIONS", "DEVICES", "open_predictor",
           "backend_availability"]

_log = logging.getLogger(__name__)

#: ``bf16``: OpenVINO on CPUs with AVX-512 BF16 / AMX; ``auto``: the backend's fastest that the
#: bundle and the hardware allow (OpenVINO: int8 graph > bf16 > fp32). Others run fp32 instead.
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "auto")
#: ``gpu``: an Intel GPU (OpenVINO); ``auto``: the backend's best device here.
DEVICES = ("cuda", "cpu", "gpu", "auto")


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
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name and self.module.startswith(exc.name):  # our module itself is missing
                raise BackendNotInstalledError(
                    f"backend {self.name!r} is not part of this mbmt_ros installation "
                    f"({self.module} is missing); update mbmt_ros or choose another backend"
                ) from exc
            raise

    def availability(self, device: str) -> str | None:
        """``None`` when usable on ``device``; a missing backend module is a reason, not a crash."""
        try:
            return self._load().availability(device)
        except BackendNotInstalledError as exc:
            return str(exc)

    def open(self, bundle: Bundle, precision: str, device: str, **options: Any) -> Predictor:
        return self._load().open(bundle, precision, device, **options)


#: Backend name -> factory. ``auto`` is resolved by :func:`open_predictor`.
BACKENDS: dict[str, BackendFactory] = {
    "tensorrt": _LazyBackend("tensorrt", "mbmt_ros.runtime.backends.tensorrt_backend"),
    "onnxruntime": _LazyBackend("onnxruntime", "mbmt_ros.runtime.backends.onnxruntime_backend"),
    "torch": _LazyBackend("torch", "mbmt_ros.runtime.backends.torch_backend"),
    "openvino": _LazyBackend("openvino", "mbmt_ros.runtime.backends.openvino_backend"),
}

# auto's preference: (backend, device it is tried on). OpenVINO (when importable) is the
# first CPU choice: faster than ONNX Runtime's CPU provider on x86 robot computers.
_AUTO_ORDER = (("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("openvino", "cpu"),
               ("onnxruntime", "cpu"), ("torch", "cuda"), ("torch", "cpu"))


def backend_availability(device: str = "cuda") -> dict[str, str | None]:
    """Each registered backend -> ``None`` if usable on ``device`` here, else why not."""
    return {name: factory.availability(device) for name, factory in BACKENDS.items()}


def open_predictor(bundle_dir: str | os.PathLike[str] | Bundle, backend: str = "auto",
                   precision: str = "fp16", device: str = "cuda", **options: Any) -> Predictor:
    """Open a :class:`Predictor` for a model bundle.

    ``backend``: ``auto`` or a key of :data:`BACKENDS`. ``precision``: ``fp16``, ``fp32``,
    ``int8`` (TensorRT, or OpenVINO with an INT8 bundle), ``bf16`` (OpenVINO) or ``auto`` - a
    backend that cannot honour it (e.g. any CPU backend for fp16) runs fp32 and says so in
    ``predictor.precision``. ``device``: ``cuda``, ``cpu``, ``gpu`` (an Intel GPU: OpenVINO
    only, refused by the others) or ``auto``; ``predictor.device`` is where it really runs.
    ``options`` go to the backend (``batch``, ``dynamic_batch``, ``compile``, ``cuda_graphs``,
    ``engine_cache_dir``, ``num_threads``, ``workspace_mb`` ...; see docs/deployment.md). ``warmup=True`` runs one blank prediction before returning (or call
    ``predictor.warmup()`` yourself, e.g. in a node's configure).
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
    warmup = bool(options.pop("warmup", False))
    if backend == "auto":
        predictor = _open_auto(bundle, precision, device, options)
    elif backend not in BACKENDS:
        raise UnknownBackendError(f"unknown backend {backend!r}; choose 'auto' or one of "
                                  f"{sorted(BACKENDS)}")
    else:
        predictor = _open(backend, bundle, precision, device, options)
    if warmup:
        _warm_up(predictor)
    return predictor


def _warm_up(predictor: Predictor) -> None:
    """One prediction now, so engine builds / autotuning do not delay the first frame."""
    try:
        seconds = predictor.warmup()
    except BaseException:
        predictor.close()
        raise
    _log.info("%s warm-up on %s (%s, %s): %.2f s", predictor.backend, predictor.device,
              predictor.precision, getattr(predictor, "provider", predictor.backend), seconds)


def _open(name: str, bundle: Bundle, precision: str, device: str,
          options: dict[str, Any]) -> Predictor:
    """Open backend ``name``; OpenVINO takes every precision and device as given, the others
    get them through :func:`_nvidia_request`."""
    if name != "openvino":
        precision, device = _nvidia_request(name, precision, device)
    return BACKENDS[name].open(bundle, precision, device, **options)


def _nvidia_request(backend: str, precision: str, device: str) -> tuple[str, str]:
    """Map the OpenVINO-only values onto what TensorRT / ONNX Runtime / torch can honour:
    device ``auto`` is ``cuda`` (each falls back to CPU and reports it), precision ``auto`` is
    ``fp16`` and ``bf16`` is ``fp32`` (CPU runs report fp32). ``gpu`` (an Intel GPU) is refused
    rather than silently run elsewhere."""
    if device == "gpu":
        raise BackendError(f"device 'gpu' means an Intel GPU, which only the openvino backend "
                           f"drives; for backend {backend!r} use device cuda or cpu (or auto)")
    wanted = (precision, device)
    precision = {"auto": "fp16", "bf16": "fp32"}.get(precision, precision)
    device = "cuda" if device == "auto" else device
    if (precision, device) != wanted:
        _log.info("%s: %s on %s requested, asking for %s on %s", backend, *wanted, precision,
                  device)
    return precision, device


def _open_auto(bundle: Bundle, precision: str, device: str, options: dict[str, Any]) -> Predictor:
    passed: list[str] = []
    for name, dev in _AUTO_ORDER:
        if device == "cpu" and dev == "cuda":
            continue
        if device == "gpu" and name != "openvino":
            continue
        if name == "openvino" and device == "gpu":
            dev = "gpu"
        factory = BACKENDS.get(name)
        reason = factory.availability(dev) if factory is not None else "not registered"
        if reason is None:
            why = "; ".join(passed) if passed else "it is the first choice"
            _log.info("backend auto: using %s on %s (%s)", name, dev,
                      f"passed over: {why}" if passed else why)
            return _open(name, bundle, precision, dev, options)
        passed.append(f"{name}/{dev}: {reason}")
    raise BackendError("no inference backend is usable here: " + "; ".join(passed)
                       + ". Install onnxruntime (`pip install onnxruntime`) at least.")
