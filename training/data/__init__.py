"""Data sources, the Sample type, transforms and label manifests.

Light imports only (NumPy): the torch dataset (:class:`MultiTaskDataset`) loads torch when
first used, so ``mbmt-train synth/extract-bag`` start quickly.
"""
from __future__ import annotations

from typing import Any

from training.data.camera import CAMERA_NAME, CameraIntrinsics
from training.data.layout import SPLITS, Layout, detect_layout, list_indices, load_sample
from training.data.manifest import (
    MANIFEST_NAME,
    Manifest,
    SampleEntry,
    make_imbalanced_split,
    open_manifest,
)
from training.data.normals_from_depth import depth_edge_mask, normals_from_depth
from training.data.sample import GT, PSEUDO, Provenance, Sample
from training.data.writer import DatasetWriter, open_dataset_writer

__all__ = [
    "Sample", "Provenance", "GT", "PSEUDO", "SPLITS", "Layout", "detect_layout", "list_indices",
    "load_sample", "Manifest", "SampleEntry", "MANIFEST_NAME", "make_imbalanced_split", "open_manifest",
    "CameraIntrinsics", "CAMERA_NAME", "normals_from_depth", "depth_edge_mask",
    "DatasetWriter", "open_dataset_writer", "MultiTaskDataset", "default_transform",
    "sample_to_item", "make_loader", "default_num_workers",
]

_LAZY = {"MultiTaskDataset": "dataset", "default_transform": "dataset",
         "sample_to_item": "dataset", "make_loader": "loader", "default_num_workers": "loader"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"training.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
