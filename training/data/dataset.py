"""The torch Dataset every training stage reads: one dict of tensors per sample.

Item contract (docs/architecture.md): ``image`` (3, H, W) float normalised with ImageNet
mean/std, ``segmentation`` (H, W) int64 (-1 where void or missing), ``depth`` (1, H, W)
float32 metres (0 invalid), ``normals`` (3, H, W) float32 (0 invalid), ``has_segmentation``
/ ``has_depth`` / ``has_normals`` bool (does the manifest give this sample that label) and
``index`` int (the dataset file index). Labels the manifest does not give are not read at
all and come back filled with the invalid value; pseudo labels are read from where the
manifest says.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mbmt_ros.tasks import IGNORE_INDEX, TASKS, UINT8_SCALE, UINT8_SHIFT, validate_tasks
from training.data.layout import Layout, detect_layout, list_indices, load_sample
from training.data.manifest import Manifest, SampleEntry, open_manifest
from training.data.sample import Sample
from training.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, Resize, Transform
from training.errors import DataError

__all__ = ["MultiTaskDataset", "sample_to_item", "default_transform", "normalize_image"]

_SCALE = np.asarray(UINT8_SCALE, np.float32).reshape(3, 1, 1)
_SHIFT = np.asarray(UINT8_SHIFT, np.float32).reshape(3, 1, 1)


def normalize_image(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W): [0, 1] normalised with ImageNet mean/std."""
    chw = np.asarray(rgb).transpose(2, 0, 1).astype(np.float32)
    chw *= _SCALE
    chw += _SHIFT
    return torch.from_numpy(chw)


def sample_to_item(sample: Sample, index: int,
                   has: dict[str, bool] | None = None) -> dict[str, torch.Tensor | bool | int]:
    """Convert a :class:`Sample` to the item dict; a label the sample lacks (or ``has`` says
    false) is filled with -1 (segmentation) / 0 (depth, normals)."""
    h, w = sample.size
    has = {t: sample.label(t) is not None and (has or {}).get(t, True) for t in TASKS}
    seg = sample.segmentation if has["segmentation"] else np.full((h, w), IGNORE_INDEX)
    depth = sample.depth if has["depth"] else np.zeros((h, w), np.float32)
    normals = sample.normals if has["normals"] else np.zeros((h, w, 3), np.float32)
    return {
        "image": normalize_image(sample.rgb),
        "segmentation": torch.from_numpy(np.ascontiguousarray(seg, dtype=np.int64)),
        "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
        "normals": torch.from_numpy(np.ascontiguousarray(normals, dtype=np.float32)
                                    ).permute(2, 0, 1).contiguous(),
        "has_segmentation": bool(has["segmentation"]),
        "has_depth": bool(has["depth"]),
        "has_normals": bool(has["normals"]),
        "index": int(index),
    }


def default_transform(train: bool, size: Sequence[int] | None = None,
                      crop: Sequence[int] | None = None, flip: bool = True) -> Transform | None:
    """Resize to ``size`` (H, W) if given; when training, random crop ``crop`` (H, W) and a
    random horizontal flip. Returns None when there is nothing to do."""
    steps: list[Transform] = []
    if size is not None:
        steps.append(Resize(int(size[0]), int(size[1])))
    if train and crop is not None:
        steps.append(RandomCrop(int(crop[0]), int(crop[1])))
    if train and flip:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(steps) if steps else None


class MultiTaskDataset(Dataset):
    """A split of a dataset in the NYUv2 layout, filtered and labelled by its manifest.

    ``manifest``: a :class:`Manifest`, a path, or None for ``<root>/manifest.json`` (and,
    without one, every file of the folder as ground truth - e.g. MTAN's NYUv2 copy).
    ``tasks`` restricts which labels are read (others get ``has_<task>`` false).
    ``transform`` is a ``(sample, rng) -> sample`` callable (see :mod:`.transforms`); its
    random draws come from torch's generator, so DataLoader worker seeding applies.
    """

    def __init__(self, root: str | Path, split: str = "train",
                 manifest: Manifest | str | Path | None = None,
                 transform: Transform | None = None,
                 tasks: Sequence[str] | None = None,
                 label_folder: str | None = None) -> None:
        self.root = Path(root)
        self.split = split
        manifest = open_manifest(self.root, manifest, label_folder)
        self.manifest = manifest
        self.tasks = TASKS if tasks is None else validate_tasks(list(tasks))
        self.layout: Layout = detect_layout(self.root, label_folder or manifest.label_folder)
        self.entries: list[SampleEntry] = manifest.entries(split)
        if not self.entries:
            raise DataError(f"the manifest of {self.root} lists no samples in split {split!r}")
        needed = tuple(t for t in TASKS if t in self.tasks and any(
            t in e.labels and t not in e.paths for e in self.entries))
        for t in needed:
            if t not in self.layout.folders:
                raise DataError(f"the manifest gives {t} labels but {self.root} "
                                f"({self.layout.kind} layout) has no {t} folder")
        present = set(list_indices(self.layout, split, needed))
        missing = [e.index for e in self.entries if e.index not in present]
        if missing:
            raise DataError(f"the manifest lists {split} samples {missing[:8]} that have no "
                            f"file in {self.layout.folder(split)}")
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def indices(self) -> list[int]:
        """The dataset file index of each item, in item order."""
        return [e.index for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def has(self, position: int) -> dict[str, bool]:
        """Which labels item ``position`` carries (without reading any file)."""
        entry = self.entries[position]
        return {t: t in entry.labels and t in self.tasks for t in TASKS}

    def sample(self, position: int, transform: bool = False) -> Sample:
        """Item ``position`` as a :class:`Sample` (uint8 image, NumPy labels): only the labels
        the manifest gives are present."""
        entry = self.entries[position]
        tasks = tuple(t for t in TASKS if t in entry.labels and t in self.tasks)
        paths = {t: self._resolve(p) for t, p in entry.paths.items() if t in tasks}
        sample = load_sample(self.layout, self.split, entry.index, tasks,
                             num_classes=self.num_classes, paths=paths,
                             kinds={t: entry.labels[t] for t in tasks})
        if transform and self.transform is not None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
            sample = self.transform(sample, np.random.default_rng(seed))
        return sample

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def __getitem__(self, position: int) -> dict[str, torch.Tensor | bool | int]:
        if position < 0:
            position += len(self)
        return sample_to_item(self.sample(position, transform=True),
                              self.entries[position].index)
