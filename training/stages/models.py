"""Per-stage model configs derived from the pipeline's shared ``model:`` section.

The shared section is normally the MBMT-Net (``arch: mbmt``, one backbone per task). A stage
builds its own architecture from it: the ST net of task k uses backbone k; MT-Net, the teachers
and the student use the first backbone; MBMT-Net and MTI-Net (which can decode several fused
backbones) take all of them, and the fusion. Between the MTI-Net family (``mtinet``,
``mti_teacher``) the decoder settings carry over too, so the imbalanced-data paper's students
are its teacher's network without the extra branch. Keys of the shared section that another
architecture does not accept are dropped; the stage's own ``model:`` keys always win.

``train-mt`` and ``train-student`` build MT-Net unless the stage says otherwise - or the shared
section is itself an RGB multi-task architecture (``mtinet``, ``mtunet``), which they then
train: the architecture is chosen by config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from training.errors import CheckpointError, DataError
from training.stages.common import StageContext

__all__ = ["COMMON_KEYS", "MTI_DECODER_KEYS", "MULTI_BACKBONE_ARCHS", "SINGLE_BACKBONE_ARCHS",
           "TEACHER_ARCHS", "stage_model_config", "shared_backbones", "multitask_arch",
           "check_num_classes", "load_stage_model"]

COMMON_KEYS = ("tasks", "num_classes", "fpn_channels", "head_channels", "task_hidden_channels")
#: architectures built on one (the first shared) backbone
SINGLE_BACKBONE_ARCHS = ("st", "mt", "teacher", "mti_teacher")
#: architectures that take the list of backbones (fused per scale)
MULTI_BACKBONE_ARCHS = ("mbmt", "mtinet")
#: multi-modal teachers (``forward(image, extra)``), usable by ``pseudo-label``
TEACHER_ARCHS = ("teacher", "mti_teacher")
#: the MTI-Net decoder's keys, shared by ``mtinet`` and ``mti_teacher``
MTI_DECODER_KEYS = ("hrnet_branches", "neck", "task_channels", "aux_tasks", "fpm")
_MTI_FAMILY = ("mtinet", "mti_teacher")
#: shared architectures that ``train-mt`` / ``train-student`` train as they are
_RGB_MULTITASK_ARCHS = ("mt", "mtinet", "mtunet")


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
        if arch in SINGLE_BACKBONE_ARCHS:
            cfg["backbone"] = shared_backbones(shared)[0]
        elif arch in MULTI_BACKBONE_ARCHS:
            cfg["backbones"] = shared_backbones(shared)
            if shared.get("arch") in MULTI_BACKBONE_ARCHS and "fusion" in shared:
                cfg["fusion"] = shared["fusion"]
        if arch in _MTI_FAMILY and shared.get("arch") in _MTI_FAMILY:
            cfg.update({k: shared[k] for k in MTI_DECODER_KEYS if k in shared})
    cfg.update(override)
    cfg.update(fixed)
    cfg["arch"] = arch
    return cfg


def multitask_arch(ctx: StageContext) -> str:
    """The architecture ``train-mt`` / ``train-student`` build by default: the shared one if
    it is an RGB multi-task net (``mt``, ``mtinet``, ``mtunet``), otherwise MT-Net."""
    arch = ctx.config.model.get("arch")
    return arch if arch in _RGB_MULTITASK_ARCHS else "mt"


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
