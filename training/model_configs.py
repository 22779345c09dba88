"""From the pipeline's shared ``model:`` section and a stage to the ``build_model`` config(s)
that stage builds: pure functions of ``(shared, spec)``, below both the config loader (which
checks every stage's model at load time, :mod:`training.config_models`) and the stages (which
build them), so neither needs the other.

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

``spec`` is a :class:`training.config.StageSpec` (only its ``kind``, ``model`` and
``options`` are read).
"""
from __future__ import annotations

from typing import Any

from mbmt_ros.tasks import TASKS

__all__ = ["COMMON_KEYS", "MTI_DECODER_KEYS", "MULTI_BACKBONE_ARCHS", "SINGLE_BACKBONE_ARCHS",
           "TEACHER_ARCHS", "MODEL_STAGE_KINDS", "stage_model_config", "shared_backbones",
           "multitask_arch", "teacher_model_config", "st_tasks", "st_model_configs",
           "stage_model_configs"]

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


def stage_model_config(shared: dict[str, Any], spec: Any, default_arch: str,
                       **fixed: Any) -> dict[str, Any]:
    """The ``build_model`` config of stage ``spec``: shared section -> the stage's ``model:``
    overrides -> ``fixed``."""
    override = dict(spec.model)
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


def multitask_arch(shared: dict[str, Any]) -> str:
    """The architecture ``train-mt`` / ``train-student`` build by default: the shared one if
    it is an RGB multi-task net (``mt``, ``mtinet``, ``mtunet``), otherwise MT-Net."""
    arch = shared.get("arch")
    return arch if arch in _RGB_MULTITASK_ARCHS else "mt"


def teacher_model_config(shared: dict[str, Any], spec: Any) -> dict[str, Any]:
    """A ``train-teacher`` / ``affinity`` teacher: the shared architecture if it is a teacher
    (``mti_teacher``), else the MBMT-style ``teacher``, on the stage's extra modality."""
    modality = spec.model.get("extra_modality", spec.options.get("extra_modality", "depth"))
    default = shared.get("arch") if shared.get("arch") in TEACHER_ARCHS else "teacher"
    return stage_model_config(shared, spec, default, extra_modality=modality)


def st_tasks(shared: dict[str, Any], spec: Any) -> list[str]:
    """The tasks ``pretrain-st`` trains one net for (its ``tasks:`` or the shared ones)."""
    tasks = spec.options.get("tasks") or shared.get("tasks") or list(TASKS)
    return [t for t in TASKS if t in tasks]


def st_model_configs(shared: dict[str, Any], spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(task, model config)`` of each single-task net ``pretrain-st`` trains: task *k* uses
    the shared section's backbone *k* unless the stage names its own ``backbone``."""
    shared_tasks = shared.get("tasks") or list(TASKS)
    backbones = shared_backbones(shared)
    out = []
    for i, task in enumerate(st_tasks(shared, spec)):
        k = shared_tasks.index(task) if task in shared_tasks else i
        cfg = stage_model_config(shared, spec, "st", tasks=[task])
        if "backbone" not in spec.model:
            cfg["backbone"] = backbones[k % len(backbones)]
        cfg.pop("backbones", None)
        out.append((task, cfg))
    return out


#: stage kinds that build a model (``affinity`` builds several; checked like a teacher)
MODEL_STAGE_KINDS = ("pretrain-st", "assemble", "train-mbmt", "train-mt", "train-teacher",
                     "train-student", "affinity")


def stage_model_configs(shared: dict[str, Any], spec: Any) -> list[dict[str, Any]]:
    """The ``build_model`` configs stage ``spec`` will build (empty for stages that build
    none), derived exactly as the stage does."""
    if spec.kind not in MODEL_STAGE_KINDS:
        return []
    if spec.kind == "pretrain-st":
        return [cfg for _, cfg in st_model_configs(shared, spec)]
    if spec.kind in ("assemble", "train-mbmt"):
        return [stage_model_config(shared, spec, "mbmt")]
    if spec.kind in ("train-mt", "train-student"):
        return [stage_model_config(shared, spec, multitask_arch(shared))]
    return [teacher_model_config(shared, spec)]
