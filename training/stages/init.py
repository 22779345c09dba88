"""``init:``: start a stage's model from another run's weights (transfer from a source domain).

A training stage (``pretrain-st``, ``train-mt``, ``train-teacher``, ``train-student``) may name
``init:`` - a model file, or the folder of a finished stage of another run (its
``model.safetensors``; for ``pretrain-st`` the folder holds ``<task>/model.safetensors``, one
per single-task net). It is how a study pretrains on the shifted synthetic source domain
(``data.synth.domain: source``) and fine-tunes on the target, as ImageNet weights are used for
real data (issue 19; ``config/train/study_source.yaml`` -> ``study_target.yaml``).

Every tensor whose name and shape match is copied; the others keep their fresh initialisation
(e.g. the normals head when a segmentation+depth student starts from a three-task MT-Net, or
the depth branch of a teacher started from an RGB net). The first backbone must be copied
completely: a checkpoint of another backbone is an error, never a silent cold start. The
stage's fingerprint includes the SHA-256 of the files it starts from (:func:`init_identity`),
so a re-trained source invalidates the stages that started from it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mbmt_ros.runtime.bundle import sha256_file
from training.errors import CheckpointError
from training.run_dir import MODEL_FILE

__all__ = ["init_file", "init_model", "init_identity", "INIT_KINDS"]

log = logging.getLogger(__name__)

#: the stage kinds that accept ``init:`` (``assemble``: another run's pretrain-st folder whose
#: ST backbones it fuses, instead of ``from:``)
INIT_KINDS = ("pretrain-st", "assemble", "train-mt", "train-teacher", "train-student")
#: kinds whose ``init:`` is a folder with one ``<task>/model.safetensors`` per task
PER_TASK_KINDS = ("pretrain-st", "assemble")
#: state-dict prefix of the first (RGB) backbone (mbmt_ros.models.model.backbone_prefix(0))
_BACKBONE0 = "encoder.backbones.0."


def init_file(ref: str | Path, task: str | None = None) -> Path:
    """The model file ``init: ref`` names (for one task of ``pretrain-st`` when ``task``)."""
    path = Path(ref)
    if path.is_dir():
        path = path / task / MODEL_FILE if task else path / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(
            f"init: {path} does not exist; run the pipeline that produces it first (for the "
            "study: mbmt-train pipeline --config config/train/study_source.yaml) or fix the "
            "stage's init: path")
    return path


def init_model(model: Any, path: Path, where: str) -> dict[str, Any]:
    """Copy the matching tensors of ``path`` into ``model``; returns what was copied."""
    import torch

    from mbmt_ros.models.state_dict import read_state_dict

    source = read_state_dict(path)
    target = model.state_dict()
    copied = {k: v for k, v in source.items()
              if k in target and tuple(v.shape) == tuple(target[k].shape)}
    backbone = [k for k in target if k.startswith(_BACKBONE0)]
    missing = [k for k in backbone if k not in copied]
    if not copied or missing:
        raise CheckpointError(
            f"{where}: init: {path} does not fit this model: {len(missing)} of {len(backbone)} "
            f"backbone tensors have no match (e.g. {missing[:2]}); start from a checkpoint of "
            "the same backbone")
    with torch.no_grad():
        model.load_state_dict({**target, **copied})
    log.info("%s: %d of %d tensors initialised from %s", where, len(copied), len(target), path)
    return {"init": str(path), "init_sha256": sha256_file(path),
            "init_tensors": [len(copied), len(target)]}


def init_identity(kind: str, ref: str | None, tasks: list[str] | None = None) -> Any:
    """What a stage's fingerprint records of its ``init:``: the SHA-256 of each file it starts
    from (None where one is missing - the stage then fails with a clear error when it runs)."""
    if not ref or kind not in INIT_KINDS:
        return None
    names = tasks if kind in PER_TASK_KINDS else [None]
    out = {}
    for task in names:
        try:
            out[task or "model"] = sha256_file(init_file(ref, task))
        except CheckpointError:
            out[task or "model"] = None
    return out
