"""ImageNet-pretrained backbones through timm's own download and cache (``pretrained: imagenet``).

``model.pretrained`` is ``null`` (random weights), a local weight file, or ``imagenet``: timm's
default pretrained weights for that backbone, fetched by timm exactly as
``timm.create_model(name, pretrained=True)`` does - from the Hugging Face Hub into its cache
(``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` forbids downloads), or for the few
models without a Hub copy from their URL into torch's cache (``TORCH_HOME``).

:func:`check_imagenet_weights` runs before any training stage starts: offline without cached
weights it raises one line naming the cache folder and the local-file alternative, rather
than failing inside a stage.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelConfigError

__all__ = ["IMAGENET", "timm_weight_kwargs", "weights_cache_dir", "imagenet_weights_cached",
           "check_imagenet_weights", "is_offline"]

IMAGENET = "imagenet"
_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader fetches
_TRUE = {"1", "on", "yes", "true"}


def timm_weight_kwargs(pretrained: Any, overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """``timm.create_model`` keyword arguments for ``pretrained``: timm's own pretrained
    loading for ``imagenet`` (``overlay`` is timm's ``pretrained_cfg_overlay``, e.g.
    ``{"file": path}``), no weights otherwise (local files are loaded after building)."""
    if pretrained != IMAGENET:
        return {"pretrained": False}
    kwargs: dict[str, Any] = {"pretrained": True}
    if overlay:
        kwargs["pretrained_cfg_overlay"] = dict(overlay)
    return kwargs


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (as the Hugging Face Hub reads it) is set."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _source(name: str) -> tuple[str | None, str | None]:
    """(Hub repo id, URL) timm loads ``name``'s default pretrained weights from."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ModelConfigError(
            f"timm has no pretrained weights for backbone {name!r}; set model.pretrained to a "
            "local weight file or null")
    return cfg.hf_hub_id or None, cfg.url or None


def weights_cache_dir(name: str) -> Path:
    """Where timm caches ``name``'s ImageNet weights (the Hub cache, or torch's for URLs)."""
    repo, _ = _source(name)
    if repo:
        explicit = os.environ.get("HF_HUB_CACHE")
        if explicit:
            return Path(explicit).expanduser()
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
        return Path(home).expanduser() / "hub"
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weights_cached(name: str) -> bool:
    """Are ``name``'s ImageNet weights already in the cache timm reads?"""
    repo, url = _source(name)
    cache = weights_cache_dir(name)
    if repo:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = repo.partition("@")
        return any(isinstance(try_to_load_from_cache(repo_id, f, cache_dir=cache,
                                                     revision=revision or None), str)
                   for f in _HF_FILES)
    return (cache / os.path.basename(str(url).split("?")[0])).is_file()


def check_imagenet_weights(names: list[str]) -> None:
    """Raise ModelConfigError (one line) when a backbone's ImageNet weights are neither cached
    nor downloadable because the Hub is offline (``HF_HUB_OFFLINE``)."""
    for name in dict.fromkeys(names):
        if imagenet_weights_cached(name) or not is_offline():
            continue
        raise ModelConfigError(
            f"model.pretrained: imagenet: the ImageNet weights of {name!r} are not in the cache "
            f"{weights_cache_dir(name)} and HF_HUB_OFFLINE is set; run once online (or set "
            "HF_HOME / HF_HUB_CACHE to a cache that holds them), or set model.pretrained to a "
            "local weight file")
