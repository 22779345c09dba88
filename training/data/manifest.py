"""Label manifests: per sample, which labels exist and whether they are ground truth or pseudo.

A manifest is a JSON file (normally ``<dataset>/manifest.json``; splits made by
``mbmt-train make-split`` live beside it)::

    {
      "format": "mbmt_ros.manifest", "version": 1,
      "dataset": "synth",                 # free text: where the data came from
      "num_classes": 13, "class_names": ["bed", ...],
      "label_folder": "label",            # segmentation folder (label_7 / label_19: Cityscapes)
      "info": {...},                      # provenance: generator, seed, split parameters ...
      "samples": [
        {"split": "train", "index": 0,
         "labels": {"segmentation": "gt", "depth": "gt", "normals": "gt"},
         "paths": {"segmentation": "pseudo/train/label/0.npy"},  # optional, relative to root
         "stamp_ns": 1700000000000000000, "source": "bag:/camera/color/image_raw"}
      ]
    }

A task missing from ``labels`` means the sample has no such label (its ``has_<task>`` is
false and its loss/metric skip it). ``paths`` says where a label is read from when it is
not the layout's own file (pseudo labels). Samples not listed are not used at all, which is
how an imbalanced split (e.g. 500 with depth, 250 of them also with segmentation) is data
rather than code. :func:`make_imbalanced_split` makes such a manifest reproducibly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_write_json
from mbmt_ros.tasks import DEPTH, NORMALS, NYU13_CLASSES, SEGMENTATION, TASKS
from training.data.layout import SPLITS, detect_layout, list_indices
from training.data.sample import GT, LABEL_KINDS
from training.errors import DataError

__all__ = ["FORMAT", "VERSION", "MANIFEST_NAME", "SampleEntry", "Manifest", "open_manifest",
           "holdout_indices", "make_imbalanced_split", "default_class_names"]

FORMAT = "mbmt_ros.manifest"
VERSION = 1
MANIFEST_NAME = "manifest.json"


def default_class_names(num_classes: int) -> list[str]:
    """NYU13 names for 13 classes, else ``class_<k>``."""
    if num_classes == len(NYU13_CLASSES):
        return list(NYU13_CLASSES)
    return [f"class_{k}" for k in range(num_classes)]


@dataclass
class SampleEntry:
    """One sample of a manifest."""

    split: str
    index: int
    labels: dict[str, str] = field(default_factory=dict)  # task -> "gt" | "pseudo"
    paths: dict[str, str] = field(default_factory=dict)  # task -> file relative to the root
    stamp_ns: int | None = None
    source: str | None = None

    def has(self, task: str) -> bool:
        return task in self.labels

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": self.split, "index": self.index,
                               "labels": {t: self.labels[t] for t in TASKS if t in self.labels}}
        if self.paths:
            out["paths"] = dict(self.paths)
        if self.stamp_ns is not None:
            out["stamp_ns"] = self.stamp_ns
        if self.source is not None:
            out["source"] = self.source
        return out


@dataclass
class Manifest:
    """The parsed manifest; see the module docstring for the file format."""

    num_classes: int
    class_names: list[str]
    samples: list[SampleEntry]
    dataset: str = ""
    label_folder: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: The file it was read from; None for one derived from the layout (no manifest file).
    file: Path | None = field(default=None, compare=False)

    def entries(self, split: str) -> list[SampleEntry]:
        """The samples of ``split`` in index order."""
        return sorted((e for e in self.samples if e.split == split), key=lambda e: e.index)

    def get(self, split: str, index: int) -> SampleEntry:
        for e in self.samples:
            if e.split == split and e.index == index:
                return e
        raise DataError(f"manifest has no sample {split}/{index}")

    def set_label(self, split: str, index: int, task: str, kind: str,
                  path: str | None = None) -> None:
        """Mark ``task`` of one sample as ``kind`` (gt/pseudo), read from ``path`` if given."""
        _check_task_kind(task, kind, f"{split}/{index}")
        entry = self.get(split, index)
        entry.labels[task] = kind
        if path is not None:
            entry.paths[task] = path

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per split: number of samples and, per task, how many gt / pseudo labels."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.samples:
            c = out.setdefault(e.split, {"samples": 0, **{t: {k: 0 for k in LABEL_KINDS}
                                                          for t in TASKS}})
            c["samples"] += 1
            for task, kind in e.labels.items():
                c[task][kind] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "dataset": self.dataset,
                "num_classes": self.num_classes, "class_names": list(self.class_names),
                "label_folder": self.label_folder, "info": self.info,
                "samples": [e.to_json() for e in sorted(
                    self.samples, key=lambda e: (_split_key(e.split), e.index))]}

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename) and return the path."""
        atomic_write_json(path, self.to_json())
        return Path(path)

    @classmethod
    def from_json(cls, obj: Any, where: str = "manifest") -> Manifest:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DataError(f"{where}: not an mbmt_ros manifest (missing \"format\": \"{FORMAT}\")")
        if obj.get("version") != VERSION:
            raise DataError(f"{where}: manifest version {obj.get('version')!r} is not supported "
                            f"(this code reads version {VERSION})")
        try:
            num_classes = int(obj["num_classes"])
            names = [str(n) for n in obj.get("class_names") or default_class_names(num_classes)]
            raw_samples = obj["samples"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: missing or bad field {exc}") from exc
        if len(names) != num_classes:
            raise DataError(f"{where}: {len(names)} class_names for num_classes={num_classes}")
        samples: list[SampleEntry] = []
        seen: set[tuple[str, int]] = set()
        for i, s in enumerate(raw_samples):
            try:
                entry = SampleEntry(split=str(s["split"]), index=int(s["index"]),
                                    labels=dict(s.get("labels", {})),
                                    paths={k: str(v) for k, v in s.get("paths", {}).items()},
                                    stamp_ns=s.get("stamp_ns"), source=s.get("source"))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise DataError(f"{where}: samples[{i}] is malformed ({exc!r}); each needs "
                                "split, index and labels") from exc
            key = (entry.split, entry.index)
            if key in seen:
                raise DataError(f"{where}: sample {entry.split}/{entry.index} is listed twice")
            seen.add(key)
            for task, kind in entry.labels.items():
                _check_task_kind(task, kind, f"{where}: samples[{i}]")
            samples.append(entry)
        return cls(num_classes=num_classes, class_names=names, samples=samples,
                   dataset=str(obj.get("dataset", "")), label_folder=obj.get("label_folder"),
                   info=dict(obj.get("info") or {}))

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"manifest {path} does not exist")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"manifest {path} is not valid JSON ({exc})") from exc
        manifest = cls.from_json(obj, str(path))
        manifest.file = path
        return manifest

    @classmethod
    def from_layout(cls, root: str | Path, num_classes: int | None = None,
                    label_folder: str | None = None, dataset: str = "") -> Manifest:
        """A manifest listing every file of a layout folder as ground truth (for datasets
        such as MTAN's NYUv2 copy that come without one)."""
        layout = detect_layout(root, label_folder)
        if num_classes is None:
            num_classes = {"label_7": 7, "label_19": 19}.get(layout.folders[SEGMENTATION], 13)
        samples = []
        for split in SPLITS:
            if not (layout.root / split).is_dir():
                continue
            for index in list_indices(layout, split):
                samples.append(SampleEntry(split, index, {t: GT for t in layout.folders}))
        return cls(num_classes=num_classes, class_names=default_class_names(num_classes),
                   samples=samples, dataset=dataset or layout.kind,
                   label_folder=layout.folders[SEGMENTATION])


def open_manifest(root: str | Path, manifest: Manifest | str | Path | None = None,
                  label_folder: str | None = None) -> Manifest:
    """The one place that decides "manifest or layout" for a dataset folder.

    ``manifest`` is a :class:`Manifest` (returned as is), a file, or None for the dataset's own
    ``<root>/manifest.json``. When that default file is absent - MTAN's NYUv2 / Cityscapes
    copies come without one - every file of the layout is ground truth
    (:meth:`Manifest.from_layout`). Any other named file must exist. Every stage kind, the
    dataset and the data commands read manifests through here, so a folder exactly as
    downloaded works everywhere.
    """
    if isinstance(manifest, Manifest):
        return manifest
    root = Path(root)
    default = root / MANIFEST_NAME
    path = default if manifest is None else Path(manifest)
    if path.is_file() or (manifest is not None and not _same_file(path, default)):
        return Manifest.load(path)
    return Manifest.from_layout(root, label_folder=label_folder)


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _check_task_kind(task: str, kind: str, where: str) -> None:
    if task not in TASKS:
        raise DataError(f"{where}: unknown task {task!r}; tasks are {list(TASKS)}")
    if kind not in LABEL_KINDS:
        raise DataError(f"{where}: label kind {kind!r} for {task}; use one of {list(LABEL_KINDS)}")


def _split_key(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def holdout_indices(manifest: Manifest, fraction: float, seed: int,
                    split: str = "train") -> set[int]:
    """The ``split`` indices held out for validation: ``round(fraction * n)`` (at least one) of
    its ``n`` samples, drawn reproducibly by ``seed`` (``data.val_from_train``).

    NYUv2's ``val`` is the official test split; anything that selects on validation should
    use these training frames instead, so the test split is only ever evaluated.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the validation fraction must be in (0, 1), got {fraction!r}")
    indices = [e.index for e in manifest.entries(split)]
    if len(indices) < 2:
        raise DataError(f"the {split} split has {len(indices)} sample(s); at least 2 are needed "
                        "to carve a validation split out of it")
    count = min(len(indices) - 1, max(1, round(fraction * len(indices))))
    order = np.random.default_rng(seed).permutation(len(indices))[:count]
    return {indices[i] for i in order}


def make_imbalanced_split(manifest: Manifest, depth: int, segmentation: int, seed: int,
                          normals: int | None = None, split: str = "train") -> Manifest:
    """Keep ``depth`` training samples with depth, ``segmentation`` of them also with
    segmentation (and ``normals`` of the depth ones with normals; default: all that have them).

    Reproducible by ``seed``; the subsets are nested (the segmentation samples are among the
    depth samples). Other splits (validation) are copied unchanged. Raises DataError when the
    dataset has too few samples with the required labels.
    """
    if depth < 0 or segmentation < 0 or (normals is not None and normals < 0):
        raise DataError("split sizes must be >= 0")
    if segmentation > depth:
        raise DataError(f"--segmentation {segmentation} > --depth {depth}: the segmentation "
                        "samples are a subset of the depth samples")
    pool = [e for e in manifest.entries(split) if e.labels.get(DEPTH) == GT]
    both = [e for e in pool if e.labels.get(SEGMENTATION) == GT]
    if len(pool) < depth:
        raise DataError(f"the {split} split has {len(pool)} samples with depth, {depth} requested")
    if len(both) < segmentation:
        raise DataError(f"the {split} split has {len(both)} samples with depth and "
                        f"segmentation, {segmentation} requested")
    rng = np.random.default_rng(seed)
    seg_pick = [both[i] for i in rng.permutation(len(both))[:segmentation]]
    chosen = {e.index for e in seg_pick}
    rest = [e for e in pool if e.index not in chosen]
    depth_pick = seg_pick + [rest[i] for i in rng.permutation(len(rest))[:depth - segmentation]]
    with_normals = [e for e in depth_pick if e.labels.get(NORMALS) == GT]
    if normals is not None:
        if len(with_normals) < normals:
            raise DataError(f"only {len(with_normals)} of the chosen samples have normals, "
                            f"{normals} requested")
        with_normals = [with_normals[i] for i in sorted(rng.permutation(len(with_normals))
                                                         [:normals])]
    normal_ids = {e.index for e in with_normals}
    samples: list[SampleEntry] = []
    for e in sorted(depth_pick, key=lambda e: e.index):
        labels = {DEPTH: GT}
        if e.index in chosen:
            labels[SEGMENTATION] = GT
        if e.index in normal_ids:
            labels[NORMALS] = GT
        samples.append(SampleEntry(split, e.index, labels, {}, e.stamp_ns, e.source))
    for e in manifest.samples:
        if e.split != split:
            samples.append(SampleEntry(e.split, e.index, dict(e.labels), dict(e.paths),
                                       e.stamp_ns, e.source))
    info = dict(manifest.info)
    info["split"] = {"split": split, "depth": depth, "segmentation": segmentation,
                     "normals": normals, "seed": seed}
    return Manifest(num_classes=manifest.num_classes, class_names=list(manifest.class_names),
                    samples=samples, dataset=manifest.dataset,
                    label_folder=manifest.label_folder, info=info)
