"""Atomic file writes: every artefact (checkpoint, dataset file, engine, JSON) is written to a
temporary file in the destination directory and renamed into place, so a crash leaves either
the complete old file, the complete new file, or nothing - never a truncated file."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path",
           "atomic_directory", "remove_stale_temporaries"]


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()  # read once, at import (setting it is process-wide)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a result file gets the usual mode
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it is renamed to ``path``.

    With ``overwrite`` an existing ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite to replace it)")
    _remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_partials(path: Path) -> None:
    """Delete the temporary folders that a killed earlier write of ``path`` left behind."""
    for stale in path.parent.glob(f".{path.name}.*.partial"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete, anywhere under ``folder``, the temporaries that killed writes left behind: the
    ``.<name>.<random>.tmp`` files of :func:`atomic_path` (e.g. a checkpoint whose write was cut
    off) and the ``.<name>.<random>.partial`` folders of :func:`atomic_directory`.

    Only call it when no other process is writing into ``folder`` (in a multi-process job: on
    global rank 0 while the others wait). Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob(".*.*"), key=lambda p: len(p.parts)):
        if path.name.endswith(".partial") and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.endswith(".tmp") and (path.is_file() or path.is_symlink()):
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    return removed
