"""Ray-cast a :class:`~training.data.synth.scene.Scene` into an RGB-D frame with labels.

Exact depth (metres along the optical axis), camera-frame normals (x right, y down,
z forward) and NYU13 class ids come straight from the nearest hit per pixel; the RGB image
is the hit's albedo times a procedural texture, Lambert-shaded by a point light plus
ambient, gamma-encoded, with per-frame exposure/white balance jitter and Gaussian sensor
noise. Labels therefore change exactly where geometry or material changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.camera import CameraIntrinsics
from training.data.sample import GT, Provenance, Sample
from training.data.synth.raycast import (
    intersect_box,
    intersect_cylinder,
    intersect_room_inside,
    intersect_sphere,
)
from training.data.synth.scene import CLASS_ID, Scene, SynthDomain, domain_settings, random_scene

__all__ = ["SynthFrame", "synth_camera", "render_scene", "render_frame"]


@dataclass
class SynthFrame:
    """A rendered frame: the sample (RGB + all three labels), its camera and a per-pixel
    surface id (room faces 0-5, then one id per primitive) for edge-aware tests."""

    sample: Sample
    camera: CameraIntrinsics
    surface: np.ndarray


def synth_camera(height: int, width: int) -> CameraIntrinsics:
    """The synthetic camera: a Kinect-like ~63 degree horizontal field of view."""
    f = 0.81 * width
    return CameraIntrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def _texture(p: np.ndarray, params: tuple[float, float, float, float]) -> np.ndarray:
    amp, freq, phase, mix = params
    a = p[:, 0] * (1 - mix) + p[:, 1] * mix
    return 1.0 + amp * np.sin(freq * a + phase) * np.sin(0.37 * freq * p[:, 2] + 2 * phase)


def _roi(scene: Scene, camera: CameraIntrinsics, center: np.ndarray,
         radius: float) -> np.ndarray | None:
    """Flat indices of the pixels whose rays may hit a bounding sphere (None: none can)."""
    pc = scene.camera_rotation.T @ (center - scene.camera_position)
    h, w = camera.height, camera.width
    if pc[2] + radius <= 0:
        return None
    if pc[2] - radius <= 1e-3:
        return np.arange(h * w)
    # conservative screen-space bounds of the sphere: project the corners of its
    # axis-aligned bounding cube at the nearest depth
    zn = pc[2] - radius
    us = [(pc[0] + sx * radius) / zn * camera.fx + camera.cx for sx in (-1, 1)]
    us += [(pc[0] + sx * radius) / (pc[2] + radius) * camera.fx + camera.cx for sx in (-1, 1)]
    vs = [(pc[1] + sy * radius) / zn * camera.fy + camera.cy for sy in (-1, 1)]
    vs += [(pc[1] + sy * radius) / (pc[2] + radius) * camera.fy + camera.cy for sy in (-1, 1)]
    c0, c1 = max(int(np.floor(min(us))) - 1, 0), min(int(np.ceil(max(us))) + 2, w)
    r0, r1 = max(int(np.floor(min(vs))) - 1, 0), min(int(np.ceil(max(vs))) + 2, h)
    if c0 >= c1 or r0 >= r1:
        return None
    return (np.arange(r0, r1)[:, None] * w + np.arange(c0, c1)[None, :]).ravel()


class _Hits:
    """The nearest surface along every ray so far: distance, world normal, surface id, class,
    albedo and texture (index into ``textures``; -1 = the room's own patterns)."""

    def __init__(self, t: np.ndarray, n: np.ndarray, face: np.ndarray,
                 room_albedo: dict[str, Any]) -> None:
        self.t, self.n, self.face = t, n, face
        self.surface = face.astype(np.int32)
        self.cls = np.where(face == 4, CLASS_ID["floor"],
                            np.where(face == 5, CLASS_ID["ceiling"], CLASS_ID["wall"]))
        self.albedo = np.empty((len(t), 3))
        for f, key in ((4, "floor"), (5, "ceiling")):
            self.albedo[face == f] = room_albedo[key]
        self.albedo[face < 4] = room_albedo["wall"]
        self.tex_params = np.zeros((len(t),), dtype=np.int32) - 1
        self.textures: list[tuple[float, float, float, float]] = []

    def update(self, idx: np.ndarray, t_new: np.ndarray, n_new: np.ndarray, sid: int,
               cls_id: int, alb: np.ndarray, tex: tuple[float, float, float, float]) -> None:
        """Take the rays ``idx`` whose new hit ``t_new`` is closer than the current one."""
        sub = t_new < self.t[idx]
        if not sub.any():
            return
        closer = idx[sub]
        self.t[closer] = t_new[sub]
        self.n[closer] = n_new[sub]
        self.surface[closer] = sid
        self.cls[closer] = cls_id
        self.albedo[closer] = alb
        self.tex_params[closer] = len(self.textures)
        self.textures.append(tex)


def render_scene(scene: Scene, camera: CameraIntrinsics, rng: np.random.Generator,
                 noise: float = 0.02) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray]:
    """Return rgb uint8 (H, W, 3), class ids (H, W), depth (H, W), camera-frame normals
    (H, W, 3) and surface ids (H, W) for ``scene`` seen by ``camera``."""
    h, w = camera.height, camera.width
    rot = scene.camera_rotation
    o = scene.camera_position
    d = camera.rays().reshape(-1, 3).astype(np.float64) @ rot.T
    hits = _Hits(*intersect_room_inside(o, d, scene.size), scene.room_albedo)
    _intersect_objects(scene, camera, o, d, hits)
    rgb8 = _shade(scene, o, d, hits, rng, noise).reshape(h, w, 3)
    n_cam = hits.n @ rot  # world -> camera: R^T n
    facing = np.einsum("ij,ij->i", hits.n, d) > 0
    n_cam[facing] *= -1
    n_cam /= np.linalg.norm(n_cam, axis=1, keepdims=True)
    depth = hits.t  # camera-frame ray z is 1, so the ray parameter is the depth
    return (rgb8, hits.cls.reshape(h, w), depth.reshape(h, w).astype(np.float32),
            n_cam.reshape(h, w, 3).astype(np.float32), hits.surface.reshape(h, w))


def _intersect_objects(scene: Scene, camera: CameraIntrinsics, o: np.ndarray, d: np.ndarray,
                       hits: _Hits) -> None:
    """Wall decals (they only replace wall pixels), then boxes, spheres and cylinders, each
    with its own surface id (6 on; 0-5 are the room's faces)."""
    sid = 6
    p_room = o + d * hits.t[:, None]
    for dec in scene.decals:
        along = p_room[:, 1] if dec.face < 2 else p_room[:, 0]
        on = ((hits.face == dec.face) & (along >= dec.a0) & (along <= dec.a1)
              & (p_room[:, 2] >= dec.z0) & (p_room[:, 2] <= dec.z1))
        hits.cls[on] = dec.cls
        hits.albedo[on] = dec.albedo
        hits.surface[on] = sid
        sid += 1
    for box in scene.boxes:
        idx = _roi(scene, camera, box.center, float(np.linalg.norm(box.half)))
        if idx is not None:
            tb, nb = intersect_box(o, d[idx], box.center, box.half, box.yaw)
            hits.update(idx, tb, nb, sid, box.cls, box.albedo, box.texture)
        sid += 1
    for sph in scene.spheres:
        idx = _roi(scene, camera, sph.center, sph.radius)
        if idx is not None:
            ts, ns = intersect_sphere(o, d[idx], sph.center, sph.radius)
            hits.update(idx, ts, ns, sid, sph.cls, sph.albedo, sph.texture)
        sid += 1
    for cyl in scene.cylinders:
        mid = cyl.base + np.array([0.0, 0.0, cyl.height / 2])
        idx = _roi(scene, camera, mid, float(np.hypot(cyl.radius, cyl.height / 2)))
        if idx is not None:
            tc, nc = intersect_cylinder(o, d[idx], cyl.base, cyl.radius, cyl.height)
            hits.update(idx, tc, nc, sid, cyl.cls, cyl.albedo, cyl.texture)
        sid += 1


def _shade(scene: Scene, o: np.ndarray, d: np.ndarray, hits: _Hits,
           rng: np.random.Generator, noise: float) -> np.ndarray:
    """uint8 RGB per ray: textures (floor tiles / planks, faint wall and ceiling patterns,
    per-object stripes), ambient + Lambert shading from a point light near the ceiling,
    exposure, white balance, gamma and sensor noise."""
    p = o + d * hits.t[:, None]
    tex = np.ones(len(d))
    floor = (hits.tex_params < 0) & (hits.face == 4)
    dom = scene.domain
    tile = rng.uniform(*dom.floor_tile)
    checker = (np.floor(p[:, 0] / tile) + np.floor(p[:, 1] / tile)) % 2
    tex[floor] = 0.85 + 0.3 * checker[floor]
    wallish = (hits.tex_params < 0) & (hits.face != 4)
    tex[wallish] = 1.0 + 0.04 * np.sin(13 * p[wallish, 0] + 7 * p[wallish, 1] + 5 * p[wallish, 2])
    for k, params in enumerate(hits.textures):
        sel = hits.tex_params == k
        if sel.any():
            tex[sel] = _texture(p[sel], params)
    to_light = scene.light - p
    dist = np.linalg.norm(to_light, axis=1)
    lambert = np.clip(np.einsum("ij,ij->i", hits.n, to_light) / np.maximum(dist, 1e-6), 0, None)
    shade = dom.ambient + dom.light_gain * lambert / (1.0 + 0.08 * dist**2)
    lin = hits.albedo * tex[:, None] * shade[:, None]
    lin *= rng.uniform(*dom.exposure) * rng.uniform(0.92, 1.08, 3)  # exposure, white balance
    rgb = np.clip(lin, 0, 1) ** (1 / 2.2)
    rgb = rgb + rng.normal(0, noise, rgb.shape)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def render_frame(seed: int, index: int, height: int, width: int,
                 domain: str | SynthDomain = "target") -> SynthFrame:
    """Frame ``index`` of the synthetic dataset ``seed`` drawn from ``domain`` (see
    :data:`~training.data.synth.scene.DOMAINS`): the same inputs give the same frame,
    independently of how many frames are generated. The target domain keeps its historical
    random key ``[seed, index]``; another domain mixes its ``stream`` in, so that no frame of
    the source equals a target frame even under the same seed."""
    dom = domain_settings(domain)
    key = [seed, index] if dom.stream == 0 else [seed, index, dom.stream]
    rng = np.random.default_rng(key)
    scene = random_scene(rng, dom)
    camera = synth_camera(height, width)
    rgb, cls, depth, normals, surface = render_scene(scene, camera, rng)
    tag = "" if dom.name == "target" else f":domain={dom.name}"
    prov = Provenance(source=f"synth:seed={seed}{tag}:frame={index}", index=index,
                      labels={"segmentation": GT, "depth": GT, "normals": GT})
    sample = Sample(rgb=rgb, segmentation=cls, depth=depth, normals=normals, provenance=prov)
    return SynthFrame(sample=sample, camera=camera, surface=surface)
