"""Geometric transforms applied identically to an image, its labels and their masks.

Each transform is a callable ``(sample, rng) -> sample`` on :class:`Sample` (NumPy), so
the same random draw moves the image and every label. Labels are resampled with nearest
neighbour (class ids, depth and normals never get blended across an edge; validity masks
follow because they are derived from the label values); the image uses bilinear
(antialiased when shrinking). A horizontal flip mirrors the x axis of the camera frame,
so the normals' x component is negated.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.data.sample import Sample
from training.errors import DataError

__all__ = ["Transform", "Compose", "Resize", "RandomCrop", "CenterCrop",
           "RandomHorizontalFlip", "hflip", "crop", "resize"]

Transform = Callable[[Sample, np.random.Generator], Sample]


def _nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = arr.shape[:2]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return arr[rows[:, None], cols[None, :]]


def resize(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize to ``size`` = (height, width): bilinear image, nearest-neighbour labels."""
    h, w = int(size[0]), int(size[1])
    if (h, w) == sample.size:
        return sample
    rgb = np.asarray(Image.fromarray(sample.rgb).resize((w, h), Image.BILINEAR))
    return sample.replace(
        rgb=rgb,
        segmentation=None if sample.segmentation is None else _nearest(sample.segmentation, (h, w)),
        depth=None if sample.depth is None else _nearest(sample.depth, (h, w)),
        normals=None if sample.normals is None else _nearest(sample.normals, (h, w)))


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """The window [top:top+height, left:left+width] of the image and every label."""
    h, w = sample.size
    if height > h or width > w or top < 0 or left < 0 or top + height > h or left + width > w:
        raise DataError(f"crop {height}x{width} at ({top}, {left}) does not fit a {h}x{w} image")
    win = (slice(top, top + height), slice(left, left + width))
    return sample.replace(
        rgb=sample.rgb[win],
        segmentation=None if sample.segmentation is None else sample.segmentation[win],
        depth=None if sample.depth is None else sample.depth[win],
        normals=None if sample.normals is None else sample.normals[win])


def hflip(sample: Sample) -> Sample:
    """Mirror left-right; the normals' x component (camera x = right) changes sign."""
    normals = None
    if sample.normals is not None:
        normals = sample.normals[:, ::-1].copy()
        normals[..., 0] *= -1
        normals[..., 0][normals[..., 0] == 0] = 0.0  # no -0.0
    return sample.replace(
        rgb=sample.rgb[:, ::-1],
        segmentation=None if sample.segmentation is None else sample.segmentation[:, ::-1],
        depth=None if sample.depth is None else sample.depth[:, ::-1],
        normals=normals)


@dataclass(frozen=True)
class Resize:
    """Resize to (height, width)."""

    height: int
    width: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return resize(sample, (self.height, self.width))


@dataclass(frozen=True)
class RandomCrop:
    """A random (height, width) window; the image must be at least that large."""

    height: int
    width: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.size
        if self.height > h or self.width > w:
            raise DataError(f"random crop {self.height}x{self.width} is larger than the "
                            f"{h}x{w} image ({sample.provenance.source}); resize first")
        top = int(rng.integers(0, h - self.height + 1))
        left = int(rng.integers(0, w - self.width + 1))
        return crop(sample, top, left, self.height, self.width)


@dataclass(frozen=True)
class CenterCrop:
    """The central (height, width) window."""

    height: int
    width: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.size
        return crop(sample, (h - self.height) // 2, (w - self.width) // 2, self.height,
                    self.width)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Flip left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return hflip(sample) if rng.random() < self.p else sample


class Compose:
    """Apply transforms in order with the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
