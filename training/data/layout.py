"""The on-disk dataset layout (MTAN's preprocessed NYUv2 / Cityscapes) and its checks.

``<root>/{train,val}/{image,label,depth,normal}/<index>.npy`` (NYUv2; Cityscapes has
``label_7`` / ``label_19`` and no ``normal``). Copies of these datasets differ in dtypes, so
reading accepts: images float in [0, 1] or uint8, (H, W, 3); labels float or integer
(H, W) with -1 = void; depth (H, W) or (H, W, 1) metres, 0/NaN = invalid; normals
(H, W, 3) in [-1, 1]. Everything else is a :class:`~training.errors.DataError` that names
the file and says what is wrong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbmt_ros.tasks import DEPTH, IGNORE_INDEX, NORMALS, SEGMENTATION, TASKS
from training.data.sample import GT, Provenance, Sample
from training.errors import DataError

__all__ = [
    "SPLITS", "IMAGE_FOLDER", "NYUV2_FOLDERS", "Layout", "detect_layout", "list_indices",
    "load_sample", "read_image", "read_label", "read_depth", "read_normals", "sample_path",
]

SPLITS: tuple[str, ...] = ("train", "val")
IMAGE_FOLDER = "image"
#: task -> folder of the NYUv2 layout.
NYUV2_FOLDERS: dict[str, str] = {SEGMENTATION: "label", DEPTH: "depth", NORMALS: "normal"}
_CITYSCAPES_LABELS = ("label_7", "label_19")
_LAYOUT_HELP = ("expected the MTAN layout <root>/{train,val}/{image,label,depth,normal}/"
                "<index>.npy (Cityscapes: image, label_7 or label_19, depth)")
_INDEX_RE = re.compile(r"^\d+$")


@dataclass(frozen=True)
class Layout:
    """Which folder holds which task's labels in a dataset root."""

    root: Path
    kind: str  # "nyuv2" | "cityscapes"
    folders: dict[str, str]  # task -> folder name (only tasks the layout has)

    def folder(self, split: str, task: str | None = None) -> Path:
        """The folder of ``task``'s files (the image folder when ``task`` is None)."""
        name = IMAGE_FOLDER if task is None else self.folders[task]
        return self.root / split / name


def detect_layout(root: str | Path, label_folder: str | None = None) -> Layout:
    """Look at ``root`` and return its :class:`Layout`, or raise DataError saying what is missing.

    ``label_folder`` picks the segmentation folder (e.g. ``label_19`` for 19-class Cityscapes);
    by default ``label`` (NYUv2), else ``label_7`` (MTAN's Cityscapes default), else ``label_19``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; {_LAYOUT_HELP}")
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        raise DataError(f"{root} has neither a train/ nor a val/ folder; {_LAYOUT_HELP}")
    probe = root / splits[0]
    if label_folder is None:
        for name in ("label", *_CITYSCAPES_LABELS):
            if (probe / name).is_dir():
                label_folder = name
                break
    cityscapes = label_folder in _CITYSCAPES_LABELS
    folders = {SEGMENTATION: label_folder or "label", DEPTH: "depth"}
    if not cityscapes:
        folders[NORMALS] = "normal"
    return Layout(root=root, kind="cityscapes" if cityscapes else "nyuv2", folders=folders)


def sample_path(layout: Layout, split: str, index: int, task: str | None = None) -> Path:
    """Path of one ``.npy`` file (the image when ``task`` is None)."""
    return layout.folder(split, task) / f"{index}.npy"


def _indices_in(folder: Path) -> dict[int, str]:
    found: dict[int, str] = {}
    for path in folder.iterdir():
        if path.suffix != ".npy" or path.name.startswith("."):
            continue
        if not _INDEX_RE.match(path.stem):
            raise DataError(f"{path}: unexpected file name; files must be named <index>.npy "
                            "with an integer index (e.g. 0.npy)")
        found[int(path.stem)] = path.name
    return found


def list_indices(layout: Layout, split: str, tasks: tuple[str, ...] | None = None) -> list[int]:
    """Sorted sample indices of ``split``, checking that every required folder exists and
    holds the same files as ``image/`` (a mismatch names the files that lack a partner).

    ``tasks`` are the label folders that must be present (default: all of the layout's).
    """
    split_dir = layout.root / split
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir}; {_LAYOUT_HELP}")
    tasks = tuple(t for t in TASKS if t in layout.folders) if tasks is None else tasks
    image_dir = layout.folder(split)
    if not image_dir.is_dir():
        raise DataError(f"missing folder {image_dir}; {_LAYOUT_HELP}")
    images = _indices_in(image_dir)
    if not images:
        raise DataError(f"{image_dir} holds no <index>.npy files")
    for task in tasks:
        folder = layout.folder(split, task)
        if not folder.is_dir():
            raise DataError(f"missing folder {folder} ({task} labels); {_LAYOUT_HELP}")
        labels = _indices_in(folder)
        if labels.keys() != images.keys():
            only_img = sorted(images.keys() - labels.keys())
            only_lbl = sorted(labels.keys() - images.keys())
            parts = [f"{image_dir.name}/ has {len(images)} files but {folder.name}/ has "
                     f"{len(labels)}"]
            if only_img:
                parts.append(f"no {folder.name}/ partner for {_names(only_img)}")
            if only_lbl:
                parts.append(f"no {image_dir.name}/ partner for {_names(only_lbl)}")
            raise DataError(f"{split_dir}: file count mismatch: " + "; ".join(parts))
    return sorted(images)


def _names(indices: list[int], limit: int = 8) -> str:
    shown = ", ".join(f"{i}.npy" for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} is missing")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from exc


def read_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3); float files must lie in [0, 1]."""
    arr = _load(path)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"{path}: image has shape {arr.shape}; expected (H, W, 3)")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: image dtype {arr.dtype}; expected float in [0, 1] or uint8")
    if np.isnan(arr).any():
        raise DataError(f"{path}: image contains NaN values; re-create this file")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise DataError(f"{path}: float image values span [{lo:.3g}, {hi:.3g}]; expected [0, 1] "
                        "(MTAN layout) - divide by 255 or save as uint8")
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def _check_hw(path: Path, arr: np.ndarray, size: tuple[int, int], what: str) -> None:
    if arr.shape[:2] != size:
        raise DataError(f"{path}: {what} is {arr.shape[0]}x{arr.shape[1]} but the image is "
                        f"{size[0]}x{size[1]}")


def read_label(path: Path, size: tuple[int, int], num_classes: int | None = None) -> np.ndarray:
    """Read a segmentation file (float or int, -1 = void) as int64 (H, W)."""
    arr = _load(path)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise DataError(f"{path}: label has shape {arr.shape}; expected (H, W) class ids")
    _check_hw(path, arr, size, "label")
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise DataError(f"{path}: label contains NaN; use -1 for void pixels")
        ints = np.rint(arr)
        if np.abs(ints - arr).max(initial=0.0) > 1e-3:
            raise DataError(f"{path}: label holds non-integer values; expected class ids")
        arr = ints
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{path}: label dtype {arr.dtype}; expected integer or float class ids")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < IGNORE_INDEX or (num_classes is not None and hi >= num_classes):
        raise DataError(f"{path}: label values span [{lo}, {hi}]; expected -1 (void) or "
                        f"0..{(num_classes or 0) - 1}")
    return arr


def read_depth(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read a depth file ((H, W) or (H, W, 1), metres) as float32 (H, W), invalid -> 0."""
    arr = _load(path)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: depth has shape {arr.shape} dtype {arr.dtype}; expected "
                        "(H, W) or (H, W, 1) float metres")
    _check_hw(path, arr, size, "depth")
    arr = arr.astype(np.float32, copy=False)
    if np.isfinite(arr).all() and arr.min(initial=0.0) >= 0:
        return arr
    return np.where(~np.isfinite(arr) | (arr < 0), np.float32(0), arr)


def read_normals(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read a normals file (H, W, 3) in [-1, 1] as float32, non-finite -> 0 (invalid)."""
    arr = _load(path)
    if arr.ndim != 3 or arr.shape[2] != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: normals have shape {arr.shape} dtype {arr.dtype}; expected "
                        "(H, W, 3) float in [-1, 1]")
    _check_hw(path, arr, size, "normals")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        finite = np.isfinite(arr).all(axis=2)
        arr = np.where(finite[..., None], arr, np.float32(0))
    if arr.max(initial=0.0) > 1.0 + 1e-3 or arr.min(initial=0.0) < -1.0 - 1e-3:
        raise DataError(f"{path}: normals exceed [-1, 1]; expected unit vectors (0 = invalid)")
    return arr


def load_sample(layout: Layout, split: str, index: int, tasks: tuple[str, ...] | None = None,
                num_classes: int | None = None,
                paths: dict[str, Path] | None = None,
                kinds: dict[str, str] | None = None) -> Sample:
    """Read one sample's image and the labels of ``tasks`` (default: all the layout has).

    ``paths`` overrides where a task's label is read from (pseudo labels); ``kinds`` records
    gt/pseudo per task in the sample's provenance (default gt).
    """
    tasks = tuple(t for t in TASKS if t in layout.folders) if tasks is None else tasks
    paths = paths or {}
    image_path = sample_path(layout, split, index)
    rgb = read_image(image_path)
    size = rgb.shape[:2]
    labels: dict[str, np.ndarray] = {}
    for task in tasks:
        path = paths.get(task) or sample_path(layout, split, index, task)
        if task == SEGMENTATION:
            labels["segmentation"] = read_label(path, size, num_classes)
        elif task == DEPTH:
            labels["depth"] = read_depth(path, size)
        else:
            labels["normals"] = read_normals(path, size)
    kinds = {t: (kinds or {}).get(t, GT) for t in tasks}
    prov = Provenance(source=str(image_path), split=split, index=index, labels=kinds)
    return Sample(rgb=rgb, provenance=prov, **labels)
