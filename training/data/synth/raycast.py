"""Vectorised ray / primitive intersections (NumPy) for the synthetic scene renderer.

Every function takes one ray origin ``o`` (3,) and the ray directions ``d`` (P, 3) of all
pixels, and returns ``(t, n)``: the ray parameter of the nearest hit (P,) with ``inf`` where
the ray misses, and the outward world-frame unit normal at the hit (P, 3). Directions are not
normalised: with camera-frame z = 1, ``t`` is the pixel's depth.
"""
from __future__ import annotations

import numpy as np

__all__ = ["intersect_box", "intersect_sphere", "intersect_cylinder", "intersect_room_inside"]

_EPS = 1e-6


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < 1e-12, 1e-12, d)


def intersect_box(o: np.ndarray, d: np.ndarray, center: np.ndarray, half: np.ndarray,
                  yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """A box with half-sizes ``half`` rotated by ``yaw`` about the world z axis (slab method)."""
    c, s = np.cos(yaw), np.sin(yaw)
    rt = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world -> box
    ol = rt @ (o - center)
    dl = (c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2])
    near = np.full(len(d), -np.inf)
    far = np.full(len(d), np.inf)
    axis = np.zeros(len(d), dtype=np.int8)
    for k in range(3):
        inv = 1.0 / _safe(dl[k])
        t1 = (-half[k] - ol[k]) * inv
        t2 = (half[k] - ol[k]) * inv
        lo = np.minimum(t1, t2)
        bigger = lo > near
        near = np.where(bigger, lo, near)
        axis[bigger] = k
        far = np.minimum(far, np.maximum(t1, t2))
    hit = (near <= far) & (near > _EPS)
    t = np.where(hit, near, np.inf)
    nl = np.zeros((len(d), 3))
    for k in range(3):
        sel = axis == k
        nl[sel, k] = -np.sign(dl[k][sel])
    return t, nl @ rt


def intersect_sphere(o: np.ndarray, d: np.ndarray, center: np.ndarray,
                     radius: float) -> tuple[np.ndarray, np.ndarray]:
    oc = o - center
    a = np.einsum("ij,ij->i", d, d)
    b = 2.0 * (d @ oc)
    cc = float(oc @ oc) - radius * radius
    disc = b * b - 4 * a * cc
    root = np.sqrt(np.maximum(disc, 0.0))
    t = (-b - root) / (2 * a)
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    finite = np.isfinite(t)
    p = o + d * np.where(finite, t, 0.0)[:, None]
    return t, (p - center) / radius


def intersect_cylinder(o: np.ndarray, d: np.ndarray, base: np.ndarray, radius: float,
                       height: float) -> tuple[np.ndarray, np.ndarray]:
    """A vertical (world z) closed cylinder standing on ``base`` (x, y, z of the bottom)."""
    oc = o - base
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = _safe(dx * dx + dy * dy)
    b = 2.0 * (dx * oc[0] + dy * oc[1])
    cc = oc[0] ** 2 + oc[1] ** 2 - radius * radius
    disc = b * b - 4 * a * cc
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    z = oc[2] + t_side * dz
    t_side = np.where((disc >= 0) & (t_side > _EPS) & (z >= 0) & (z <= height), t_side, np.inf)
    dzs = _safe(dz)
    caps = []
    for zc in (0.0, height):
        tc = (zc - oc[2]) / dzs
        x = oc[0] + tc * dx
        y = oc[1] + tc * dy
        caps.append(np.where((tc > _EPS) & (x * x + y * y <= radius * radius), tc, np.inf))
    t = np.minimum(t_side, np.minimum(caps[0], caps[1]))
    finite = np.isfinite(t)
    p = oc + d * np.where(finite, t, 0.0)[:, None]
    n = np.zeros_like(d)
    side = t == t_side
    n[side, 0] = p[side, 0] / radius
    n[side, 1] = p[side, 1] / radius
    n[~side & (t == caps[0]), 2] = -1.0
    n[~side & (t == caps[1]) & (t != caps[0]), 2] = 1.0
    return t, n


def intersect_room_inside(o: np.ndarray, d: np.ndarray,
                          size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays from inside the room [0, size] leave through one face: returns ``(t, n, face)``
    with inward normals and face ids 0: x=0, 1: x=Lx, 2: y=0, 3: y=Ly, 4: floor, 5: ceiling."""
    ds = _safe(d)
    bound = np.where(ds > 0, size, 0.0)
    t_axes = (bound - o) / ds
    axis = t_axes.argmin(axis=1)
    rows = np.arange(len(d))
    t = t_axes[rows, axis]
    positive = ds[rows, axis] > 0
    n = np.zeros_like(d)
    n[rows, axis] = np.where(positive, -1.0, 1.0)
    face = axis * 2 + positive
    return t, n, face
