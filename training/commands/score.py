"""``mbmt-train score``: score a folder of prediction ``.npz`` files against a dataset.

Any model's outputs can be scored: ``<pred>/<index>.npz`` per sample of the split, with any
of ``segmentation`` (H, W) int class ids, ``depth`` (H, W) metres and ``normals``
(H, W, 3); other keys are ignored. Every file must hold the same tasks; a task absent from
the files is left out of the report. Ground truth is read with the dataset readers of
:mod:`training.data.layout` from ``<data>/<split>/{label,depth,normal}/<index>.npy``.
The metrics (:mod:`training.metrics`) are pooled over the whole split and written
atomically as ``{task: {metric: value}}``.

A sample without a ground-truth file for a task is skipped for that task only when the
dataset's ``manifest.json`` says the sample has no ground-truth label for it; otherwise a
missing file is an error. The number of classes comes from ``manifest.json``, else
``--num-classes``, else the label folder (Cityscapes ``label_7``/``label_19``), else 13.
Needs only NumPy (no torch).
"""
from __future__ import annotations

import argparse
import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np

from mbmt_ros.io import atomic_write_json
from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION, TASKS
from training.data.layout import (
    detect_layout,
    list_indices,
    read_depth,
    read_label,
    read_normals,
    sample_path,
)
from training.data.manifest import MANIFEST_NAME, Manifest, SampleEntry
from training.data.sample import GT
from training.errors import ConfigError, DataError
from training.metrics import MetricSuite
from training.progress import progress

__all__ = ["add_arguments", "run", "score_folder", "read_prediction", "resolve_num_classes"]

log = logging.getLogger(__name__)

DEFAULT_NUM_CLASSES = 13
_FOLDER_CLASSES = {"label_7": 7, "label_19": 19}
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path,
                        help="folder of <index>.npz prediction files")
    parser.add_argument("--data", required=True, type=Path,
                        help="dataset root in the NYUv2 layout (<data>/<split>/...)")
    parser.add_argument("--split", default="val", help="dataset split to score (default: val)")
    parser.add_argument("--out", required=True, type=Path, help="metrics JSON file to write")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="segmentation classes when the dataset has no manifest.json "
                             f"(default {DEFAULT_NUM_CLASSES})")


def run(args: argparse.Namespace) -> int:
    metrics = score_folder(args.pred, args.data, args.split, args.num_classes)
    atomic_write_json(args.out, metrics)
    for task, values in metrics.items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"{task}: {shown}")
    print(f"wrote {args.out}")
    return 0


def resolve_num_classes(manifest: Manifest | None, requested: int | None,
                        label_folder: str) -> int:
    """Class count: the manifest's, else ``requested``, else by label folder, else 13."""
    if manifest is not None:
        if requested is not None and requested != manifest.num_classes:
            raise ConfigError(f"--num-classes {requested} contradicts the dataset manifest "
                              f"(num_classes {manifest.num_classes}); drop the flag")
        return manifest.num_classes
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--num-classes must be >= 1, got {requested}")
        return requested
    return _FOLDER_CLASSES.get(label_folder, DEFAULT_NUM_CLASSES)


def read_prediction(path: Path) -> dict[str, np.ndarray]:
    """The task arrays of one ``.npz`` prediction file (never unpickles)."""
    if not path.is_file():
        raise DataError(f"prediction file {path} is missing; write one <index>.npz per "
                        "sample of the split")
    try:
        obj = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(obj, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not an .npz archive; save with "
                        "np.savez(path, segmentation=..., depth=..., normals=...)")
    with obj:
        try:
            return {k: np.asarray(obj[k]) for k in obj.files if k in TASKS}
        except _READ_ERRORS as exc:
            raise DataError(f"{path}: cannot read its arrays ({exc})") from exc


def _check_prediction(path: Path, task: str, pred: np.ndarray, gt: np.ndarray,
                      gt_path: Path) -> np.ndarray:
    if task == DEPTH and pred.ndim == 3 and pred.shape[2] == 1:
        pred = pred[:, :, 0]
    if pred.shape != gt.shape:
        expected = {SEGMENTATION: "(H, W) class ids", DEPTH: "(H, W) metres",
                    NORMALS: "(H, W, 3)"}[task]
        raise DataError(f"{path}: {task} prediction has shape {pred.shape} but the ground "
                        f"truth {gt_path} has {gt.shape}; expected {expected}")
    if task == SEGMENTATION and pred.dtype.kind not in "iub":
        if pred.dtype.kind != "f" or not np.array_equal(pred, np.rint(pred)):
            raise DataError(f"{path}: segmentation must hold integer class ids, got dtype "
                            f"{pred.dtype}")
    elif task != SEGMENTATION and pred.dtype.kind not in "iuf":
        raise DataError(f"{path}: {task} prediction has dtype {pred.dtype}; expected float")
    return pred


def score_folder(pred_dir: str | Path, data_dir: str | Path, split: str = "val",
                 num_classes: int | None = None,
                 only: list[int] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of the predictions in ``pred_dir`` against ``data_dir``'s ``split``
    (``only``: score just these sample indices of the split)."""
    pred_dir, data_dir = Path(pred_dir), Path(data_dir)
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder {pred_dir} does not exist")
    manifest_path = data_dir / MANIFEST_NAME
    manifest = Manifest.load(manifest_path) if manifest_path.is_file() else None
    layout = detect_layout(data_dir, manifest.label_folder if manifest else None)
    classes = resolve_num_classes(manifest, num_classes, layout.folders[SEGMENTATION])
    indices = list_indices(layout, split, tasks=())
    if only is not None:
        unknown = sorted(set(only) - set(indices))
        if unknown:
            raise DataError(f"{data_dir}/{split} has no sample(s) {unknown[:5]}")
        indices = sorted(set(only))
    entries = {e.index: e for e in manifest.entries(split)} if manifest else {}

    tasks: tuple[str, ...] | None = None
    suite: MetricSuite | None = None
    for index in progress(indices, desc="score"):
        path = pred_dir / f"{index}.npz"
        pred = read_prediction(path)
        if tasks is None:
            tasks = tuple(t for t in TASKS if t in pred)
            if not tasks:
                raise DataError(f"{path}: holds none of the task arrays {list(TASKS)}")
            missing_folders = [t for t in tasks if t not in layout.folders
                               or not layout.folder(split, t).is_dir()]
            if missing_folders:
                raise DataError(f"{data_dir}/{split} has no ground truth for "
                                f"{missing_folders}, which the predictions hold")
            suite = MetricSuite(tasks, classes)
        if set(pred) != set(tasks):
            raise DataError(f"{path}: holds tasks {sorted(pred)} but the first prediction "
                            f"file holds {list(tasks)}; every file needs the same tasks")
        image_shape = _image_shape(sample_path(layout, split, index))
        for task in tasks:
            gt_path = sample_path(layout, split, index, task)
            if not gt_path.is_file() and _label_absent(entries.get(index), task, manifest):
                continue
            if task == SEGMENTATION:
                gt = read_label(gt_path, image_shape, classes)
            elif task == DEPTH:
                gt = read_depth(gt_path, image_shape)
            else:
                gt = read_normals(gt_path, image_shape)
            p = _check_prediction(path, task, pred[task], gt, gt_path)
            try:
                suite.meters[task].update(p, gt)
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from exc
    if suite is None or tasks is None:  # pragma: no cover - list_indices never returns []
        raise DataError(f"{data_dir}/{split} holds no samples")
    empty = [t for t in tasks if suite.meters[t].count == 0]
    if empty:
        raise DataError(f"{data_dir}/{split}: no valid ground-truth pixel for {empty}; "
                        "cannot score these tasks")
    known = {f"{i}.npz" for i in indices}
    extra = sorted(p.name for p in pred_dir.glob("*.npz") if p.name not in known)
    if extra:
        log.warning("%d prediction file(s) have no sample in %s/%s and were ignored (%s...)",
                    len(extra), data_dir, split, ", ".join(extra[:5]))
    return suite.compute()


def _image_shape(path: Path) -> tuple[int, int]:
    """(H, W) of a sample's image, reading only the .npy header."""
    try:
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape[:2])
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from exc


def _label_absent(entry: SampleEntry | None, task: str, manifest: Manifest | None) -> bool:
    """True if the manifest says this sample carries no ground-truth label for ``task``."""
    if manifest is None or entry is None:
        return False
    return entry.labels.get(task) != GT
