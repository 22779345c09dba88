"""Colour images for people and rviz: class colours (optionally over the input), normals, depth.

The one colouring module of the project: the perception node's ``~/segmentation/color``,
``~/normals/color`` and point-cloud colours and the training result grids
(:mod:`training.plots`) all call these functions, so a class, a normal or a depth has the same
colour everywhere. NumPy only (no matplotlib on a robot): depth uses matplotlib's ``inferno``
map, stored here as a 256-entry table (:data:`DEPTH_COLORMAP`, checked against matplotlib by
the tests), reversed so that near is bright and far is dark.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mbmt_ros.imaging.errors import PaletteError
from mbmt_ros.tasks import NO_PREDICTION

__all__ = ["DEPTH_COLORMAP", "DEPTH_COLORMAP_NAME", "palette_lut", "load_palette",
           "class_ids", "colorize_segmentation", "colorize_normals", "colorize_depth"]

#: Name of the depth colour map (matplotlib's), as the docs and plots call it.
DEPTH_COLORMAP_NAME = "inferno"
#: ``(256, 3)`` uint8: matplotlib's ``inferno`` sampled at 256 points (dark -> bright).
DEPTH_COLORMAP: np.ndarray = np.frombuffer(bytes.fromhex(
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d0906"
    "1f0a07220b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c"
    "0c431e0c451f0c48210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f"
    "3609613809623909633b09643d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d"
    "6c4f0d6c510e6c520e6d540f6d550f6d57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65"
    "156e67166e69166e6a176e6c186e6d186e6f196e71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d"
    "7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a8a226a8c23698d23698f24699025689225689326"
    "679526679727669827669a28659b29649d29649f2a63a02a63a22b62a32c61a52c60a62d60a82e5fa92e5eab"
    "2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655bc3754bd3853bf3952c03a51"
    "c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545d24644d34743d448"
    "42d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933e45a31e5"
    "5c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f"
    "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b"
    "0bf98c0af98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afc"
    "a60cfca80dfcaa0ffcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228"
    "fac42afac62df9c72ff9c932f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df"
    "53f4e156f3e35af3e55df2e661f2e865f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4"
    "f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4"
), dtype=np.uint8).reshape(256, 3)


def palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A ``(256, 3)`` uint8 look-up table: class ``i`` -> ``palette[i]``, the rest (255 = no
    prediction) black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if colours.shape[0] > NO_PREDICTION:
        raise PaletteError(f"a palette can colour at most {NO_PREDICTION} classes, got {colours.shape[0]}")
    if colours.size and (colours.min() < 0 or colours.max() > 255):
        raise PaletteError("palette colours must be [r, g, b] with values in 0..255")
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
        raise PaletteError(f"palette_file {path}: cannot read it ({exc}); give a JSON/YAML list of [r, g, b]") from exc
    if isinstance(loaded, dict):
        loaded = loaded.get("palette")
    if not isinstance(loaded, list) or not all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in loaded):
        raise PaletteError(f"palette_file {path}: expected a list of [r, g, b] with integers in 0..255")
    if len(loaded) < num_classes:
        raise PaletteError(
            f"palette_file {path}: has {len(loaded)} colours but the model has {num_classes} classes")
    return [tuple(c) for c in loaded]


def class_ids(labels: np.ndarray) -> np.ndarray:
    """Any integer class ids -> uint8 ids; void / out-of-range ids (``-1``, >= 255) become
    255 (no prediction), which the palette LUT paints black."""
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        return labels
    ids = labels.astype(np.int64, copy=False)
    return np.where((ids >= 0) & (ids < NO_PREDICTION), ids, NO_PREDICTION).astype(np.uint8)


def colorize_segmentation(labels: np.ndarray, lut: np.ndarray, image: np.ndarray | None = None,
                          alpha: float = 1.0) -> np.ndarray:
    """``(H, W)`` class ids (uint8, 255 = no prediction; other integer types go through
    :func:`class_ids`) -> ``(H, W, 3)`` uint8 colours; with ``image`` (RGB, same size) and
    ``alpha < 1`` the colours are blended over the image with opacity ``alpha``.
    Pixels without a prediction (255) show the image unchanged."""
    labels = class_ids(labels)
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
    invalid normals (a NaN component, or the zero vector of missing labels) are black;
    components outside [-1, 1] are clipped.

    Runs on the node's publish path for every frame, so it avoids reductions over the
    3-long last axis (slow in NumPy): validity is ``x^2 + y^2 + z^2 > 0``, false for NaN."""
    n = np.asarray(normals, dtype=np.float32)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    norm2 = x * x
    norm2 += y * y
    norm2 += z * z
    valid = norm2 > 0  # NaN compares false
    scaled = n * np.float32(127.5)  # a new array: the input is left alone
    scaled += np.float32(128.0)  # + 127.5 maps [-1, 1] to [0, 255], + 0.5 rounds on truncation
    np.fmax(scaled, np.float32(0.5), out=scaled)  # clip; NaN -> 0.5 (black below anyway)
    np.minimum(scaled, np.float32(255.5), out=scaled)
    rgb = scaled.astype(np.uint8)
    if not valid.all():
        rgb *= valid[..., None]
    return rgb


def colorize_depth(depth: np.ndarray, max_depth: float, min_depth: float = 0.0) -> np.ndarray:
    """Depth in metres -> RGB with :data:`DEPTH_COLORMAP` over ``[min_depth, max_depth]``,
    near bright (yellow) and far dark (purple), values outside clipped; invalid (<= 0 or
    non-finite) pixels are black."""
    d = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    span = max(float(max_depth) - float(min_depth), 1e-6)
    t = np.clip((np.where(valid, d, max_depth) - float(min_depth)) / span, 0.0, 1.0)
    rgb = DEPTH_COLORMAP[np.rint((1.0 - t) * 255).astype(np.intp)]
    rgb[~valid] = 0
    return rgb
