"""Stage 5, ``pseudo-label``: the multi-modal teacher labels the frames that lack the scarce label.

For every training frame of the manifest that has the teacher's extra input (e.g. depth) but
not the target label (e.g. segmentation), the teacher predicts the target; pixels whose
softmax confidence is below ``tau`` (0.9 by default, as in the imbalanced-data paper) stay
unlabelled (-1). Labels are written to ``<stage>/pseudo/<split>/label/<index>.npy`` - never into
the dataset's own label folders, and only for frames without a ground-truth label - then a
copy of the manifest records them as ``pseudo`` (``<stage>/manifest.json``) together with the
provenance (``<stage>/pseudo_labels.json``: teacher checkpoint and its SHA-256, tau, counts,
coverage). The label folder is built in a temporary folder renamed into place, so a killed run
leaves no partial set.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_directory, atomic_write_json
from mbmt_ros.runtime.bundle import sha256_file
from mbmt_ros.tasks import IGNORE_INDEX, SEGMENTATION
from training.errors import ConfigError, DataError
from training.progress import progress
from training.stages.common import StageContext, is_rank_zero
from training.stages.data import ensure_dataset, make_dataset, manifest_path

__all__ = ["pseudo_label", "label_batch"]

log = logging.getLogger(__name__)


def label_batch(logits: Any, tau: float, size: tuple[int, int] | None = None) -> tuple[Any, Any]:
    """Class ids ``(N, H, W)`` int16 (-1 below ``tau``) and max softmax confidence from logits.

    ``size`` resamples the probabilities (bilinear) to the label files' resolution first.
    """
    import torch
    import torch.nn.functional as F

    probs = torch.softmax(logits.float(), dim=1)
    if size is not None and tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    conf, ids = probs.max(dim=1)
    ids = torch.where(conf >= tau, ids, torch.full_like(ids, IGNORE_INDEX))
    return ids.to(torch.int16).cpu().numpy(), conf.cpu().numpy()


def _clean_partials(folder: Path) -> None:
    """Remove temporary folders a killed run left behind (``.pseudo.*.partial``)."""
    for stale in folder.glob(".pseudo.*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


def pseudo_label(ctx: StageContext) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from training.data.manifest import open_manifest
    from training.lightning_module import model_inputs
    from training.model_configs import TEACHER_ARCHS
    from training.stages.models import load_stage_model

    opts = ctx.spec.options
    task, tau = opts["task"], float(opts["tau"])
    if task != SEGMENTATION:
        raise ConfigError(f"stage '{ctx.spec.name}': pseudo labels are made for segmentation "
                          f"(confidence = softmax), not {task!r}")
    teacher_path = ctx.run.require_model(opts["teacher"], f"stage '{ctx.spec.name}'")
    teacher = load_stage_model(teacher_path, TEACHER_ARCHS, f"stage '{ctx.spec.name}'")
    modality = teacher.config["extra_modality"]
    if task not in teacher.tasks:
        raise ConfigError(f"the teacher {teacher_path} does not predict {task} "
                          f"(its tasks: {list(teacher.tasks)})")
    root = ensure_dataset(ctx.config, ctx.run)
    source = manifest_path(ctx.config, ctx.run, opts.get("manifest"))
    manifest = open_manifest(root, source)
    if manifest.num_classes != teacher.num_classes:
        raise DataError(f"mismatched class counts: teacher {teacher_path} has "
                        f"{teacher.num_classes} classes, manifest {source} {manifest.num_classes}")
    split = ctx.config.data["train_split"]

    def wanted(entry: Any) -> bool:
        return entry.has(modality) and not entry.has(task)

    targets = [e for e in manifest.entries(split) if wanted(e)]
    out = ctx.dir / "pseudo"
    _clean_partials(ctx.dir)
    counts = {"frames": 0, "pixels": 0, "labelled_pixels": 0}
    per_class = np.zeros(teacher.num_classes, dtype=np.int64)
    if not is_rank_zero():
        return {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = teacher.to(device).eval()
    files: dict[int, str] = {}
    with atomic_directory(out, overwrite=True) as tmp:
        label_dir = tmp / split / "label"
        label_dir.mkdir(parents=True)
        if targets:
            ds = make_dataset(root, split, source, ctx.config.data["input_size"], keep=wanted)
            loader = DataLoader(ds, batch_size=int(ctx.train["batch_size"]), shuffle=False)
            with torch.inference_mode():
                for batch in progress(loader, desc="pseudo-label", unit="batch"):
                    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
                    logits = teacher(*model_inputs(teacher, batch))[task]
                    size = _label_size(root, split, batch["index"])
                    ids, _ = label_batch(logits, tau, size)
                    for index, label in zip(batch["index"].tolist(), ids, strict=True):
                        np.save(label_dir / f"{index}.npy", label, allow_pickle=False)
                        files[int(index)] = f"{split}/label/{index}.npy"
                        counts["frames"] += 1
                        counts["pixels"] += int(label.size)
                        valid = label[label >= 0]
                        counts["labelled_pixels"] += int(valid.size)
                        per_class += np.bincount(valid, minlength=teacher.num_classes)[
                            :teacher.num_classes]
    for index, rel in files.items():
        manifest.set_label(split, index, task, "pseudo", path=_relative_to_root(root, out / rel))
    coverage = counts["labelled_pixels"] / counts["pixels"] if counts["pixels"] else 0.0
    provenance = {
        "teacher_checkpoint": str(teacher_path), "teacher_sha256": sha256_file(teacher_path),
        "teacher_extra_modality": modality, "task": task, "tau": tau,
        "source_manifest": str(source), "split": split, **counts,
        "coverage": coverage, "pixels_per_class": per_class.tolist(),
        "ground_truth_untouched": True,
    }
    manifest.info = {**manifest.info, "pseudo_labels": provenance}
    atomic_write_json(ctx.dir / "pseudo_labels.json", provenance)
    manifest.save(ctx.dir / "manifest.json")
    log.info("%s: %d frames pseudo-labelled at tau=%.2f, coverage %.1f %%", ctx.spec.name,
             counts["frames"], tau, 100 * coverage)
    return {"manifest": str(ctx.dir / "manifest.json"), "frames": counts["frames"],
            "coverage": coverage, "tau": tau, "teacher": str(teacher_path)}


def _label_size(root: Path, split: str, indices: Any) -> tuple[int, int]:
    """Resolution of the dataset's own files (pseudo labels are stored at it)."""
    index = int(indices[0])
    image = np.load(root / split / "image" / f"{index}.npy", mmap_mode="r", allow_pickle=False)
    return int(image.shape[0]), int(image.shape[1])


def _relative_to_root(root: Path, path: Path) -> str:
    """Manifest label paths are relative to the dataset root."""
    return os.path.relpath(path.resolve(), root.resolve())
