"""Per-stage model configs derived from the pipeline's shared ``model:`` section.

The shared section is normally the MBMT-Net (``arch: mbmt``, one backbone per task). A stage
builds its own architecture from it: the ST net of task k uses backbone k, MT-Net / teacher /
student use the first backbone unless the stage's ``model:`` overrides name another. Keys of
the shared section that another architecture does not accept are dropped; the stage's own
``model:`` keys always win.
"""
from __future__ import annotations

from typing import Any

from training.errors import DataError
from training.stages.common import StageContext

__all__ = ["COMMON_KEYS", "stage_model_config", "shared_backbones", "check_num_classes"]

COMMON_KEYS = ("tasks", "num_classes", "fpn_channels", "head_channels", "task_hidden_channels")


def shared_backbones(shared: dict[str, Any]) -> list[str]:
    if isinstance(shared.get("backbones"), list) and shared["backbones"]:
        return list(shared["backbones"])
    if isinstance(shared.get("backbone"), str):
        return [shared["backbone"]]
    return ["efficientnet_b2"]


def stage_model_config(ctx: StageContext, default_arch: str,
                       **fixed: Any) -> dict[str, Any]:
    """The ``build_model`` config of this stage: shared section -> stage overrides -> ``fixed``."""
    shared = ctx.config.model
    override = dict(ctx.spec.model)
    arch = override.pop("arch", fixed.pop("arch", default_arch))
    if shared.get("arch") == arch:
        cfg = dict(shared)
    else:
        cfg = {k: shared[k] for k in COMMON_KEYS if k in shared}
        if arch in ("st", "mt", "teacher"):
            cfg["backbone"] = shared_backbones(shared)[0]
        elif arch == "mbmt":
            cfg["backbones"] = shared_backbones(shared)
    cfg.update(override)
    cfg.update(fixed)
    cfg["arch"] = arch
    return cfg


def check_num_classes(model_classes: int, manifest_classes: int, where: str) -> None:
    """Mismatched class counts between a model and the data are a clear error."""
    if int(model_classes) != int(manifest_classes):
        raise DataError(f"mismatched class counts: {where} has {model_classes} segmentation "
                        f"classes but the data's manifest says {manifest_classes}; set "
                        "model.num_classes to the dataset's number of classes")
