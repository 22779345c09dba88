"""Pinhole camera intrinsics, shared by dataset extraction (training) and the node's point
cloud (runtime side) - NumPy only, no torch, no ROS."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CameraIntrinsics"]


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an undistorted image of ``width`` x ``height`` pixels.

    Pixel (u, v) (column, row; integer = pixel centre, as ROS CameraInfo) sees the ray
    ((u - cx) / fx, (v - cy) / fy, 1) in the camera frame (x right, y down, z forward).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def k(self) -> list[float]:
        """Row-major 3x3 camera matrix (CameraInfo.k)."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The intrinsics of the same camera with the image resized to ``width`` x ``height``."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return type(self)(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)

    def rays(self) -> np.ndarray:
        """(H, W, 3) float32 camera-frame rays with z = 1 (so ray * depth = 3-D point)."""
        u = (np.arange(self.width, dtype=np.float32) - self.cx) / self.fx
        v = (np.arange(self.height, dtype=np.float32) - self.cy) / self.fy
        uu, vv = np.meshgrid(u, v)
        return np.stack([uu, vv, np.ones_like(uu)], axis=-1)
