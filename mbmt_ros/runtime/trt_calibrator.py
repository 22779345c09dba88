"""INT8 entropy calibrator for TensorRT 10.x implicit quantisation (removed in 11.x).

Feeds typical camera frames (uint8, resized to the bundle size) to TensorRT through one
device buffer allocated with ``cuda.bindings.runtime``; the calibration table is cached
beside the engine so a rebuild does not recalibrate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_write_bytes
from mbmt_ros.runtime.cuda_device import check, cudart

__all__ = ["make_calibrator"]


def make_calibrator(trt: Any, images: np.ndarray, batch: int, cache_path: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``images`` ((N, h, w, 3) uint8 at the bundle size)."""
    rt = cudart()
    frames = np.ascontiguousarray(images, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < batch:
        raise ValueError(f"calibration images must be (N >= {batch}, H, W, 3) uint8, got "
                         f"shape {frames.shape}")

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        """The device buffer is allocated on the first ``get_batch`` only - when TensorRT
        reuses a calibration cache it never asks for a batch, so nothing is allocated - and
        freed after the last batch, when a cache is handed out, and by :meth:`free`."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.nbytes = batch * frames[0].nbytes
            self.device: Any = None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index + batch > len(frames):
                self.free()
                return None
            if self.device is None:
                self.device = check(rt.cudaMalloc(self.nbytes), "cudaMalloc (calibration)")
            chunk = frames[self.index:self.index + batch]
            self.index += batch
            check(rt.cudaMemcpy(self.device, chunk.ctypes.data, self.nbytes,
                                rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            if not cache_path.is_file():
                return None
            self.free()  # the cache replaces calibration: no batch will be asked for
            return cache_path.read_bytes()

        def free(self) -> None:
            """Release the device buffer (idempotent)."""
            if self.device is not None:
                device, self.device = self.device, None
                check(rt.cudaFree(device), "cudaFree (calibration)")

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return _Calibrator()
