"""The dataset side of the labelling round trip: which frames go out, where labels come back.

:func:`export_frames` collects the frames of a list with their pre-annotations (a bundle's
predictions, else the dataset's own gt/pseudo label, else none) and writes a CVAT task.
:func:`import_labels` reads a CVAT export and either writes the masks as label PNGs named
``<stamp_ns>.png`` (what ``extract-bag --labels`` reads) or straight into the dataset: each
``label/<index>.npy`` replaced atomically, then the manifest (segmentation = ``gt``, with the
import recorded in ``info.label_imports``) replaced atomically last. Everything is read and
checked before the first write, so a bad archive leaves the dataset as it was; the masks are
held as bytes (label values) until each is written. The report says how many frames got
ground truth for the first time and how many already had it (replaced).
"""
from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_path
from mbmt_ros.tasks import SEGMENTATION, default_palette
from training.data.label_png import write_label_png
from training.data.layout import detect_layout, read_image, read_label, sample_path
from training.data.manifest import MANIFEST_NAME, Manifest, open_manifest
from training.data.sample import GT
from training.errors import DataError
from training.labeling.cvat import TaskFrame, class_ids, read_masks, write_task
from training.labeling.frames import Frame, frame_names, resolve_frames, tool_name

__all__ = ["ImportReport", "export_frames", "import_labels"]

log = logging.getLogger(__name__)


def export_frames(root: str | Path, frames: list[Frame], out: str | Path,
                  manifest: str | Path | None = None,
                  predict: Callable[[np.ndarray], np.ndarray] | None = None,
                  progress: Callable[[Any], Any] = iter) -> Path:
    """Write ``frames`` of the dataset at ``root`` as a CVAT task archive ``out``.

    ``predict(rgb) -> class ids`` makes the pre-annotations (a model bundle's segmentation);
    without it a frame's existing segmentation label (gt or pseudo) is used, if any.
    ``progress`` wraps the frame loop (e.g. ``tqdm``).
    """
    root = Path(root)
    man = open_manifest(root, manifest)
    layout = detect_layout(root, man.label_folder)
    entries = resolve_frames(man, frames, str(out))
    task: list[TaskFrame] = []
    for e in progress(entries):
        rgb = read_image(sample_path(layout, e.split, e.index))
        seg = None
        if predict is not None:
            seg = np.asarray(predict(rgb))
        elif SEGMENTATION in e.labels:
            path = e.paths.get(SEGMENTATION)
            src = (root / path) if path else sample_path(layout, e.split, e.index, SEGMENTATION)
            seg = read_label(src, rgb.shape[:2], man.num_classes)
        task.append(TaskFrame(tool_name(e), rgb, seg))
    return write_task(out, task, man.class_names, default_palette(man.num_classes))


@dataclass
class ImportReport:
    """What :func:`import_labels` wrote: ``new`` frames had no ground-truth segmentation
    (or no label PNG in ``--labels-out``) before, ``replaced`` had one."""

    frames: list[Frame]
    written: list[Path]
    labelled_pixels: int
    total_pixels: int
    new: int = 0
    replaced: int = 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_labels(archive: str | Path, root: str | Path, manifest: str | Path | None = None,
                  labels_out: str | Path | None = None) -> ImportReport:
    """Read a CVAT export (see :func:`training.labeling.cvat.read_masks`) and write its masks
    into the dataset at ``root`` or, with ``labels_out``, as ``<stamp_ns>.png`` label PNGs."""
    root = Path(root)
    archive = Path(archive)
    man = open_manifest(root, manifest)
    man_path = man.file or root / MANIFEST_NAME  # a layout without one gets one
    layout = detect_layout(root, man.label_folder)
    masks = read_masks(archive, man.class_names)
    names = frame_names(man)
    unknown = [n for n in masks if n not in names]
    if unknown:
        raise DataError(f"{archive}: frames {', '.join(unknown[:5])} are not in the dataset "
                        f"{root} ({len(unknown)} of {len(masks)}); import into the dataset the "
                        "task was exported from")
    frames = [names[n] for n in masks]
    for name in masks:  # sizes first: nothing is written on a mismatch
        frame = names[name]
        img = np.load(sample_path(layout, frame.split, frame.index), mmap_mode="r")
        if masks[name].shape != img.shape[:2]:
            raise DataError(f"{archive}: mask {name} is {masks[name].shape[0]}x"
                            f"{masks[name].shape[1]} but frame {frame} is {img.shape[0]}x"
                            f"{img.shape[1]}")
    labelled = sum(int(np.count_nonzero(m)) for m in masks.values())  # 0 = void
    total = sum(m.size for m in masks.values())
    if labels_out is not None:
        written, replaced = _write_pngs(masks, names, man, Path(labels_out), archive)
        return ImportReport(frames, written, labelled, total, len(written) - replaced, replaced)
    replaced = sum(man.get(f.split, f.index).labels.get(SEGMENTATION) == GT for f in frames)
    written = []
    for name in masks:
        frame = names[name]
        path = sample_path(layout, frame.split, frame.index, SEGMENTATION)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, class_ids(masks[name]), allow_pickle=False)
        written.append(path)
        entry = man.get(frame.split, frame.index)
        entry.labels[SEGMENTATION] = GT
        entry.paths.pop(SEGMENTATION, None)
    imports = list(man.info.get("label_imports", []))
    imports.append({"archive": str(archive), "sha256": _sha256(archive), "format": "cvat",
                    "frames": [str(f) for f in frames],
                    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds")})
    man.info["label_imports"] = imports
    man.save(man_path)
    written.append(man_path)
    log.info("imported %d masks from %s into %s (%d replaced ground truth)", len(frames),
             archive, root, replaced)
    return ImportReport(frames, written, labelled, total, len(frames) - replaced, replaced)


def _write_pngs(masks: dict[str, np.ndarray], names: dict[str, Frame], man: Manifest,
                out: Path, archive: Path) -> tuple[list[Path], int]:
    """Write the label PNGs; returns them and how many replaced an existing one."""
    stamps = {}
    for name in masks:
        frame = names[name]
        entry = man.get(frame.split, frame.index)
        if entry.stamp_ns is None:
            raise DataError(f"{archive}: frame {frame} has no header stamp in the manifest, so "
                            "it cannot become a <stamp_ns>.png label; import into the dataset "
                            "instead (leave out --labels-out)")
        stamps[name] = entry.stamp_ns
    written = []
    replaced = 0
    for name, mask in masks.items():
        path = out / f"{stamps[name]}.png"
        replaced += path.exists()
        with atomic_path(path) as tmp:
            write_label_png(tmp, class_ids(mask), man.num_classes)
        written.append(path)
    return written, replaced
