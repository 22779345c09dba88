"""Pre- and post-processing around a bundle's graph, in NumPy/Pillow (no torch).

The graph takes uint8 RGB NHWC at the bundle's input size and does normalisation itself,
so preprocessing is only validation and a resize. Postprocessing brings each output back
to the caller's resolution: nearest neighbour for class ids (a blend of two classes is
meaningless), bilinear for confidence, depth and normals (normals re-normalised to unit
length afterwards).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from mbmt_ros.runtime.errors import InputError
from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION

__all__ = ["check_image", "check_batch", "resize_images", "postprocess"]

SEGMENTATION_CONFIDENCE = "segmentation_confidence"


def check_image(image: object) -> np.ndarray:
    """Return ``image`` as a (H, W, 3) uint8 array or raise :class:`InputError`."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a NumPy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an RGB image of shape (H, W, 3), got shape {image.shape}; "
                         f"convert grey/RGBA/BGR images to 3-channel RGB first")
    return _check_common(image)


def check_batch(images: object) -> np.ndarray:
    """Return ``images`` as a (N, H, W, 3) uint8 array or raise :class:`InputError`."""
    if isinstance(images, (list, tuple)):
        images = [check_image(im) for im in images]
        if len({im.shape for im in images}) > 1:
            raise InputError("a batch must hold images of one size; predict them separately")
        images = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    if not isinstance(images, np.ndarray):
        raise InputError(f"expected a NumPy array (N, H, W, 3) uint8 RGB, got "
                         f"{type(images).__name__}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise InputError(f"expected a batch of RGB images of shape (N, H, W, 3), got shape "
                         f"{images.shape}; convert grey/RGBA/BGR images to 3-channel RGB first")
    if images.shape[0] == 0:
        raise InputError("the batch is empty")
    return _check_common(images)


def _check_common(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InputError(f"expected uint8 pixels (0-255), got dtype {array.dtype}; convert "
                         f"with np.clip(x, 0, 255).astype(np.uint8) (scale floats in [0, 1] "
                         f"by 255 first)")
    if array.shape[-3] < 1 or array.shape[-2] < 1:
        raise InputError(f"image has zero size: shape {array.shape}")
    return array


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (N, H, W, 3) uint8 batch to ``size`` = (height, width), bilinear."""
    height, width = size
    if images.shape[1:3] == (height, width):
        return np.ascontiguousarray(images)
    out = np.empty((images.shape[0], height, width, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    return out


def postprocess(raw: dict[str, np.ndarray], size: tuple[int, int]) -> list[dict[str, np.ndarray]]:
    """Split raw batched graph outputs into one dict per image at ``size`` = (height, width).

    ``raw`` holds the graph's outputs: segmentation (N, h, w) ints, segmentation_confidence /
    depth (N, h, w) float, normals (N, 3, h, w) float. The result follows the runtime contract:
    segmentation (H, W) int32, segmentation_confidence / depth (H, W) float32, normals
    (H, W, 3) float32.
    """
    batch = next(iter(raw.values())).shape[0]
    results: list[dict[str, np.ndarray]] = [{} for _ in range(batch)]
    for name, value in raw.items():
        for i in range(batch):
            results[i][name] = _resize_output(name, value[i], size)
    return results


def _resize_output(name: str, value: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if name == SEGMENTATION:
        return _nearest(value.astype(np.int32, copy=False), size)
    if name == NORMALS:
        hwc = np.moveaxis(value.astype(np.float32, copy=False), 0, -1)
        if hwc.shape[:2] == size:
            return np.ascontiguousarray(hwc)
        out = np.stack([_bilinear(hwc[..., c], size) for c in range(3)], axis=-1)
        norm = np.linalg.norm(out, axis=-1, keepdims=True)
        np.divide(out, norm, out=out, where=norm > 1e-6)
        return out
    if name in (DEPTH, SEGMENTATION_CONFIDENCE):
        return _bilinear(value.astype(np.float32, copy=False), size)
    raise InputError(f"unknown graph output {name!r}")


def _nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by index arithmetic (pixel centres, like Pillow's NEAREST)."""
    h, w = labels.shape
    height, width = size
    if (h, w) == (height, width):
        return np.ascontiguousarray(labels)
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.intp), w - 1)
    return labels[rows[:, None], cols[None, :]]


def _bilinear(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one float32 plane with Pillow's 'F' mode (C speed, no torch)."""
    height, width = size
    if plane.shape == (height, width):
        return np.ascontiguousarray(plane, dtype=np.float32)
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))  # mode F
    return np.asarray(resized.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
