"""Semantic point cloud: depth + camera intrinsics -> sensor_msgs/PointCloud2 (x y z rgb label).

Points are in the camera's optical frame (x right, y down, z forward; REP 103), i.e. the
frame of the image header. The cloud is organised (one point per ``stride``-th pixel in
each direction); pixels without valid depth (or beyond ``max_depth``) are NaN points, so
``is_dense`` is false. ``rgb`` is packed ``0x00RRGGBB`` in a float32 (the PCL / rviz
convention) and ``label`` the uint32 class id (255 = no prediction).
"""
from __future__ import annotations

import array
import functools
import math

import numpy as np
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from mbmt_ros.camera import CameraIntrinsics
from mbmt_ros.imaging.errors import ImageConversionError

__all__ = ["POINT_DTYPE", "Intrinsics", "intrinsics_from_camera_info", "depth_to_points",
           "pack_rgb", "points_to_msg"]

#: Memory layout of one point (20 bytes, no padding).
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("label", "<u4")])
_FIELDS = (("x", PointField.FLOAT32), ("y", PointField.FLOAT32), ("z", PointField.FLOAT32),
           ("rgb", PointField.FLOAT32), ("label", PointField.UINT32))


#: The node's camera model is the package's pinhole model.
Intrinsics = CameraIntrinsics


def intrinsics_from_camera_info(info: CameraInfo) -> Intrinsics:
    """Read fx, fy, cx, cy from ``info.k``; raises ImageConversionError for an unset camera."""
    k = [float(v) for v in info.k]
    if (not all(math.isfinite(v) for v in (k[0], k[4], k[2], k[5])) or k[0] <= 0 or k[4] <= 0
            or info.width <= 0 or info.height <= 0):
        raise ImageConversionError(
            f"camera_info is not calibrated (fx={k[0]}, fy={k[4]}, size {info.width}x{info.height})")
    return Intrinsics(k[0], k[4], k[2], k[5], int(info.width), int(info.height))


@functools.lru_cache(maxsize=8)
def _rays(height: int, width: int, stride: int, fx: float, fy: float, cx: float,
          cy: float) -> tuple[np.ndarray, np.ndarray]:
    """``(u - cx) / fx`` and ``(v - cy) / fy`` of the sampled pixels: the same for every frame
    of a camera, so computed once (the node's publish path runs this per frame)."""
    v, u = np.mgrid[0:height:stride, 0:width:stride].astype(np.float32)
    return (u - np.float32(cx)) / np.float32(fx), (v - np.float32(cy)) / np.float32(fy)


def pack_rgb(colours: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 RGB -> ``(...)`` float32 holding ``0x00RRGGBB`` (PCL / rviz)."""
    c = np.asarray(colours, dtype=np.uint8)
    bgrx = np.zeros((*c.shape[:-1], 4), dtype=np.uint8)  # little-endian uint32: B, G, R, 0
    bgrx[..., :3] = c[..., ::-1]
    return bgrx.view("<u4").reshape(c.shape[:-1]).view("<f4")


def depth_to_points(depth: np.ndarray, intrinsics: Intrinsics, colours: np.ndarray,
                    labels: np.ndarray | None = None, stride: int = 1,
                    max_depth: float = float("inf")) -> np.ndarray:
    """Back-project ``depth`` (H, W metres) to an organised ``(H/stride, W/stride)`` array of
    :data:`POINT_DTYPE`; ``colours`` is (H, W, 3) uint8 (or already sampled, of the cloud's
    shape), ``labels`` (H, W) ids or None (255)."""
    height, width = depth.shape
    cam = intrinsics.scaled(width, height)
    z = np.asarray(depth[::stride, ::stride], dtype=np.float32)
    ray_x, ray_y = _rays(height, width, stride, float(cam.fx), float(cam.fy), float(cam.cx),
                         float(cam.cy))
    with np.errstate(invalid="ignore"):  # NaN depth compares false: an invalid point
        valid = (z > 0) & (z <= max_depth)
    z = np.where(valid, z, np.float32(np.nan))  # also maps inf to NaN
    points = np.empty(z.shape, dtype=POINT_DTYPE)
    points["x"] = ray_x * z
    points["y"] = ray_y * z
    points["z"] = z
    sampled = colours if colours.shape[:2] == z.shape else colours[::stride, ::stride]
    points["rgb"] = pack_rgb(sampled)
    points["label"] = 255 if labels is None else labels[::stride, ::stride]
    return points


def points_to_msg(points: np.ndarray, header: Header) -> PointCloud2:
    """Wrap an organised :data:`POINT_DTYPE` array in a PointCloud2 (one buffer copy)."""
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = points.shape if points.ndim == 2 else (1, points.shape[0])
    msg.fields = [PointField(name=name, offset=POINT_DTYPE.fields[name][1], datatype=kind, count=1)
                  for name, kind in _FIELDS]
    msg.is_bigendian = False
    msg.point_step = POINT_DTYPE.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = False
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(points).reshape(-1).view(np.uint8).data)
    msg.data = data
    return msg
