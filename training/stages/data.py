"""Data for the stages: the dataset folder (generated when the config says ``synth``), label
manifests (the dataset's own, a ``make-split`` stage's, or a ``pseudo-label`` stage's) and the
DataLoaders."""
from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.config import PipelineConfig
from training.errors import ConfigError, DataError
from training.run_dir import RunDir

__all__ = ["dataset_root", "ensure_dataset", "image_size", "manifest_path", "make_dataset", "make_loader",
           "run_cli", "validation_holdout"]

log = logging.getLogger(__name__)


def run_cli(*args: str) -> None:
    """Run another ``mbmt-train`` command in a child process (used for the data commands, whose
    writers are atomic); its failure message is re-raised as a DataError."""
    cmd = [sys.executable, "-m", "training.cli", *args]
    log.info("running %s", " ".join(cmd[2:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise DataError(f"'mbmt-train {' '.join(args)}' failed: "
                        f"{detail[-1] if detail else 'exit code ' + str(proc.returncode)}")


def dataset_root(config: PipelineConfig, run: RunDir) -> Path:
    """``data.root`` if given, else ``<run dir>/data`` (where ``synth`` generates it)."""
    root = config.data.get("root")
    return Path(root) if root else run.root / "data"


def ensure_dataset(config: PipelineConfig, run: RunDir) -> Path:
    """The dataset folder, generating it with ``mbmt-train synth`` when the config asks for
    synthetic data and it does not exist yet (the writer renames a complete folder into place,
    so an existing folder is complete). Only global rank 0 generates it."""
    root = dataset_root(config, run)
    if (root / "manifest.json").is_file():
        return root
    synth = config.data.get("synth")
    if synth is None:
        if root.is_dir():
            return root
        raise DataError(f"dataset folder {root} does not exist; fix data.root in "
                        f"{config.path or 'the config'} or add a data.synth section")
    from training.distributed import rank_info

    rank = rank_info(config.train)
    if not rank.is_zero:  # only rank 0 writes it (run_stage), before the others read it
        raise DataError(f"rank {rank.global_rank}: the synthetic dataset {root} is missing; "
                        "global rank 0 generates it - is the run folder on a file system "
                        "that every node shares?")
    size = synth.get("size", [64, 80])
    args = ["synth", "--out", str(root), "--count", str(synth["count"]),
            "--size", str(size[0]), str(size[1]), "--seed", str(synth.get("seed", config.seed))]
    if "val_fraction" in synth:
        args += ["--val-fraction", str(synth["val_fraction"])]
    if synth.get("domain"):
        args += ["--domain", str(synth["domain"])]
    run_cli(*args)
    return root


def image_size(root: Path, split: str = "train") -> tuple[int, int]:
    """(H, W) of the dataset's image files (the first one of ``split``)."""
    import numpy as np

    folder = root / split / "image"
    first = next(iter(sorted(folder.glob("*.npy"))), None)
    if first is None:
        raise DataError(f"{folder} holds no image files")
    shape = np.load(first, mmap_mode="r", allow_pickle=False).shape
    return int(shape[0]), int(shape[1])


def manifest_path(config: PipelineConfig, run: RunDir, ref: str | None) -> Path:
    """Resolve a stage's ``manifest:`` option: an earlier stage's manifest, a file, or (None)
    ``data.manifest`` / the dataset's own ``manifest.json``."""
    if ref is None:
        ref = config.data.get("manifest")
        if ref is None:
            return dataset_root(config, run) / "manifest.json"
    if any(s.name == ref for s in config.stages):
        path = run.stage_dir(ref, create=False) / "manifest.json"
        if not run.is_done(ref) or not path.is_file():
            raise ConfigError(f"the manifest of stage '{ref}' ({path}) is missing; run that "
                              "stage first")
        return path
    path = Path(ref)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist (manifest: must name a make-split or "
                        "pseudo-label stage or a manifest file)")
    return path


def validation_holdout(config: PipelineConfig, run: RunDir) -> set[int]:
    """The training frames ``data.val_from_train`` holds out for validation (empty when 0).

    Drawn from the dataset's own manifest (or its layout) with the config's seed, so every
    stage holds out the same frames; training stages validate on them instead of
    ``data.val_split`` (NYUv2's official test split), and ``make-split`` never picks them.
    """
    fraction = float(config.data.get("val_from_train") or 0.0)
    if fraction <= 0.0:
        return set()
    from training.data.manifest import holdout_indices, open_manifest

    root = ensure_dataset(config, run)
    return holdout_indices(open_manifest(root, config.data.get("manifest")), fraction,
                           config.seed, config.data["train_split"])


def make_dataset(root: Path, split: str, manifest: Path, input_size: Any = None,
                 augment: bool = False, keep: Callable[[Any], bool] | None = None) -> Any:
    """The contract dataset (docs/architecture.md "Data") of ``split`` honouring ``manifest``.

    ``keep(entry)`` optionally restricts it to manifest entries for which it is true (the
    teacher trains only on samples that carry both its input and its target labels).
    """
    from training.data.dataset import MultiTaskDataset, default_transform

    transform = default_transform(train=augment, size=tuple(input_size) if input_size else None,
                                  flip=augment)
    ds = MultiTaskDataset(root, split=split, manifest=manifest, transform=transform)
    if keep is not None:
        import torch.utils.data as tud

        chosen = [i for i, entry in enumerate(ds.entries) if keep(entry)]
        if not chosen:
            raise DataError(f"no {split} sample of {manifest} has the labels this stage needs")
        ds = tud.Subset(ds, chosen)
    if len(ds) == 0:
        raise DataError(f"the {split} split of {root} (manifest {manifest}) has no samples")
    return ds


def make_loader(dataset: Any, train: dict[str, Any], shuffle: bool, seed: int) -> Any:
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = int(train["num_workers"])
    return DataLoader(dataset, batch_size=int(train["batch_size"]), shuffle=shuffle,
                      num_workers=workers, generator=generator, drop_last=False,
                      persistent_workers=workers > 0)
