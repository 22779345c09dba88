"""Loading stage models and checking them against the data. The per-stage model configs
themselves are derived in :mod:`training.model_configs`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from training.errors import CheckpointError, DataError

__all__ = ["check_num_classes", "load_stage_model"]


def load_stage_model(path: Path, archs: tuple[str, ...], where: str) -> Any:
    """``load_model(path)`` after checking that it holds one of ``archs`` (a CheckpointError
    naming the file, its architecture and the accepted ones otherwise)."""
    from mbmt_ros.models import load_model, read_checkpoint_config

    arch = read_checkpoint_config(path).get("arch")
    if arch not in archs:
        raise CheckpointError(f"{where}: checkpoint {path} holds a {arch!r} model but one of "
                              f"{list(archs)} is needed here")
    return load_model(path)


def check_num_classes(model_classes: int, manifest_classes: int, where: str) -> None:
    """Mismatched class counts between a model and the data are a clear error."""
    if int(model_classes) != int(manifest_classes):
        raise DataError(f"mismatched class counts: {where} has {model_classes} segmentation "
                        f"classes but the data's manifest says {manifest_classes}; set "
                        "model.num_classes to the dataset's number of classes")
