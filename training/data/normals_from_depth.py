"""Surface normals from a depth image and the camera intrinsics, with a validity mask.

Each pixel is back-projected to a 3-D point; the normal is the cross product of the central
differences of the points along the rows and columns, oriented towards the camera. A
pixel is invalid where it or a neighbour has no depth, or where the depth is not locally
planar: on any plane 1/depth is affine in the pixel coordinates, so the second difference
of inverse depth (relative to the pixel's own inverse depth) is ~0 on surfaces and large at
depth edges (occlusion boundaries) and creases, where a normal would be a blend.
"""
from __future__ import annotations

import numpy as np

from training.data.camera import CameraIntrinsics

__all__ = ["normals_from_depth", "depth_edge_mask"]


def depth_edge_mask(depth: np.ndarray, threshold: float = 0.03) -> np.ndarray:
    """Boolean (H, W): True where the pixel or a 4-neighbour lacks depth or the inverse depth
    bends by more than ``threshold`` (relative) along a row or column; borders are True."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    inv = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    edge = np.ones(depth.shape, dtype=bool)
    c = inv[1:-1, 1:-1]
    ok = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] \
        & valid[1:-1, 2:]
    d2u = np.abs(inv[1:-1, :-2] - 2 * c + inv[1:-1, 2:])
    d2v = np.abs(inv[:-2, 1:-1] - 2 * c + inv[2:, 1:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        bend = np.maximum(d2u, d2v) / np.where(ok, c, 1.0)
    edge[1:-1, 1:-1] = ~ok | (bend > threshold)
    return edge


def normals_from_depth(depth: np.ndarray, camera: CameraIntrinsics,
                       edge_threshold: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(normals, valid)``: float32 (H, W, 3) unit normals in the camera frame
    (x right, y down, z forward; pointing towards the camera, zero where invalid) and the
    boolean validity mask. ``camera`` must match the depth image's size."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    h, w = depth.shape
    if (camera.width, camera.height) != (w, h):
        camera = camera.scaled(w, h)
    points = camera.rays().astype(np.float64) * np.where(np.isfinite(depth), depth, 0)[..., None]
    du = np.zeros_like(points)
    dv = np.zeros_like(points)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dv[1:-1, :] = points[2:, :] - points[:-2, :]
    n = np.cross(dv, du)
    norm = np.linalg.norm(n, axis=2, keepdims=True)
    valid = ~depth_edge_mask(depth, edge_threshold) & (norm[..., 0] > 0)
    n = n / np.where(norm > 0, norm, 1.0)
    # orient towards the camera: n . p < 0
    flip = np.sum(n * points, axis=2) > 0
    n[flip] *= -1
    n[~valid] = 0
    return n.astype(np.float32), valid
