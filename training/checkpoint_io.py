"""Lightning checkpoint I/O that is atomic on save and never unpickles arbitrary objects on load.

Lightning's default writer streams straight into the destination file, so a crash can leave a
truncated ``last.ckpt``; here the checkpoint goes to a temporary file that is renamed into place
(:func:`mbmt_ros.io.atomic_path`). Loading always uses ``torch.load(weights_only=True)``: resume
state is tensors and plain Python containers only, so nothing executable is read from disk.
Each checkpoint also carries the fingerprint of the stage that wrote it
(``training.stages.fingerprint``), so a stage resumes only its own checkpoints.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mbmt_ros.io import atomic_path
from training.errors import CheckpointError

__all__ = ["SafeCheckpointIO", "load_resume_state", "checkpoint_fingerprint",
           "FINGERPRINT_KEY"]

#: the checkpoint entry holding the writing stage's fingerprint
FINGERPRINT_KEY = "mbmt_fingerprint"


def load_resume_state(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a Lightning checkpoint with ``weights_only=True``; a bad file is a CheckpointError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"resume checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"resume checkpoint {path} cannot be read safely ({type(exc).__name__}: {exc}); "
            "delete it to restart the stage from scratch"
        ) from exc


def checkpoint_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """The stage fingerprint a checkpoint was written under (None for one without)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint (mmap needs one): read it whole, or say it is bad
        state = load_resume_state(path)
    value = state.get(FINGERPRINT_KEY) if isinstance(state, dict) else None
    return value if isinstance(value, str) else None


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic ``torch.save`` on save; ``weights_only=True`` on load, whatever the caller asks.

    ``fingerprint`` (the stage's) is stored in every checkpoint it writes.
    """

    def __init__(self, fingerprint: str | None = None) -> None:
        super().__init__()
        self.fingerprint = fingerprint

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if self.fingerprint is not None:
            checkpoint = {**checkpoint, FINGERPRINT_KEY: self.fingerprint}
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_resume_state(path, map_location=map_location or "cpu")
