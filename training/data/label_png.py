"""Segmentation label PNGs, the format people use to label robot frames.

Like the NYUv2 ``class13`` PNGs: one 8-bit value per pixel, ``0`` = void / unlabelled and
``k`` = class ``k - 1`` (so NYU13 ``bed`` is 1, ``window`` is 13). Files may be greyscale
(mode L), palette (mode P: the palette index is the value) or RGB painted with the label
palette of :func:`label_palette` (void = black); other colours are an error.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mbmt_ros.tasks import IGNORE_INDEX, default_palette
from training.errors import DataError

__all__ = ["label_palette", "read_label_png", "write_label_png"]


def label_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """PNG value -> colour: value 0 (void) is black, value k is the colour of class k-1."""
    return [(0, 0, 0), *default_palette(num_classes)]


def read_label_png(path: str | Path, num_classes: int) -> np.ndarray:
    """Read a label PNG as int64 class ids (H, W) with -1 for void."""
    path = Path(path)
    try:
        img = Image.open(path)
        img.load()
    except Exception as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    if img.mode in ("L", "P", "I", "I;16"):
        values = np.asarray(img).astype(np.int64)
    elif img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB")).astype(np.int64)
        key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        pal = np.array(label_palette(num_classes), dtype=np.int64)
        pal_key = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
        order = np.argsort(pal_key)
        pos = np.clip(np.searchsorted(pal_key[order], key), 0, len(pal_key) - 1)
        ok = pal_key[order][pos] == key
        if not ok.all():
            bad = rgb[~ok][0].tolist()
            raise DataError(f"{path}: colour {tuple(bad)} at {int((~ok).sum())} pixels is not "
                            "in the label palette (docs/data.md); use black for void")
        values = order[pos]
    else:
        raise DataError(f"{path}: PNG mode {img.mode}; expected 8-bit greyscale or palette "
                        "values (0 = void, k = class k-1) or palette colours")
    if values.max(initial=0) > num_classes:
        raise DataError(f"{path}: value {int(values.max())} exceeds {num_classes} classes "
                        "(0 = void, 1..N = classes)")
    return np.where(values == 0, IGNORE_INDEX, values - 1)


def write_label_png(path: str | Path, segmentation: np.ndarray, num_classes: int) -> None:
    """Write class ids (-1 = void) as a palette PNG (values 0..N, colours of the palette)."""
    seg = np.asarray(segmentation)
    values = np.where(seg < 0, 0, seg + 1).astype(np.uint8)
    h, w = values.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(values).tobytes())
    flat = [c for rgb in label_palette(num_classes) for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))  # palette index == value
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
