"""The :class:`Predictor` interface and the one implementation every backend shares.

A backend only supplies a :class:`Runner`: something that runs the bundle's graph on a
uint8 NHWC batch *at the bundle's input size* and returns the raw named outputs. The
:class:`BundlePredictor` wraps it with input checks, resizing to the bundle size and back,
batch splitting (for fixed-batch engines) and the output contract of ``docs/architecture.md``.
"""
from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

import numpy as np

from mbmt_ros.runtime.bundle import Bundle
from mbmt_ros.runtime.errors import BackendError
from mbmt_ros.runtime.processing import check_batch, check_image, postprocess, resize_images

__all__ = ["Predictor", "Runner", "BundlePredictor", "runtime_report"]


@runtime_checkable
class Predictor(Protocol):
    """Runs a model bundle on RGB images; outputs are at the input image's resolution."""

    backend: str
    precision: str
    device: str
    tasks: tuple[str, ...]
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """(H, W, 3) uint8 RGB -> segmentation (H, W) int32, segmentation_confidence and
        depth (H, W) float32, normals (H, W, 3) float32 - those of the bundle's tasks."""
        ...

    def predict_batch(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        """(N, H, W, 3) uint8 RGB -> one :meth:`predict`-style dict per image."""
        ...

    def close(self) -> None:
        """Free the backend's resources (GPU buffers, sessions); idempotent."""
        ...

    def warmup(self) -> float:
        """Run one prediction on a blank frame at the bundle size (engine build, cuDNN
        algorithm search, lazy allocation happen now, not on the first camera frame);
        returns its seconds. The node calls it during configure."""
        ...


class Runner(Protocol):
    """A backend's graph executor (the only part that differs between backends)."""

    #: Largest batch one call accepts (``None``: any).
    max_batch: int | None

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, h, w, 3) at the bundle size -> raw outputs by graph output name."""
        ...

    def close(self) -> None:
        ...


class BundlePredictor:
    """:class:`Predictor` over any :class:`Runner`; calls are serialised by a lock so one
    predictor can be shared between threads (the node's inference thread and tools)."""

    def __init__(self, bundle: Bundle, runner: Runner, backend: str, precision: str,
                 device: str, provider: str | None = None, *, model_file: str = "",
                 providers: tuple[str, ...] = (), notes: tuple[str, ...] = ()) -> None:
        self.bundle = bundle
        #: What actually runs (never merely what was requested): backend name, ``cuda`` /
        #: ``cpu`` / ..., the precision computed in, and a free-text description of the
        #: execution provider / engine (e.g. ``CUDAExecutionProvider``) for logs/diagnostics.
        self.backend = backend
        self.precision = precision
        self.device = device
        self.provider = provider or backend
        #: The file really loaded (``model_fp16.onnx``, an engine, ``weights.safetensors``).
        self.model_file = model_file
        #: Execution providers / plugins that loaded (ONNX Runtime: ``session.get_providers()``).
        self.providers = tuple(providers) or (self.provider,)
        #: Why the backend ran something other than asked (the fallback policy's reasons).
        self.notes = tuple(notes)
        #: Set by :func:`mbmt_ros.runtime.open_predictor`: the accepted fallback ("requested
        #: X, ran Y"; ``None``: none) and the reference check's result (``None``: not run).
        self.fallback: str | None = None
        self.verification: object | None = None
        self.tasks = bundle.tasks
        self.class_names = bundle.class_names
        self.palette = bundle.palette
        self._runner: Runner | None = runner
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"BundlePredictor(bundle={str(self.bundle.path)!r}, backend={self.backend!r}, "
                f"precision={self.precision!r}, device={self.device!r}, tasks={self.tasks})")

    def report(self) -> dict[str, str]:
        """What really runs, as ``/diagnostics`` key-values: backend, precision, device,
        provider list, model file, the accepted fallback and the reference check."""
        verification = self.verification
        return {"backend": self.backend, "precision": self.precision, "device": self.device,
                "providers": ",".join(self.providers), "model_file": self.model_file,
                "fallback": self.fallback or "none",
                "verify": getattr(verification, "summary", "not run") if verification
                else "not run"}

    def __enter__(self) -> BundlePredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return self.predict_batch(check_image(image)[None])[0]

    def predict_batch(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        images = check_batch(images)
        size = images.shape[1:3]
        resized = resize_images(images, self.bundle.input_size)
        with self._lock:
            if self._runner is None:
                raise BackendError(f"{self!r} is closed; open a new predictor")
            step = self._runner.max_batch or len(resized)
            results: list[dict[str, np.ndarray]] = []
            for start in range(0, len(resized), step):
                raw = self._runner.run(resized[start:start + step])
                results.extend(postprocess(raw, size))
        return results

    def warmup(self) -> float:
        """One :meth:`predict_batch` on blank frames at the bundle size and the runner's
        batch; returns the seconds it took (the first run pays engine builds and autotuning)."""
        import time

        height, width = self.bundle.input_size
        batch = (self._runner.max_batch if self._runner is not None else None) or 1
        frames = np.zeros((batch, height, width, 3), np.uint8)
        started = time.perf_counter()
        self.predict_batch(frames)
        return time.perf_counter() - started

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.close()
                self._runner = None


def runtime_report(predictor: object) -> dict[str, str]:
    """What runs, for ``/diagnostics`` and the node's configure log: a
    :class:`BundlePredictor`'s :meth:`~BundlePredictor.report`; for another predictor (a
    wrapper from a custom factory) the fields it has, ``unknown`` / ``not run`` for the rest."""
    report = getattr(predictor, "report", None)
    if callable(report):
        return dict(report())
    return {"backend": str(getattr(predictor, "backend", "unknown")),
            "precision": str(getattr(predictor, "precision", "unknown")),
            "device": str(getattr(predictor, "device", "unknown")),
            "providers": str(getattr(predictor, "provider", "unknown")),
            "model_file": str(getattr(predictor, "model_file", "unknown")),
            "fallback": str(getattr(predictor, "fallback", None) or "none"),
            "verify": "not run (the predictor factory does not verify)"}
