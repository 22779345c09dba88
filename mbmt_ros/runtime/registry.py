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
from mbmt_ros.runtime.delivery import check_delivery
from mbmt_ros.runtime.errors import (
    BackendError,
    BackendNotInstalledError,
    EngineBuildError,
    FallbackError,
    UnknownBackendError,
    VerificationError,
)
from mbmt_ros.runtime.predictor import Predictor

__all__ = ["BackendFactory", "BACKENDS", "PRECISIONS", "DEVICES", "open_predictor",
           "backend_availability", "AUTO_FALLBACK_ORDER"]

_log = logging.getLogger(__name__)

#: ``bf16``: OpenVINO on CPUs with AVX-512 BF16 / AMX; ``auto``: the backend's fastest that the
#: bundle and the hardware allow (OpenVINO: int8 graph on VNNI/AMX CPUs > bf16 > fp32; GPUs:
#: fp16). An explicit one a backend does not run is a FallbackError unless allow_fallback.
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
                   precision: str = "auto", device: str = "auto", *,
                   allow_fallback: bool = False, verify: bool = False,
                   **options: Any) -> Predictor:
    """Open a :class:`Predictor` for a model bundle.

    ``backend``: ``auto`` or a key of :data:`BACKENDS`. ``precision``: ``fp16``, ``fp32``,
    ``int8`` (TensorRT, or ONNX Runtime / OpenVINO with an INT8 bundle), ``bf16`` (OpenVINO)
    or ``auto`` (the best this bundle and device support: see docs/deployment.md).
    ``device``: ``cuda``, ``cpu``, ``gpu`` (an Intel GPU: OpenVINO only, refused by the
    others) or ``auto``. ``predictor.precision`` / ``.device`` / ``.providers`` /
    ``.model_file`` are what really runs. An explicit precision or device that is not what
    runs raises :class:`FallbackError` (the fallback policy, :mod:`.delivery`) unless
    ``allow_fallback`` - then it is a WARN line and ``predictor.fallback``.
    ``verify=True`` checks the path against the bundle's reference set
    (:mod:`mbmt_ros.runtime.verify`; result in ``predictor.verification``): a failing path
    raises :class:`VerificationError` naming the figure - with ``precision="auto"`` the next
    lower precision is tried first (WARN) - and a bundle without a reference set is a WARN.
    ``options`` go to the backend (``batch``, ``dynamic_batch``, ``compile``, ``cuda_graphs``,
    ``engine_cache_dir``, ``num_threads``, ``workspace_mb`` ...; see docs/deployment.md).
    ``warmup=True`` runs one blank prediction before returning.
    A bundle given as a path is loaded with its files' SHA-256 checksums verified, so a
    corrupt or truncated ``model.onnx`` / weights / reference file is refused with a message
    naming it (hashing costs ~0.1 s per 50 MB, once at start-up).
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {list(DEVICES)}")
    bundle = (bundle_dir if isinstance(bundle_dir, Bundle)
              else Bundle.load(bundle_dir, verify_checksums=True))
    warmup = bool(options.pop("warmup", False))
    if backend != "auto" and backend not in BACKENDS:
        raise UnknownBackendError(f"unknown backend {backend!r}; choose 'auto' or one of "
                                  f"{sorted(BACKENDS)}")
    predictor = _open_any(backend, bundle, precision, device, allow_fallback, options)
    if verify:
        predictor = _verified(predictor, backend, bundle, precision, device, allow_fallback,
                              options)
    if warmup:
        _warm_up(predictor)
    return predictor


def _open_any(backend: str, bundle: Bundle, precision: str, device: str, allow_fallback: bool,
              options: dict[str, Any]) -> Predictor:
    if backend == "auto":
        return _open_auto(bundle, precision, device, allow_fallback, options)
    return _open(backend, bundle, precision, device, allow_fallback, options)


#: ``precision="auto"``: when a precision fails the reference check, the next one tried.
AUTO_FALLBACK_ORDER = ("int8", "bf16", "fp16", "fp32")


def _verified(predictor: Predictor, backend: str, bundle: Bundle, precision: str, device: str,
              allow_fallback: bool, options: dict[str, Any]) -> Predictor:
    """Run the reference check; with ``precision="auto"`` walk down :data:`AUTO_FALLBACK_ORDER`
    until a precision passes (each failure a WARN)."""
    from mbmt_ros.runtime.verify import verify_predictor

    tried: list[str] = []
    while True:
        try:
            result = verify_predictor(predictor, bundle)
        except BaseException:
            predictor.close()
            raise
        predictor.verification = result
        if result.status == "skipped":
            _log.warning("verify: %s", result.summary)
            return predictor
        where = f"{predictor.backend} {predictor.precision} on {predictor.device}"
        if result.passed:
            _log.info("verify %s: %s", where, result.summary)
            return predictor
        predictor.close()
        tried.append(predictor.precision)
        lower = [p for p in AUTO_FALLBACK_ORDER[AUTO_FALLBACK_ORDER.index(tried[-1]) + 1:]
                 if p not in tried] if tried[-1] in AUTO_FALLBACK_ORDER else []
        if precision != "auto" or not lower:
            raise VerificationError(f"verify {where}: {result.summary}. This path does not "
                                    f"compute what the bundle was exported to compute; "
                                    f"choose another precision or backend, or re-export")
        _log.warning("verify %s: %s; precision auto tries %s next", where, result.summary,
                     lower[0])
        # the same backend, one precision lower; that precision may not exist here (bf16
        # without AVX-512 BF16): whatever runs instead is checked in turn, so the fallback
        # inside auto is accepted
        backend = predictor.backend
        predictor = _open_any(backend, bundle, lower[0], device, True, dict(options))
        while predictor.precision in tried:  # ran a precision that already failed
            predictor.close()
            lower = [p for p in lower if p != lower[0]]
            if not lower:
                raise VerificationError(f"verify {where}: {result.summary}; no lower "
                                        f"precision passes either")
            predictor = _open_any(backend, bundle, lower[0], device, True, dict(options))


def _warm_up(predictor: Predictor) -> None:
    """One prediction now, so engine builds / autotuning do not delay the first frame."""
    try:
        seconds = predictor.warmup()
    except BaseException:
        predictor.close()
        raise
    _log.info("%s warm-up on %s (%s, %s): %.2f s", predictor.backend, predictor.device,
              predictor.precision, getattr(predictor, "provider", predictor.backend), seconds)


def _open(name: str, bundle: Bundle, precision: str, device: str, allow_fallback: bool,
          options: dict[str, Any]) -> Predictor:
    """Open backend ``name`` and apply the fallback policy (:func:`check_delivery`) to what
    it reports; OpenVINO takes every precision and device as given, the others get them
    through :func:`_nvidia_request`."""
    asked_precision, asked_device = precision, device
    if name != "openvino":
        precision, device = _nvidia_request(name, precision, device)
    predictor = BACKENDS[name].open(bundle, precision, device, **options)
    try:
        fallback = check_delivery(name, (asked_precision, asked_device),
                                  (predictor.precision, predictor.device),
                                  allow_fallback=allow_fallback,
                                  reasons=getattr(predictor, "notes", ()))
    except BaseException:
        predictor.close()
        raise
    if hasattr(predictor, "fallback"):
        predictor.fallback = fallback
    return predictor


def _nvidia_request(backend: str, precision: str, device: str) -> tuple[str, str]:
    """Map the values TensorRT / ONNX Runtime / torch lack onto what they can run: device
    ``auto`` is ``cuda`` (each runs on the CPU when there is none, reported), precision
    ``auto`` is ``fp16`` (fp32 where fp16 does not run) and ``bf16`` is ``fp32`` (so an
    explicit bf16 is a fallback under the policy). ``gpu`` (an Intel GPU) is refused rather
    than silently run elsewhere."""
    if device == "gpu":
        raise BackendError(f"device 'gpu' means an Intel GPU, which only the openvino backend "
                           f"drives; for backend {backend!r} use device cuda or cpu (or auto)")
    precision = {"auto": "fp16", "bf16": "fp32"}.get(precision, precision)
    return precision, "cuda" if device == "auto" else device


def _open_auto(bundle: Bundle, precision: str, device: str, allow_fallback: bool,
               options: dict[str, Any]) -> Predictor:
    """The first backend of :data:`_AUTO_ORDER` usable on the device that opens; one that
    cannot build or deliver the request here (TensorRT INT8 without calibration data, a
    precision it lacks) is passed over with the reason, and the next one is tried."""
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
            _log.info("backend auto: trying %s on %s (%s)", name, dev,
                      f"passed over: {why}" if passed else why)
            try:
                predictor = _open(name, bundle, precision, device if device != "auto" else dev,
                                  allow_fallback, options)
            except (FallbackError, EngineBuildError, BackendNotInstalledError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                _log.warning("backend auto: passing over %s on %s: %s", name, dev, exc)
            else:
                _log.info("backend auto: using %s on %s", name, predictor.device)
                return predictor
        passed.append(f"{name}/{dev}: {reason}")
    raise BackendError("no inference backend is usable here: " + "; ".join(passed)
                       + ". Install onnxruntime (`pip install onnxruntime`) at least.")
