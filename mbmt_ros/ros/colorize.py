"""Colour images for people and rviz: class colours (optionally over the input), normals, depth."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mbmt_ros.ros.errors import NodeParameterError
from mbmt_ros.tasks import NO_PREDICTION

__all__ = ["palette_lut", "load_palette", "colorize_segmentation", "colorize_normals",
           "colorize_depth"]


def palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A ``(256, 3)`` uint8 look-up table: class ``i`` -> ``palette[i]``, the rest (255 = no
    prediction) black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if colours.shape[0] > NO_PREDICTION:
        raise NodeParameterError(f"a palette can colour at most {NO_PREDICTION} classes, got {colours.shape[0]}")
    if colours.size and (colours.min() < 0 or colours.max() > 255):
        raise NodeParameterError("palette colours must be [r, g, b] with values in 0..255")
    lut[: colours.shape[0]] = colours
    return lut


def load_palette(path: str | Path, num_classes: int) -> list[tuple[int, int, int]]:
    """Read a palette file: JSON or YAML holding a list of ``[r, g, b]`` (or ``{"palette": [...]}``).

    It must give at least ``num_classes`` colours, each three integers in 0..255.
    """
    import yaml  # YAML is a superset of JSON, so one parser reads both

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise NodeParameterError(f"palette_file {path}: cannot read it ({exc}); give a JSON/YAML list of [r, g, b]") from exc
    if isinstance(loaded, dict):
        loaded = loaded.get("palette")
    if not isinstance(loaded, list) or not all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in loaded):
        raise NodeParameterError(f"palette_file {path}: expected a list of [r, g, b] with integers in 0..255")
    if len(loaded) < num_classes:
        raise NodeParameterError(
            f"palette_file {path}: has {len(loaded)} colours but the model has {num_classes} classes")
    return [tuple(c) for c in loaded]


def colorize_segmentation(labels: np.ndarray, lut: np.ndarray, image: np.ndarray | None = None,
                          alpha: float = 1.0) -> np.ndarray:
    """``(H, W)`` uint8 class ids -> ``(H, W, 3)`` uint8 colours; with ``image`` (RGB, same
    size) and ``alpha < 1`` the colours are blended over the image with opacity ``alpha``.
    Pixels without a prediction (255) show the image unchanged."""
    if image is None or alpha >= 1.0:
        return np.take(lut, labels, axis=0)
    image = np.asarray(image, dtype=np.uint8)
    weight = int(round(alpha * 256))  # 8-bit fixed point: integer maths beats float here
    blend = np.take((lut.astype(np.uint16) * weight), labels, axis=0)
    blend += image.astype(np.uint16) * np.uint16(256 - weight)
    blend += 128
    blend >>= 8
    out = blend.astype(np.uint8)
    missing = labels == NO_PREDICTION
    if missing.any():
        out[missing] = image[missing]
    return out


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals ``(H, W, 3)`` -> RGB ``(n + 1) / 2 * 255`` (the usual normal-map colours);
    invalid (non-finite) normals are black."""
    n = np.fmax(np.asarray(normals, dtype=np.float32), np.float32(-1.0))  # NaN -> -1
    np.minimum(n, np.float32(1.0), out=n)
    n *= 127.5
    n += 128.0  # + 127.5 to map [-1, 1] to [0, 255], + 0.5 to round on truncation
    return n.astype(np.uint8)


def colorize_depth(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Depth in metres -> RGB (near = yellow/white, far = dark purple, like 'inferno'-style
    maps) over ``[0, max_depth]``; invalid (<= 0 or non-finite) pixels are black."""
    d = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    t = np.clip(np.where(valid, d, 0.0) / float(max_depth), 0.0, 1.0)
    s = 1.0 - t  # near is bright
    rgb = np.stack([np.clip(1.6 * s, 0, 1), np.clip(1.6 * s - 0.6, 0, 1), np.clip(0.4 + 0.6 * s - 1.2 * s * s, 0, 1)],
                   axis=-1)
    rgb = np.rint(rgb * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb
