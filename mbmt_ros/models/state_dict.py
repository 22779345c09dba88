"""Reading weight files without unpickling, and loading them with readable key reports.

Weight files are safetensors (preferred) or PyTorch state dicts read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled code.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["read_state_dict", "load_state_dict_checked", "describe_keys"]


def describe_keys(keys: Iterable[str], limit: int = 8) -> str:
    """``a, b, c ... (+N more)`` - short enough for a one-line error message."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_state_dict(path: str | os.PathLike[str],
                    map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a (weights-only) PyTorch state dict file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {path} does not exist (check the path in the config)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device=str(map_location))
        except Exception as exc:  # safetensors raises several unrelated types
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({exc}); re-create or re-download it"
            ) from exc
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a weights-only PyTorch state dict ({exc}); convert it to "
            "safetensors or save it with torch.save(model.state_dict(), ...)"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def load_state_dict_checked(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                            ignore_unexpected: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module`` strictly; a mismatch raises a ``CheckpointError``.

    Keys starting with one of ``ignore_unexpected`` (e.g. a classifier the module lacks)
    may be present in ``state`` without error. The message names ``source`` and the keys.
    """
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(ignore_unexpected)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {describe_keys(unexpected)}")
    if shape:
        problems.append(f"shape mismatch (file vs model): {describe_keys(shape, 4)}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model ({'; '.join(problems)}); it was probably "
            "saved for a different architecture or configuration"
        )
    module.load_state_dict(state, strict=True)
