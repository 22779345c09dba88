"""Normals from depth: exact on planes, oriented to the camera, invalid at depth edges."""
from __future__ import annotations

import numpy as np

from training.data import CameraIntrinsics, depth_edge_mask, normals_from_depth

CAM = CameraIntrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)


def plane_depth(normal: np.ndarray, offset: float) -> np.ndarray:
    """Depth of the plane n . p = offset seen by CAM (rays r with z = 1: depth = d / n.r)."""
    rays = CAM.rays().astype(np.float64)
    return (offset / (rays @ normal)).astype(np.float32)


def test_tilted_plane_gives_its_normal_everywhere() -> None:
    n = np.array([0.3, -0.5, -0.8])
    n /= np.linalg.norm(n)
    depth = plane_depth(n, -2.0)  # n faces the camera: n . p < 0 on the plane
    assert (depth > 0).all()
    normals, valid = normals_from_depth(depth, CAM)
    assert valid[1:-1, 1:-1].all() and not valid[0].any() and not valid[:, -1].any()
    np.testing.assert_allclose(normals[valid], np.broadcast_to(n, normals[valid].shape),
                               atol=1e-4)
    assert not normals[~valid].any()


def test_step_edge_and_holes_are_invalid() -> None:
    depth = np.full((48, 64), 3.0, np.float32)
    depth[:, 40:] = 1.5  # an object in front: occlusion boundary at column 40
    depth[10, 10] = 0  # a hole
    edge = depth_edge_mask(depth)
    assert edge[5:-5, 39:41].all() and not edge[5:-5, 45].any() and not edge[5:-5, 20].any()
    assert edge[9:12, 9:12].sum() == 5  # the hole and its 4-neighbours
    normals, valid = normals_from_depth(depth, CAM)
    np.testing.assert_allclose(normals[20, 20], [0, 0, -1], atol=1e-6)
    assert not valid[20, 39:41].any() and valid[20, 45]


def test_camera_of_other_size_is_scaled() -> None:
    n = np.array([0.0, -1.0, -1.0]) / np.sqrt(2)
    depth = plane_depth(n, -1.0)
    half = CAM.scaled(32, 24)
    assert half.fx == 25.0 and half.cx == 15.5
    small = depth[::2, ::2]  # not exactly the scaled camera's pixels, but close
    normals, valid = normals_from_depth(small, CAM)  # scaled internally to 32 x 24
    cos = normals[valid] @ n
    assert valid.sum() > 400 and cos.min() > np.cos(np.radians(3))
