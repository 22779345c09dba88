"""The model bundle: a directory with ``model.onnx``, ``meta.json`` and ``weights.safetensors``.

:class:`Bundle` loads and validates ``meta.json`` (schema version, tasks, classes, input
size, file checksums) so that every backend starts from the same checked description of the
model. See ``docs/deployment.md`` for the format. Importing this module never imports torch.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbmt_ros.runtime.errors import BundleError, SchemaVersionError
from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION, TASKS

__all__ = [
    "SCHEMA_VERSION", "MODEL_FILE", "MODEL_FP16_FILE", "MODEL_INT8_FILE", "META_FILE",
    "WEIGHTS_FILE", "ENGINE_DIR", "REFERENCE_FILE", "OUTPUT_NAMES", "INPUT_NAME", "Bundle", "output_names", "sha256_file",
]

#: Version of the ``meta.json`` layout; bumped on any incompatible change.
SCHEMA_VERSION = 1
MODEL_FILE = "model.onnx"
#: Optional FP16 graph (same I/O as ``model.onnx``) for strongly typed TensorRT builds.
MODEL_FP16_FILE = "model_fp16.onnx"
#: Optional INT8 graph (ONNX QDQ, same I/O as ``model.onnx``) written by ``mbmt-train quantize``;
#: its calibration set and measured accuracy delta are in ``meta["quantization"]["int8"]``.
MODEL_INT8_FILE = "model_int8.onnx"
META_FILE = "meta.json"
#: Optional reference set (frames + FP32 outputs) for ``mbmt-engine verify`` and the node's
#: configure-time check (:mod:`mbmt_ros.runtime.verify`); listed with its checksum in meta.
REFERENCE_FILE = "reference.npz"
WEIGHTS_FILE = "weights.safetensors"
#: Sub-directory of the bundle holding the TensorRT engine cache.
ENGINE_DIR = "engines"
INPUT_NAME = "image"
SEGMENTATION_CONFIDENCE = "segmentation_confidence"
#: Graph outputs per task, in the fixed bundle order.
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    SEGMENTATION: (SEGMENTATION, SEGMENTATION_CONFIDENCE),
    DEPTH: (DEPTH,),
    NORMALS: (NORMALS,),
}

_REQUIRED_KEYS = ("schema_version", "tasks", "input_size", "files")


def output_names(tasks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The ONNX output names for ``tasks``, in the fixed order of the bundle contract."""
    return tuple(name for task in TASKS if task in tasks for name in OUTPUT_NAMES[task])


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks (models can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A validated model bundle directory.

    Use :meth:`load`; the attributes mirror ``meta.json``. ``meta`` holds the whole file
    (provenance, parity report...) for tools that want more than the runtime needs.
    """

    path: Path
    tasks: tuple[str, ...]
    input_size: tuple[int, int]
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    model_sha256: str
    dynamic_batch: bool
    meta: dict[str, Any] = field(repr=False, compare=False)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def fp16_model_path(self) -> Path | None:
        """``model_fp16.onnx`` when the bundle has one, else ``None``."""
        return self.path / MODEL_FP16_FILE if MODEL_FP16_FILE in self.meta["files"] else None

    @property
    def int8_model_path(self) -> Path | None:
        """``model_int8.onnx`` (``mbmt-train quantize``) when the bundle has one, else ``None``."""
        return self.path / MODEL_INT8_FILE if MODEL_INT8_FILE in self.meta["files"] else None

    @property
    def reference_path(self) -> Path | None:
        """``reference.npz`` when the bundle has one (listed in meta.json), else ``None``."""
        return self.path / REFERENCE_FILE if REFERENCE_FILE in self.meta["files"] else None

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def engine_dir(self) -> Path:
        return self.path / ENGINE_DIR

    @property
    def output_names(self) -> tuple[str, ...]:
        return output_names(self.tasks)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def model_config(self) -> dict[str, Any] | None:
        """The model's config (``build_model`` input) for the torch backend, if recorded."""
        return self.meta.get("model_config")

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify_checksums: bool = False) -> Bundle:
        """Read and validate ``path/meta.json``; check that the bundle's files exist.

        With ``verify_checksums`` every listed file's SHA-256 is recomputed (slow for large
        models; ``mbmt-engine info`` and engine builds use it).
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"model bundle {root} is not a directory; pass the folder that "
                              f"`mbmt-train export --out` wrote")
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise BundleError(f"{meta_path} is missing: {root} is not a complete model bundle; "
                              f"re-run `mbmt-train export`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{meta_path} is corrupt ({exc}); re-run `mbmt-train export`") \
                from exc
        if not isinstance(meta, dict):
            raise BundleError(f"{meta_path} must hold a JSON object; re-run `mbmt-train export`")
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{meta_path} has schema version {version!r} but this mbmt_ros reads version "
                f"{SCHEMA_VERSION}; re-export the bundle with this mbmt_ros version "
                f"(`mbmt-train export`) or install the mbmt_ros version that wrote it")
        missing = [k for k in _REQUIRED_KEYS if k not in meta]
        if missing:
            raise BundleError(f"{meta_path} lacks the key(s) {missing}; re-run `mbmt-train export`")
        bundle = cls(
            path=root,
            tasks=_tasks(meta, meta_path),
            input_size=_input_size(meta, meta_path),
            class_names=tuple(str(c) for c in meta.get("class_names", [])),
            palette=tuple(tuple(int(v) for v in c) for c in meta.get("palette", [])),
            model_sha256=str(meta["files"].get(MODEL_FILE, {}).get("sha256", "")),
            dynamic_batch=bool(meta.get("dynamic_batch", True)),
            meta=meta,
        )
        bundle._check_files(verify_checksums)
        if SEGMENTATION in bundle.tasks and len(bundle.palette) != bundle.num_classes:
            raise BundleError(f"{meta_path}: {bundle.num_classes} class names but "
                              f"{len(bundle.palette)} palette colours; re-run `mbmt-train export`")
        return bundle

    def verify(self) -> None:
        """Recompute every file's SHA-256 and compare it with ``meta.json``."""
        self._check_files(verify_checksums=True)

    def _check_files(self, verify_checksums: bool) -> None:
        files = self.meta["files"]
        if MODEL_FILE not in files or "sha256" not in files[MODEL_FILE]:
            raise BundleError(f"{self.path / META_FILE} does not list {MODEL_FILE} with its "
                              f"sha256; re-run `mbmt-train export`")
        for name, info in files.items():
            file = self.path / name
            if not file.is_file():
                raise BundleError(f"{file} is missing from the model bundle; copy the whole "
                                  f"bundle folder or re-run `mbmt-train export`")
            if "size" in info and file.stat().st_size != info["size"]:
                raise BundleError(f"{file} is {file.stat().st_size} bytes but meta.json says "
                                  f"{info['size']}: the file is truncated or corrupt; copy it "
                                  f"again or re-run `mbmt-train export`")
            if verify_checksums and sha256_file(file) != info.get("sha256"):
                raise BundleError(f"{file} does not match its sha256 in meta.json: the file is "
                                  f"corrupt; copy it again or re-run `mbmt-train export`")


def _tasks(meta: dict[str, Any], meta_path: Path) -> tuple[str, ...]:
    tasks = meta["tasks"]
    if (not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks)):
        raise BundleError(f"{meta_path}: tasks must be a non-empty list drawn from "
                          f"{list(TASKS)}, got {tasks!r}")
    return tuple(t for t in TASKS if t in tasks)


def _input_size(meta: dict[str, Any], meta_path: Path) -> tuple[int, int]:
    size = meta["input_size"]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and v > 0 for v in size)):
        raise BundleError(f"{meta_path}: input_size must be [height, width] positive "
                          f"integers, got {size!r}")
    return int(size[0]), int(size[1])
