"""The one sample type every data source yields: an RGB image plus whichever labels exist.

Sources (NYUv2/Cityscapes folders, rosbag2 logs, synthetic scenes) all produce a
:class:`Sample` so that transforms, writers and the torch dataset handle one thing only.
Labels follow the conventions of :mod:`mbmt_ros.tasks`: segmentation int class ids with
``IGNORE_INDEX`` (-1) for void, depth float32 metres with 0 = invalid, normals float32 unit
vectors in the camera frame (x right, y down, z forward) with a zero vector = invalid.
Validity masks are derived from those values, so they can never disagree with the labels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from mbmt_ros.tasks import DEPTH, IGNORE_INDEX, NORMALS, SEGMENTATION, TASKS

__all__ = ["Sample", "Provenance", "GT", "PSEUDO", "LABEL_KINDS"]

#: A label measured or annotated (sensor depth, human labels, rendered labels).
GT = "gt"
#: A label predicted by a model (e.g. the multi-modal teacher).
PSEUDO = "pseudo"
LABEL_KINDS: tuple[str, ...] = (GT, PSEUDO)


@dataclass(frozen=True)
class Provenance:
    """Where a sample comes from: file or bag, time stamp, and gt/pseudo per label."""

    source: str = ""
    stamp_ns: int | None = None
    split: str | None = None
    index: int | None = None
    #: task -> "gt" | "pseudo" for every label the sample carries.
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    """An RGB image and its (optional) dense labels, all at the image's resolution.

    ``rgb`` uint8 (H, W, 3); ``segmentation`` int64 (H, W), -1 = void; ``depth`` float32
    (H, W) metres, 0 = invalid (NaN/inf/negative are turned into 0); ``normals`` float32
    (H, W, 3), zero = invalid. Construction normalises dtypes and checks shapes.
    """

    rgb: np.ndarray
    segmentation: np.ndarray | None = None
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        self.rgb = rgb
        h, w = rgb.shape[:2]
        if self.segmentation is not None:
            seg = np.asarray(self.segmentation)
            if seg.shape != (h, w):
                raise ValueError(f"segmentation shape {seg.shape} != image {(h, w)}")
            self.segmentation = seg.astype(np.int64, copy=False)
        if self.depth is not None:
            depth = np.asarray(self.depth, dtype=np.float32)
            if depth.ndim == 3 and depth.shape[2] == 1:
                depth = depth[:, :, 0]
            if depth.shape != (h, w):
                raise ValueError(f"depth shape {depth.shape} != image {(h, w)}")
            if not (np.isfinite(depth).all() and depth.min(initial=0.0) >= 0):
                depth = np.where(~np.isfinite(depth) | (depth < 0), np.float32(0), depth)
            self.depth = depth
        if self.normals is not None:
            normals = np.asarray(self.normals, dtype=np.float32)
            if normals.shape != (h, w, 3):
                raise ValueError(f"normals shape {normals.shape} != image {(h, w, 3)}")
            if not np.isfinite(normals).all():
                bad = ~np.isfinite(normals).all(axis=2)
                normals = np.where(bad[..., None], np.float32(0), normals)
            self.normals = normals

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image and every label."""
        return self.rgb.shape[0], self.rgb.shape[1]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this sample has a label for, in canonical order."""
        return tuple(t for t in TASKS if self.label(t) is not None)

    def label(self, task: str) -> np.ndarray | None:
        """The label array of ``task`` (None when the sample has no such label)."""
        return {SEGMENTATION: self.segmentation, DEPTH: self.depth, NORMALS: self.normals}[task]

    def valid(self, task: str) -> np.ndarray:
        """Boolean (H, W) mask of the pixels carrying a usable ``task`` label (all False if none)."""
        arr = self.label(task)
        if arr is None:
            return np.zeros(self.size, dtype=bool)
        if task == SEGMENTATION:
            return arr != IGNORE_INDEX
        if task == DEPTH:
            return arr > 0
        return np.any(arr != 0, axis=2)

    def replace(self, **changes: object) -> Sample:
        """A copy with some fields replaced (dataclasses.replace, re-validated)."""
        return dataclasses.replace(self, **changes)
