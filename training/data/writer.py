"""Writing a dataset in the NYUv2 layout, all or nothing.

:class:`DatasetWriter` fills a hidden temporary folder beside the destination and renames it
into place only when the ``with`` block ends without an error (``mbmt_ros.io.atomic_directory``),
so a crash or a bad input never leaves a partial dataset behind.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_directory
from mbmt_ros.tasks import TASKS
from training.data.layout import IMAGE_FOLDER, NYUV2_FOLDERS, SPLITS
from training.data.manifest import MANIFEST_NAME, Manifest, SampleEntry, default_class_names
from training.data.sample import Sample
from training.errors import DataError

__all__ = ["DatasetWriter", "open_dataset_writer", "write_sample_files"]


def write_sample_files(root: Path, split: str, index: int, sample: Sample) -> None:
    """Write one sample's ``.npy`` files under ``root`` (image uint8, label int16 with -1
    void, depth float32 (H, W) metres, normal float32 (H, W, 3))."""
    arrays: dict[str, np.ndarray] = {IMAGE_FOLDER: sample.rgb}
    if sample.segmentation is not None:
        arrays[NYUV2_FOLDERS["segmentation"]] = sample.segmentation.astype(np.int16)
    if sample.depth is not None:
        arrays[NYUV2_FOLDERS["depth"]] = sample.depth.astype(np.float32)
    if sample.normals is not None:
        arrays[NYUV2_FOLDERS["normals"]] = sample.normals.astype(np.float32)
    for folder, arr in arrays.items():
        path = root / split / folder / f"{index}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


class DatasetWriter:
    """Collects samples into ``<tmp>/{split}/{folder}/<index>.npy`` and a manifest.

    Use via :func:`open_dataset_writer`; :attr:`tmp_root` is where extra artefacts (camera
    intrinsics, a bag) can be written so that they appear atomically with the dataset.
    """

    def __init__(self, tmp_root: Path, num_classes: int, class_names: list[str] | None,
                 dataset: str, info: dict[str, Any] | None) -> None:
        self.tmp_root = tmp_root
        self.manifest = Manifest(num_classes=num_classes,
                                 class_names=class_names or default_class_names(num_classes),
                                 samples=[], dataset=dataset, label_folder="label",
                                 info=dict(info or {}))
        self._next: dict[str, int] = {}

    def add(self, sample: Sample, split: str = "train", index: int | None = None) -> int:
        """Write ``sample`` into ``split`` (next free index unless given); returns the index.

        Labels the sample lacks are written as empty placeholders (void / 0) so that the
        layout stays complete, and the manifest records that the sample has no such label.
        """
        if split not in SPLITS:
            raise DataError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if index is None:
            index = self._next.get(split, 0)
        self._next[split] = max(self._next.get(split, 0), index + 1)
        h, w = sample.size
        filled = sample.replace(
            segmentation=sample.segmentation if sample.segmentation is not None
            else np.full((h, w), -1, np.int64),
            depth=sample.depth if sample.depth is not None else np.zeros((h, w), np.float32),
            normals=sample.normals if sample.normals is not None
            else np.zeros((h, w, 3), np.float32))
        write_sample_files(self.tmp_root, split, index, filled)
        prov = sample.provenance
        kinds = {t: prov.labels.get(t, "gt") for t in TASKS if sample.label(t) is not None}
        self.manifest.samples.append(SampleEntry(split, index, kinds, {}, prov.stamp_ns,
                                                 prov.source or None))
        return index

    def _finish(self) -> None:
        if not self.manifest.samples:
            raise DataError("no samples were written; the dataset would be empty")
        self.manifest.save(self.tmp_root / MANIFEST_NAME)


@contextlib.contextmanager
def open_dataset_writer(out: str | Path, num_classes: int = 13,
                        class_names: list[str] | None = None, dataset: str = "",
                        info: dict[str, Any] | None = None,
                        overwrite: bool = False) -> Iterator[DatasetWriter]:
    """Context manager yielding a :class:`DatasetWriter`; the dataset appears at ``out`` only
    when the block completes. ``out`` must not exist unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; choose a new --out folder or pass --overwrite")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        writer = DatasetWriter(tmp, num_classes, class_names, dataset, info)
        yield writer
        writer._finish()
