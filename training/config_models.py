"""Check every model a pipeline will build, before any stage starts.

Each stage derives its own architecture config from the shared ``model:`` section and its own
``model:`` overrides (:func:`training.model_configs.stage_model_config`); a typo that only one
architecture rejects used to surface at that stage - e.g. at ``assemble``, after the
single-task nets had trained. Here the same derivation runs for every stage at load time and
each result goes through the model registry's own check (:func:`resolve_model_config`:
known keys, tasks, channel counts), timm's list of model names for every backbone, and the
architecture's builder itself on the meta device (enums such as ``fusion`` or ``neck``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from training.errors import ConfigError
from training.model_configs import stage_model_configs

__all__ = ["check_models", "check_pretrained", "backbone_names",
           "imagenet_backbones"]

def backbone_names(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, timm name)`` of every backbone a model config names."""
    out = []
    for key in ("backbone", "extra_backbone"):
        if isinstance(cfg.get(key), str):
            out.append((key, cfg[key]))
    if isinstance(cfg.get("backbones"), list):
        out += [("backbones", n) for n in cfg["backbones"]]
    return out


def check_models(shared: dict[str, Any], stages: Sequence[Any],
                 locate: Callable[[str], str]) -> None:
    """Raise ConfigError (one line: where, key, reason) for the first model problem.

    ``locate(dotted key)`` names where the value came from (the file or a ``--set`` flag).
    """
    import timm

    from mbmt_ros.errors import ModelConfigError
    from mbmt_ros.models.factory import available_models, model_config_keys, resolve_model_config

    def at(full: str) -> str:
        return f"{locate(full)}: {full}"

    archs = available_models()
    arch = shared.get("arch")
    if arch is not None and arch not in archs:
        raise ConfigError(f"{at('model.arch')}: unknown architecture {arch!r}; "
                          f"available: {sorted(archs)}")
    allowed = model_config_keys(arch) if arch else set().union(*map(model_config_keys, archs))
    for key in shared:
        if key not in allowed:
            what = f"the {arch!r} architecture" if arch else "any architecture"
            raise ConfigError(f"{at('model.' + key)}: unknown key for {what}; "
                              f"allowed: {sorted(allowed)} (see docs/models.md)")
    for key, name in backbone_names(shared):
        _check_backbone(timm, name, at(f"model.{key}"))
    built: set[str] = set()
    for spec in stages:
        for cfg in stage_model_configs(shared, spec):
            def full(key: str, spec: Any = spec) -> str:
                return at(f"stages.{spec.name}.model.{key}" if key in spec.model
                          else f"model.{key}")

            keys = model_config_keys(cfg.get("arch"))
            if not keys:
                raise ConfigError(f"{full('arch')}: unknown architecture {cfg.get('arch')!r} "
                                  f"(stage '{spec.name}'); available: {sorted(archs)}")
            for key in cfg:
                if key not in keys:
                    raise ConfigError(f"{full(key)}: unknown key for the {cfg['arch']!r} model "
                                      f"of stage '{spec.name}'; allowed: {sorted(keys)}")
            for key, name in backbone_names(cfg):
                _check_backbone(timm, name, full(key))
            try:
                _build_on_meta(resolve_model_config(cfg), built)
            except ModelConfigError as exc:  # name the key the builder refused, if it says
                named = re.search(r"\bmodel\.(\w+)", str(exc))
                key = named.group(1) if named and named.group(1) in cfg else "arch"
                raise ConfigError(f"{full(key)}: stage '{spec.name}': {exc}") from None


def _build_on_meta(cfg: dict[str, Any], built: set[str]) -> None:
    """Run the architecture's own builder - every check it makes (fusion, neck, channel
    lists, ...) - on PyTorch's meta device: no memory, no weights read, no download."""
    import json

    import torch

    from mbmt_ros.models.factory import build_model

    key = json.dumps(cfg, sort_keys=True, default=str)
    if key in built:
        return
    with torch.device("meta"):
        build_model(cfg, load_weights=False)
    built.add(key)


def _check_backbone(timm: Any, name: Any, where: str) -> None:
    if isinstance(name, str) and timm.is_model(name):
        return
    raise ConfigError(f"{where}: unknown backbone {name!r}: not a timm model name (list them "
                      "with `python -c \"import timm; print(timm.list_models('efficientnet*'))\"`)")


def imagenet_backbones(config: Any) -> list[str]:
    """The backbones that some stage of ``config`` starts from ImageNet weights
    (``pretrained: imagenet``; for MTI-Net also a per-backbone list)."""
    from mbmt_ros.models.pretrained import IMAGENET

    names: list[str] = []
    for spec in config.stages:
        for cfg in stage_model_configs(config.model, spec):
            value = cfg.get("pretrained")
            if isinstance(cfg.get("backbone"), str) and value == IMAGENET:
                names.append(cfg["backbone"])
            elif isinstance(cfg.get("backbones"), list):
                marks = value if isinstance(value, list) else [value] * len(cfg["backbones"])
                names += [n for n, v in zip(cfg["backbones"], marks, strict=False)
                          if v == IMAGENET]
    return list(dict.fromkeys(names))


def check_pretrained(config: Any) -> None:
    """Before any stage starts: every ``pretrained: imagenet`` backbone's weights are cached
    or downloadable (not offline); otherwise one ConfigError line naming the cache folder and
    the local-file alternative."""
    names = imagenet_backbones(config)
    if not names:
        return
    from mbmt_ros.errors import ModelConfigError
    from mbmt_ros.models.pretrained import check_imagenet_weights

    try:
        check_imagenet_weights(names)
    except ModelConfigError as exc:
        raise ConfigError(f"{config.path or 'config'}: {exc}") from None
