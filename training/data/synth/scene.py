"""Random indoor rooms: a box room with furniture-like boxes, objects and wall decals.

A :class:`Scene` is plain data (NumPy arrays and lists) drawn from a seeded generator, so a
frame is fully determined by ``(seed, index)``. World frame: z up, the room spans
[0, Lx] x [0, Ly] x [0, Lz] with the floor at z = 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mbmt_ros.tasks import NYU13_CLASSES

__all__ = ["Box", "Sphere", "Cylinder", "Decal", "Scene", "random_scene", "CLASS_ID",
           "SynthDomain", "DOMAINS", "domain_settings"]

CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(NYU13_CLASSES)}

# base albedo per class (linear RGB), varied per instance
_ALBEDO: dict[str, tuple[float, float, float]] = {
    "bed": (0.75, 0.70, 0.60), "books": (0.60, 0.20, 0.15), "ceiling": (0.90, 0.90, 0.88),
    "chair": (0.45, 0.30, 0.18), "floor": (0.55, 0.40, 0.28), "furniture": (0.50, 0.36, 0.24),
    "objects": (0.30, 0.50, 0.70), "picture": (0.70, 0.55, 0.30), "sofa": (0.35, 0.40, 0.55),
    "table": (0.60, 0.45, 0.30), "tv": (0.05, 0.05, 0.06), "wall": (0.80, 0.78, 0.72),
    "window": (0.75, 0.85, 0.95),
}


Range = tuple[float, float]


@dataclass(frozen=True)
class SynthDomain:
    """The settings of one synthetic distribution (what a scene is drawn from).

    ``target`` is the distribution every study and demo trains and evaluates on (the values
    the generator always had: its frames are unchanged). ``source`` is a shifted distribution
    used only to pretrain (it stands in for ImageNet / another dataset, issue 19): larger rooms,
    another furniture mix with more items, stronger and coarser textures, harder lighting and
    a low (robot-height) camera. Only ranges change, never the order of the random draws, so a
    frame is still fully determined by ``(domain, seed, index)``.
    """

    name: str
    room_x: Range = (3.0, 6.5)
    room_y: Range = (3.0, 6.5)
    room_z: Range = (2.4, 3.2)
    #: furniture kinds drawn with replacement (repeats weight a kind)
    item_kinds: tuple[str, ...] = ("bed", "table", "chair", "chair", "sofa", "furniture",
                                   "furniture", "objects")
    items: tuple[int, int] = (4, 10)          # number of items, [lo, hi)
    albedo_jitter: Range = (0.7, 1.25)
    texture_amplitude: Range = (0.05, 0.25)
    texture_frequency: Range = (4.0, 25.0)
    floor_tile: Range = (0.3, 0.8)            # floor checker size (m)
    ambient: float = 0.3                      # shading = ambient + gain * Lambert / falloff
    light_gain: float = 1.1
    exposure: Range = (0.8, 1.2)
    camera_height: Range = (1.0, 1.8)         # upper bound also <= room height - 0.3
    camera_pitch_deg: Range = (-35.0, -5.0)
    #: mixed into the per-frame random key (0: the target's historical key, unchanged)
    stream: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


#: the named distributions of ``mbmt-train synth --domain``
DOMAINS: dict[str, SynthDomain] = {
    "target": SynthDomain("target"),
    "source": SynthDomain(
        "source", room_x=(4.5, 9.0), room_y=(4.0, 8.0), room_z=(2.8, 3.8),
        item_kinds=("bed", "table", "table", "chair", "chair", "chair", "sofa", "furniture",
                    "objects", "objects", "objects"),
        items=(6, 14), albedo_jitter=(0.5, 1.5), texture_amplitude=(0.2, 0.5),
        texture_frequency=(2.0, 12.0), floor_tile=(0.8, 1.6), ambient=0.15, light_gain=1.7,
        exposure=(0.6, 1.4), camera_height=(0.35, 0.9), camera_pitch_deg=(-20.0, 5.0),
        stream=1),
}


def domain_settings(domain: str | SynthDomain) -> SynthDomain:
    """A :class:`SynthDomain` by name (``target``, ``source``) or as given."""
    if isinstance(domain, SynthDomain):
        return domain
    if domain not in DOMAINS:
        from training.errors import DataError

        raise DataError(f"unknown synthetic domain {domain!r}; choose one of {sorted(DOMAINS)}")
    return DOMAINS[domain]


@dataclass
class Box:
    center: np.ndarray
    half: np.ndarray
    yaw: float
    cls: int
    albedo: np.ndarray
    texture: tuple[float, float, float, float]  # amplitude, frequency, phase, axis mix


@dataclass
class Sphere:
    center: np.ndarray
    radius: float
    cls: int
    albedo: np.ndarray
    texture: tuple[float, float, float, float]


@dataclass
class Cylinder:
    base: np.ndarray
    radius: float
    height: float
    cls: int
    albedo: np.ndarray
    texture: tuple[float, float, float, float]


@dataclass
class Decal:
    """A flat rectangle on a wall face (0: x=0, 1: x=Lx, 2: y=0, 3: y=Ly)."""

    face: int
    a0: float
    a1: float
    z0: float
    z1: float
    cls: int
    albedo: np.ndarray


@dataclass
class Scene:
    size: np.ndarray  # room Lx, Ly, Lz
    boxes: list[Box] = field(default_factory=list)
    spheres: list[Sphere] = field(default_factory=list)
    cylinders: list[Cylinder] = field(default_factory=list)
    decals: list[Decal] = field(default_factory=list)
    room_albedo: dict[str, np.ndarray] = field(default_factory=dict)
    light: np.ndarray = field(default_factory=lambda: np.zeros(3))
    camera_position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    camera_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # camera -> world
    domain: SynthDomain = field(default_factory=lambda: DOMAINS["target"])


class _Builder:
    def __init__(self, rng: np.random.Generator, scene: Scene) -> None:
        self.rng = rng
        self.scene = scene
        self.footprints: list[tuple[float, float, float]] = []  # x, y, radius

    def albedo(self, name: str) -> np.ndarray:
        base = np.array(_ALBEDO[name])
        lo, hi = self.scene.domain.albedo_jitter
        return np.clip(base * self.rng.uniform(lo, hi, 3), 0.02, 0.98)

    def texture(self) -> tuple[float, float, float, float]:
        r, dom = self.rng, self.scene.domain
        return (float(r.uniform(*dom.texture_amplitude)), float(r.uniform(*dom.texture_frequency)),
                float(r.uniform(0, 2 * np.pi)), float(r.uniform(0, 1)))

    def place(self, radius: float, against_wall: float = 0.0
              ) -> tuple[float, float, float] | None:
        """A free floor position (x, y, yaw) for an item of footprint ``radius``; with
        ``against_wall`` > 0 the item's local -x side is that far from a wall it backs on."""
        lx, ly, _ = self.scene.size
        for _ in range(30):
            if against_wall:
                wall = int(self.rng.integers(4))
                depth = against_wall + 0.01
                along = self.rng.uniform(radius, (ly if wall < 2 else lx) - radius)
                x, y, yaw = {0: (depth, along, 0.0), 1: (lx - depth, along, np.pi),
                             2: (along, depth, np.pi / 2), 3: (along, ly - depth, -np.pi / 2)
                             }[wall]
            else:
                x = self.rng.uniform(radius + 0.1, lx - radius - 0.1)
                y = self.rng.uniform(radius + 0.1, ly - radius - 0.1)
                yaw = self.rng.uniform(-np.pi, np.pi)
            if all((x - fx) ** 2 + (y - fy) ** 2 > (radius + fr) ** 2
                   for fx, fy, fr in self.footprints):
                self.footprints.append((x, y, radius))
                return float(x), float(y), float(yaw)
        return None

    def box(self, name: str, origin: tuple[float, float, float], local: tuple[float, float, float],
            half: tuple[float, float, float], albedo: np.ndarray | None = None) -> None:
        """Add a box whose centre is at ``local`` in the item's frame (x, y, yaw)."""
        x, y, yaw = origin
        c, s = np.cos(yaw), np.sin(yaw)
        lx, ly, lz = local
        center = np.array([x + c * lx - s * ly, y + s * lx + c * ly, lz])
        self.scene.boxes.append(Box(center, np.array(half, dtype=float), yaw, CLASS_ID[name],
                                    self.albedo(name) if albedo is None else albedo,
                                    self.texture()))

    def top_objects(self, origin: tuple[float, float, float], top: float,
                    extent: tuple[float, float]) -> None:
        """Books, vases and balls standing on a surface at height ``top``."""
        r = self.rng
        x, y, yaw = origin
        c, s = np.cos(yaw), np.sin(yaw)
        for _ in range(int(r.integers(0, 4))):
            lx = r.uniform(-extent[0], extent[0]) * 0.7
            ly = r.uniform(-extent[1], extent[1]) * 0.7
            px, py = x + c * lx - s * ly, y + s * lx + c * ly
            kind = r.integers(3)
            if kind == 0:
                h = r.uniform(0.15, 0.3)
                self.scene.cylinders.append(Cylinder(np.array([px, py, top]),
                                                     float(r.uniform(0.04, 0.1)), float(h),
                                                     CLASS_ID["objects"], self.albedo("objects"),
                                                     self.texture()))
            elif kind == 1:
                rad = float(r.uniform(0.05, 0.12))
                self.scene.spheres.append(Sphere(np.array([px, py, top + rad]), rad,
                                                 CLASS_ID["objects"], self.albedo("objects"),
                                                 self.texture()))
            else:
                n = int(r.integers(2, 6))
                for k in range(n):
                    h = r.uniform(0.15, 0.25)
                    self.box("books", (px, py, yaw), (0.0, k * 0.045, top + h / 2),
                             (0.1, 0.02, h / 2))


def _add_items(b: _Builder) -> None:
    r = b.rng
    dom = b.scene.domain
    for name in r.choice(list(dom.item_kinds), size=int(r.integers(*dom.items))):
        if name == "bed":
            o = b.place(1.2, 1.0)
            if o:
                b.box("bed", o, (0.05, 0.0, 0.25), (0.95, 0.75, 0.25))
                b.box("bed", o, (-0.95, 0.0, 0.5), (0.05, 0.75, 0.5))
        elif name == "table":
            o = b.place(0.8)
            if o:
                hx, hy, top = r.uniform(0.35, 0.7), r.uniform(0.3, 0.5), r.uniform(0.45, 0.8)
                alb = b.albedo("table")
                b.box("table", o, (0.0, 0.0, top - 0.02), (hx, hy, 0.02), alb)
                for sx in (-1, 1):
                    for sy in (-1, 1):
                        b.box("table", o, (sx * (hx - 0.05), sy * (hy - 0.05), (top - 0.04) / 2),
                              (0.025, 0.025, (top - 0.04) / 2), alb)
                b.top_objects(o, top, (hx, hy))
        elif name == "chair":
            o = b.place(0.35)
            if o:
                alb = b.albedo("chair")
                b.box("chair", o, (0.0, 0.0, 0.45), (0.22, 0.22, 0.025), alb)
                b.box("chair", o, (-0.2, 0.0, 0.72), (0.02, 0.22, 0.25), alb)
                for sx in (-1, 1):
                    for sy in (-1, 1):
                        b.box("chair", o, (sx * 0.19, sy * 0.19, 0.21), (0.02, 0.02, 0.21), alb)
        elif name == "sofa":
            o = b.place(1.1, 0.4)
            if o:
                alb = b.albedo("sofa")
                b.box("sofa", o, (0.1, 0.0, 0.22), (0.35, 0.95, 0.22), alb)
                b.box("sofa", o, (-0.3, 0.0, 0.45), (0.1, 0.95, 0.45), alb)
                for sy in (-1, 1):
                    b.box("sofa", o, (0.1, sy * 0.9, 0.32), (0.35, 0.08, 0.32), alb)
        elif name == "furniture":
            o = b.place(0.7, 0.22)
            if o:
                hy, top = r.uniform(0.3, 0.7), r.uniform(0.5, 2.0)
                b.box("furniture", o, (0.0, 0.0, top / 2), (0.22, hy, top / 2))
                if top < 1.1 and r.random() < 0.5:
                    b.box("tv", o, (0.0, 0.0, top + 0.3), (0.03, min(hy, 0.5), 0.3))
                else:
                    b.top_objects(o, top, (0.2, hy))
        else:
            o = b.place(0.3)
            if o:
                if r.random() < 0.5:
                    rad = float(r.uniform(0.1, 0.3))
                    b.scene.spheres.append(Sphere(np.array([o[0], o[1], rad]), rad,
                                                  CLASS_ID["objects"], b.albedo("objects"),
                                                  b.texture()))
                else:
                    b.scene.cylinders.append(Cylinder(np.array([o[0], o[1], 0.0]),
                                                      float(r.uniform(0.1, 0.25)),
                                                      float(r.uniform(0.3, 1.0)),
                                                      CLASS_ID["objects"], b.albedo("objects"),
                                                      b.texture()))


def _add_decals(b: _Builder) -> None:
    r = b.rng
    lx, ly, lz = b.scene.size
    for name in r.choice(["picture", "window", "tv", "picture", "window"],
                         size=int(r.integers(1, 5))):
        face = int(r.integers(4))
        length = ly if face < 2 else lx
        w = r.uniform(0.4, 1.4) if name != "window" else r.uniform(0.8, 1.8)
        h = r.uniform(0.4, 1.0) if name != "window" else r.uniform(1.0, 1.6)
        a0 = r.uniform(0.1, max(0.2, length - w - 0.1))
        z0 = r.uniform(0.8, max(0.9, lz - h - 0.2))
        b.scene.decals.append(Decal(face, a0, a0 + w, z0, min(z0 + h, lz - 0.05),
                                    CLASS_ID[name], b.albedo(name)))


def _camera(b: _Builder) -> None:
    r = b.rng
    lx, ly, lz = b.scene.size
    for _ in range(100):
        x, y = r.uniform(0.4, lx - 0.4), r.uniform(0.4, ly - 0.4)
        if all((x - fx) ** 2 + (y - fy) ** 2 > (fr + 0.3) ** 2 for fx, fy, fr in b.footprints):
            break
    dom = b.scene.domain
    z = r.uniform(dom.camera_height[0], min(dom.camera_height[1], lz - 0.3))
    # look roughly towards the room's centre so that the frame shows furniture and floor
    yaw = np.arctan2(ly / 2 - y, lx / 2 - x) + np.deg2rad(r.normal(0, 25))
    pitch = np.deg2rad(r.uniform(*dom.camera_pitch_deg))
    roll = np.deg2rad(r.normal(0, 3))
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    cr, sr = np.cos(roll), np.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    b.scene.camera_position = np.array([x, y, z])
    b.scene.camera_rotation = np.stack([right, down, f], axis=1)


def random_scene(rng: np.random.Generator, domain: str | SynthDomain = "target") -> Scene:
    """Draw a room, its furniture, objects, decals, a light and a camera pose from ``domain``."""
    dom = domain_settings(domain)
    size = np.array([rng.uniform(*dom.room_x), rng.uniform(*dom.room_y), rng.uniform(*dom.room_z)])
    scene = Scene(size=size, domain=dom)
    b = _Builder(rng, scene)
    scene.room_albedo = {k: b.albedo(k) for k in ("floor", "wall", "ceiling")}
    _add_items(b)
    _add_decals(b)
    _camera(b)
    scene.light = np.array([rng.uniform(0.3, 0.7) * size[0], rng.uniform(0.3, 0.7) * size[1],
                            size[2] - 0.2])
    return scene
