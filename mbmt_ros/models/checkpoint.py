"""Model checkpoints: safetensors weights + the model config (and metadata) in its header.

A checkpoint is self-describing: ``load_model(path)`` rebuilds the architecture from the
``model_config`` JSON stored in the safetensors header and loads the weights strictly.
Nothing is unpickled. Header keys: ``format`` (``mbmt_ros.model``), ``format_version``,
``model_config`` (JSON) and ``metadata`` (JSON, free-form: stage, metrics, data, ...).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import atomic_path
from .backbone import Backbone
from .factory import build_model
from .model import backbone_prefix
from .state_dict import load_state_dict_checked, read_state_dict

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_FILENAME", "resolve_checkpoint_path", "save_model",
           "read_checkpoint_header", "read_checkpoint_config", "read_checkpoint_metadata",
           "load_weights", "load_model", "load_backbone_weights"]

CHECKPOINT_FORMAT = "mbmt_ros.model"
_FORMAT_VERSION = "1"
#: File name of a stage's final weights inside its folder.
CHECKPOINT_FILENAME = "model.safetensors"


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``path/model.safetensors`` if ``path`` is a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILENAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (give a model.safetensors "
                              "file or the stage folder holding one)")
    return path


def save_model(path: str | os.PathLike[str], model: nn.Module,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights, config and ``metadata`` atomically to ``path``."""
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if not config:
        raise CheckpointError("the model has no .config; build it with build_model() to save it")
    try:
        header = {"format": CHECKPOINT_FORMAT, "format_version": _FORMAT_VERSION,
                  "model_config": json.dumps(config, sort_keys=True),
                  "metadata": json.dumps(metadata or {}, sort_keys=True)}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"model config or metadata for {path} is not JSON-serialisable: {exc}"
                              ) from exc
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_checkpoint_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors header metadata of a model checkpoint (validated)."""
    from safetensors import safe_open

    path = resolve_checkpoint_path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as exc:  # safetensors raises several unrelated types
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); "
                              "it may be truncated or corrupt - re-create it") from exc
    if header.get("format") != CHECKPOINT_FORMAT or "model_config" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not an mbmt_ros model "
                              "checkpoint (no model_config in its header); save it with "
                              "mbmt_ros.models.save_model")
    return header


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model config stored in a checkpoint (``build_model`` rebuilds the model)."""
    header = read_checkpoint_header(path)
    try:
        config = json.loads(header["model_config"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: model_config in the header is not valid JSON") from exc
    if not isinstance(config, dict) or "arch" not in config:
        raise CheckpointError(f"{path}: model_config has no 'arch'")
    return config


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The free-form metadata saved with the model (``{}`` if none)."""
    try:
        return json.loads(read_checkpoint_header(path).get("metadata", "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata in the header is not valid JSON") from exc


def load_weights(model: nn.Module, path: str | os.PathLike[str],
                 map_location: str | torch.device = "cpu") -> None:
    """Load a checkpoint's weights into an existing ``model`` (strict; errors name keys)."""
    path = resolve_checkpoint_path(path)
    own_arch = getattr(model, "config", {}).get("arch")
    file_arch = read_checkpoint_config(path)["arch"]
    if own_arch is not None and own_arch != file_arch:
        raise CheckpointError(f"checkpoint {path} holds a {file_arch!r} model, not the "
                              f"{own_arch!r} model it is being loaded into")
    load_state_dict_checked(model, read_state_dict(path, map_location), f"checkpoint {path}")


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
               expected_arch: str | None = None) -> nn.Module:
    """Rebuild the model stored at ``path`` and load its weights (eval mode)."""
    path = resolve_checkpoint_path(path)
    config = read_checkpoint_config(path)
    if expected_arch is not None and config["arch"] != expected_arch:
        raise CheckpointError(f"checkpoint {path} holds a {config['arch']!r} model but a "
                              f"{expected_arch!r} model is needed here")
    model = build_model(config, load_weights=False)
    load_state_dict_checked(model, read_state_dict(path, map_location), f"checkpoint {path}")
    return model.to(map_location).eval()


def _checkpoint_backbones(config: dict[str, Any]) -> list[str]:
    if isinstance(config.get("backbones"), list):
        return list(config["backbones"])
    if isinstance(config.get("backbone"), str):
        return [config["backbone"]]
    return []


def load_backbone_weights(backbone: Backbone, path: str | os.PathLike[str],
                          index: int | None = None) -> None:
    """Copy backbone ``index`` of checkpoint ``path`` (e.g. an ST net) into ``backbone``.

    Without ``index`` the checkpoint must hold exactly one backbone named like
    ``backbone`` or that name at a unique position. Mismatching backbone names or
    weights raise a ``CheckpointError`` naming the file.
    """
    path = resolve_checkpoint_path(path)
    names = _checkpoint_backbones(read_checkpoint_config(path))
    if index is None:
        matches = [i for i, n in enumerate(names) if n == backbone.name]
        if len(names) == 1:
            index = 0
        elif len(matches) == 1:
            index = matches[0]
        else:
            raise CheckpointError(
                f"checkpoint {path} has backbones {names}; cannot pick one for a "
                f"{backbone.name!r} backbone (pass index or use a single-task checkpoint)")
    if index >= len(names) or names[index] != backbone.name:
        found = names[index] if index < len(names) else None
        raise CheckpointError(
            f"checkpoint {path} has backbone {found!r} at position {index} but the model "
            f"expects {backbone.name!r}; use a checkpoint of the same backbone")
    prefix = backbone_prefix(index)
    state = {k[len(prefix):]: v for k, v in read_state_dict(path).items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"checkpoint {path} has no weights under {prefix!r}")
    load_state_dict_checked(backbone.body, state, f"backbone {index} of checkpoint {path}")
