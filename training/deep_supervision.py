"""MTI-Net's deep supervision: the losses of its initial (per-scale) predictions.

MTI-Net (:mod:`mbmt_ros.models.mtinet`) returns, with ``forward(image, return_aux=True)``,
an initial prediction of every front-end task at each scale. The paper trains them with the
same losses and weights as the final predictions, plus the auxiliary semantic-edge task:
:func:`deep_supervision_losses` gives those terms, with :func:`edge_loss` for ``edges``
(targets from :func:`semantic_edges`). The network only predicts; its losses live here,
beside the per-task losses of :mod:`training.losses`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mbmt_ros.models.mtinet import EDGES
from mbmt_ros.tasks import IGNORE_INDEX, SEGMENTATION

__all__ = ["semantic_edges", "edge_loss", "deep_supervision_losses"]


def semantic_edges(segmentation: torch.Tensor, ignore_index: int = IGNORE_INDEX
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic-boundary targets from ``(N, H, W)`` class ids: ``(edges, valid)``.

    ``edges`` ``(N, 1, H, W)`` float is 1 where a 4-neighbour has another valid class;
    ``valid`` ``(N, 1, H, W)`` bool is False on void pixels (``ignore_index``).
    """
    seg = segmentation.long()
    valid = seg != ignore_index
    edges = torch.zeros_like(valid)
    for dim in (1, 2):  # neighbour below / to the right, marked on both pixels
        a, b = seg.narrow(dim, 0, seg.shape[dim] - 1), seg.narrow(dim, 1, seg.shape[dim] - 1)
        va, vb = valid.narrow(dim, 0, seg.shape[dim] - 1), valid.narrow(dim, 1, seg.shape[dim] - 1)
        diff = (a != b) & va & vb
        edges.narrow(dim, 0, seg.shape[dim] - 1).logical_or_(diff)
        edges.narrow(dim, 1, seg.shape[dim] - 1).logical_or_(diff)
    return edges.unsqueeze(1).float(), valid.unsqueeze(1)


def edge_loss(logits: torch.Tensor, segmentation: torch.Tensor,
              labelled: torch.Tensor | None = None, pos_weight: float = 0.95
              ) -> torch.Tensor | None:
    """The paper's edge loss: binary cross-entropy with edge pixels weighted ``pos_weight``
    and the others ``1 - pos_weight``, averaged over valid pixels of labelled samples
    (``None`` if there are none). ``logits`` ``(N, 1, H, W)``, ``segmentation`` ``(N, H, W)``.
    """
    if labelled is not None:
        logits, segmentation = logits[labelled], segmentation[labelled]
    target, valid = semantic_edges(segmentation)
    if not bool(valid.any()):
        return None
    weight = torch.where(target > 0.5, pos_weight, 1.0 - pos_weight) * valid
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return loss / valid.sum()


def deep_supervision_losses(
    aux: Sequence[Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
    loss_tasks: Iterable[str], aux_tasks: Iterable[str],
    compute_losses: Callable[..., dict[str, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Losses of MTI-Net's initial predictions (``aux`` of ``forward(..., return_aux=True)``).

    Returns ``(per_task, auxiliary)``: ``per_task`` sums each of ``loss_tasks`` over the
    scales (add it to that task's final loss, so the loss weighting treats both alike, as the
    paper does); ``auxiliary`` is the unweighted sum over scales of the front-end-only tasks
    (``edges`` with :func:`edge_loss`, others with ``compute_losses``), or ``None``.
    ``compute_losses(outputs, batch, tasks)`` is the trainer's per-task loss function
    (``training.losses.compute_losses``); tasks without labelled pixels are skipped.
    """
    loss_tasks, aux_tasks = list(loss_tasks), list(aux_tasks)
    per_task: dict[str, torch.Tensor] = {}
    extra: list[torch.Tensor] = []
    for scale in aux:
        for task, value in compute_losses(scale, batch, loss_tasks).items():
            per_task[task] = per_task[task] + value if task in per_task else value
        for task in aux_tasks:
            if task == EDGES:
                seg = batch.get(SEGMENTATION)
                if seg is None:
                    continue
                flags = batch.get(f"has_{SEGMENTATION}")
                labelled = None if flags is None else torch.as_tensor(
                    flags, device=scale[EDGES].device).reshape(-1).bool()
                value = edge_loss(scale[EDGES], torch.as_tensor(seg, device=scale[EDGES].device),
                                  labelled)
            else:
                value = compute_losses(scale, batch, [task]).get(task)
            if value is not None:
                extra.append(value)
    return per_task, (torch.stack(extra).sum() if extra else None)
