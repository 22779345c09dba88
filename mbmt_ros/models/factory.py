"""Build any registered architecture from the ``model:`` section of a config.

Architectures register a builder and their own config keys with defaults
(:func:`register_model`) when :mod:`mbmt_ros.models` is imported (timm's way: this registry
is a leaf that imports no architecture, so nothing here can form an import cycle); :func:`build_model` merges the defaults, rejects unknown keys
and invalid common values with a :class:`~mbmt_ros.errors.ModelConfigError`, calls the
builder and attaches the resolved config as ``model.config`` so that
``build_model(model.config)`` rebuilds the same architecture.

Keys common to every architecture (see ``docs/models.md``): ``arch``, ``tasks``,
``num_classes``, ``fpn_channels``, ``head_channels``, ``task_hidden_channels``.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ModelConfigError
from ..tasks import TASKS, validate_tasks

__all__ = ["COMMON_DEFAULTS", "ModelBuilder", "register_model", "available_models",
           "model_config_keys", "resolve_model_config", "build_model"]

#: Keys every architecture accepts, with their defaults.
COMMON_DEFAULTS: dict[str, Any] = {
    "tasks": list(TASKS),
    "num_classes": 13,
    "fpn_channels": 256,
    "head_channels": 128,
    "task_hidden_channels": 256,
}

#: ``builder(resolved_config, load_weights) -> nn.Module``
ModelBuilder = Callable[[dict[str, Any], bool], nn.Module]


@dataclass(frozen=True)
class _Entry:
    builder: ModelBuilder
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, defaults: Mapping[str, Any] | None = None,
                   description: str = "") -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder`` as architecture ``name`` (``arch: name``).

    ``defaults`` are the architecture's own config keys (beyond ``COMMON_DEFAULTS``);
    any other key in a config is rejected.
    """
    def decorator(builder: ModelBuilder) -> ModelBuilder:
        _REGISTRY[name] = _Entry(builder, dict(defaults or {}),
                                 description or (builder.__doc__ or "").strip().split("\n")[0])
        return builder
    return decorator


def available_models() -> dict[str, str]:
    """Registered architecture names -> one-line descriptions."""
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


def model_config_keys(arch: str) -> set[str]:
    """The keys a ``model:`` config of architecture ``arch`` accepts (empty if unknown)."""
    entry = _REGISTRY.get(arch)
    return {"arch", *COMMON_DEFAULTS, *entry.defaults} if entry is not None else set()


def _positive_int(cfg: dict[str, Any], key: str) -> None:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"model.{key} must be an integer >= 1, got {value!r}")


def _plain(value: Any) -> Any:
    """A JSON-friendly deep copy: paths become strings, tuples lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def resolve_model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults merged, unknown keys rejected, common values validated; returns a new dict."""
    if not isinstance(cfg, Mapping):
        raise ModelConfigError(f"the model config must be a mapping, got {type(cfg).__name__}")
    arch = cfg.get("arch")
    if arch not in _REGISTRY:
        raise ModelConfigError(
            f"unknown model arch {arch!r}; available: {sorted(_REGISTRY)} (set model.arch)")
    entry = _REGISTRY[arch]
    allowed = {"arch", *COMMON_DEFAULTS, *entry.defaults}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ModelConfigError(
            f"unknown key(s) {unknown} in the {arch!r} model config; allowed keys: "
            f"{sorted(allowed)} (see docs/models.md)")
    resolved = {"arch": arch, **copy.deepcopy(COMMON_DEFAULTS),
                **copy.deepcopy(entry.defaults), **{k: _plain(v) for k, v in cfg.items()}}
    try:
        resolved["tasks"] = list(validate_tasks(resolved["tasks"]))
    except ValueError as exc:
        raise ModelConfigError(f"model.tasks: {exc}") from exc
    for key in ("num_classes", "fpn_channels", "head_channels", "task_hidden_channels"):
        _positive_int(resolved, key)
    return resolved


def build_model(cfg: Mapping[str, Any], *, load_weights: bool = True) -> nn.Module:
    """Build the architecture ``cfg["arch"]`` from a ``model:`` config mapping.

    With ``load_weights=False`` referenced weight files (``pretrained``,
    ``backbone_checkpoints``) are not read - used when a checkpoint supplies all weights.
    """
    resolved = resolve_model_config(cfg)
    model = _REGISTRY[resolved["arch"]].builder(copy.deepcopy(resolved), load_weights)
    model.config = resolved
    return model
