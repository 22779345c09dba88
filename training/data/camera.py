"""Pinhole camera intrinsics (``camera.json`` beside a dataset, CameraInfo in a bag)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mbmt_ros.camera import CameraIntrinsics as BaseIntrinsics
from mbmt_ros.io import atomic_write_json
from training.errors import DataError

__all__ = ["CameraIntrinsics", "CAMERA_NAME", "NYU_KINECT"]

CAMERA_NAME = "camera.json"


@dataclass(frozen=True)
class CameraIntrinsics(BaseIntrinsics):
    """:class:`mbmt_ros.camera.CameraIntrinsics` plus reading and writing ``camera.json``."""

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict, where: str = "camera") -> CameraIntrinsics:
        try:
            cam = cls(float(obj["fx"]), float(obj["fy"]), float(obj["cx"]), float(obj["cy"]),
                      int(obj["width"]), int(obj["height"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: needs fx, fy, cx, cy, width, height ({exc!r})") from exc
        if cam.fx <= 0 or cam.fy <= 0 or cam.width <= 0 or cam.height <= 0:
            raise DataError(f"{where}: focal lengths and size must be positive: {cam}")
        return cam

    @classmethod
    def from_k(cls, k: np.ndarray | list[float], width: int, height: int,
               where: str = "CameraInfo") -> CameraIntrinsics:
        """From a row-major 3x3 camera matrix (e.g. CameraInfo.k)."""
        k = np.asarray(k, dtype=float).reshape(-1)
        if k.size != 9 or k[0] <= 0 or k[4] <= 0:
            raise DataError(f"{where}: camera matrix k={k.tolist()} is not a valid pinhole "
                            "matrix (fx, fy must be > 0; is the camera calibrated?)")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> CameraIntrinsics:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"camera intrinsics file {path} does not exist")
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON ({exc})") from exc


#: The NYU Depth V2 Kinect colour camera at 640 x 480 (Silberman et al. toolbox).
NYU_KINECT = CameraIntrinsics(518.857901, 519.469611, 325.582449, 253.736166, 640, 480)
