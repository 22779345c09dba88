"""Checks that every artefact under a folder is complete and valid (shared by the reliability
tests): each non-hidden file is opened with the reader of its kind - JSON, YAML, safetensors,
Lightning checkpoints (``weights_only``), ``.npy`` / ``.npz`` (no pickles), ONNX (checker),
PNG, rosbag2 - so a truncated file anywhere fails the check and names the file.
Hidden names (``.name.xxx.tmp``, ``.name.xxx.partial``) are in-progress temporaries of the
atomic writers and are not artefacts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

__all__ = ["check_file", "check_tree", "is_hidden"]


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def check_file(path: Path) -> None:
    """Open ``path`` with its kind's reader; raise AssertionError naming it if that fails."""
    name, suffix = path.name, path.suffix
    try:
        if suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif suffix in (".yaml", ".yml"):
            yaml.safe_load(path.read_text(encoding="utf-8"))
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as fh:
                for key in fh.keys():
                    fh.get_tensor(key)
        elif suffix == ".ckpt":
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                for key in z.files:
                    z[key]
        elif suffix == ".onnx":
            import onnx

            onnx.checker.check_model(str(path))
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as img:
                img.load()
        elif suffix in (".md", ".csv", ".log", ".txt"):
            path.read_text(encoding="utf-8")
        elif name == "metadata.yaml" or suffix == ".mcap":
            pass  # checked as a whole bag by check_tree
    except Exception as exc:  # any reader failure means a broken artefact
        raise AssertionError(f"{path} is not a complete, valid {suffix or name} file: "
                             f"{type(exc).__name__}: {exc}") from exc


def check_tree(root: Path) -> int:
    """Check every non-hidden file under ``root`` (and every rosbag2 folder); returns the
    number of files checked."""
    count = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or is_hidden(path, root):
            continue
        check_file(path)
        count += 1
        if path.name == "metadata.yaml":
            from rosbags.highlevel import AnyReader

            try:
                from rosbags.typesys import Stores, get_typestore

                store = get_typestore(Stores.LATEST)
                with AnyReader([path.parent], default_typestore=store) as reader:
                    for _ in reader.messages():
                        pass
            except Exception as exc:
                raise AssertionError(f"bag {path.parent} is not readable: {exc}") from exc
    return count
