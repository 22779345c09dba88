"""Per-task training losses over valid pixels of labelled samples only.

One function per task plus :func:`compute_losses`, which the trainer calls once per step.
Each loss is the mean over the *valid pixels of the samples that carry that label*
(``has_<task>`` in the batch, see ``docs/architecture.md`` "Data"): a sample without a
segmentation label adds neither pixels nor zeros to the segmentation mean.

Contract for missing labels: when no sample of the batch carries a task's label, or none
of their pixels is valid, the task is **omitted** from the returned dict (no key), so it
never enters loss weighting (``training.weighting`` skips tasks missing from a step).

Validity (the same masks as the metrics, ``training.metrics``):

- segmentation: target ``!= -1`` (``IGNORE_INDEX``); cross-entropy on the logits;
- depth: target ``> 0`` and finite; L1 on metres;
- normals: target not the zero vector (and finite); ``1 - cos(pred, target)``, both
  vectors normalised first, so the loss is ``1 -`` the dot product of unit vectors.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F

from mbmt_ros.tasks import DEPTH, IGNORE_INDEX, NORMALS, SEGMENTATION, TASKS
from training.errors import TrainingError

__all__ = [
    "segmentation_loss", "depth_loss", "normals_loss", "compute_losses", "LOSS_FUNCTIONS",
    "labelled_mask",
]


def labelled_mask(batch: Mapping[str, object], task: str, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """``(N,)`` bool: which samples carry ``task``'s label (``has_<task>``; all if absent)."""
    flags = batch.get(f"has_{task}")
    if flags is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    flags = torch.as_tensor(flags, device=device).reshape(-1).to(torch.bool)
    if flags.numel() != batch_size:
        raise TrainingError(
            f"has_{task} has {flags.numel()} entries but the batch has {batch_size} samples"
        )
    return flags


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                      labelled: torch.Tensor | None = None) -> torch.Tensor | None:
    """Cross-entropy of ``(N, C, H, W)`` logits against ``(N, H, W)`` ids (-1 ignored).

    Returns the mean over valid pixels of labelled samples, or ``None`` if there are none.
    """
    target = target.long()
    if labelled is not None:
        logits, target = logits[labelled], target[labelled]
    valid = target != IGNORE_INDEX
    count = int(valid.sum())
    if count == 0:
        return None
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / count


def depth_loss(pred: torch.Tensor, target: torch.Tensor,
               labelled: torch.Tensor | None = None) -> torch.Tensor | None:
    """L1 between ``(N, 1, H, W)`` predicted and target metres over ``target > 0``, finite.

    Returns the mean over valid pixels of labelled samples, or ``None`` if there are none.
    """
    if labelled is not None:
        pred, target = pred[labelled], target[labelled]
    target = target.reshape(pred.shape)
    valid = torch.isfinite(target) & (target > 0)
    if not bool(valid.any()):
        return None
    return (pred[valid] - target[valid]).abs().mean()


def normals_loss(pred: torch.Tensor, target: torch.Tensor,
                 labelled: torch.Tensor | None = None) -> torch.Tensor | None:
    """``1 - cos`` between ``(N, 3, H, W)`` normals over pixels whose target is non-zero.

    Returns the mean over valid pixels of labelled samples, or ``None`` if there are none.
    """
    if labelled is not None:
        pred, target = pred[labelled], target[labelled]
    valid = torch.isfinite(target).all(dim=1) & (target != 0).any(dim=1)
    if not bool(valid.any()):
        return None
    # (N, 3, H, W) -> (P, 3) rows of the valid pixels
    p = pred.permute(0, 2, 3, 1)[valid]
    g = target.permute(0, 2, 3, 1)[valid]
    cos = (F.normalize(p, dim=1) * F.normalize(g, dim=1)).sum(dim=1)
    return (1.0 - cos).mean()


#: task -> loss function ``(pred, target, labelled) -> Tensor | None``.
LOSS_FUNCTIONS = {
    SEGMENTATION: segmentation_loss,
    DEPTH: depth_loss,
    NORMALS: normals_loss,
}


def compute_losses(outputs: Mapping[str, torch.Tensor], batch: Mapping[str, object],
                   tasks: Iterable[str]) -> dict[str, torch.Tensor]:
    """Unweighted loss per task for one batch.

    ``outputs`` is the model's dict (``segmentation`` logits, ``depth``, ``normals``),
    ``batch`` the data loader's dict (targets under the same task names plus the
    ``has_<task>`` flags). Tasks without any labelled, valid pixel in the batch - or whose
    target is not in the batch at all - are omitted from the result.
    """
    losses: dict[str, torch.Tensor] = {}
    for task in tasks:
        if task not in TASKS:
            raise TrainingError(f"unknown task {task!r}; known tasks are {list(TASKS)}")
        if task not in outputs:
            raise TrainingError(
                f"the model gave no {task!r} output (it has {sorted(outputs)}); "
                "check the tasks in the model and training config"
            )
        target = batch.get(task)
        if target is None:
            continue
        pred = outputs[task]
        target = torch.as_tensor(target, device=pred.device)
        labelled = labelled_mask(batch, task, pred.shape[0], pred.device)
        if not bool(labelled.any()):
            continue
        loss = LOSS_FUNCTIONS[task](pred, target, labelled)
        if loss is not None:
            losses[task] = loss
    return losses
