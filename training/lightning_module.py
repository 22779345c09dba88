"""The LightningModule every training stage uses: a model, its losses and a loss weighting.

Architecture-agnostic (LibMTL style): the model comes from ``build_model``, the loss from
``training.losses.compute_losses`` and the weighting from ``make_weighting`` by name, so ST,
MT, MBMT, teacher and student stages differ only in config. The multi-modal teacher gets its
extra input (depth in metres, or a one-hot segmentation) from the batch's labels via
:func:`teacher_extra_input`.

Models with ``deep_supervision = True`` (MTI-Net and the MTI teacher) are asked for their
initial per-scale predictions while training: each task's initial losses are added to its
final loss (same weight, as MTI-Net trains them) and the front-end-only auxiliary tasks
(``edges``) add their unweighted sum. A weighting with an ``lr`` attribute (MT-UNet's learned
weights) gets its own optimiser parameter group at that learning rate.

A non-finite loss stops training with a :class:`~training.errors.TrainingError` before the
optimiser step, so the last checkpoint on disk is the last good state.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from mbmt_ros.tasks import DEPTH, SEGMENTATION, TASKS
from training.deep_supervision import deep_supervision_losses
from training.errors import ConfigError, TrainingError
from training.losses import compute_losses
from training.weighting import make_weighting
from training.weighting.base import Weighting

__all__ = ["MultiTaskModule", "teacher_extra_input", "model_inputs"]


def teacher_extra_input(batch: Mapping[str, Any], modality: str, num_classes: int) -> torch.Tensor:
    """The teacher's extra input from the batch labels: depth ``(N,1,H,W)`` metres, or a one-hot
    segmentation ``(N,C,H,W)`` with void pixels all-zero."""
    if modality == DEPTH:
        return batch[DEPTH].float()
    if modality == SEGMENTATION:
        seg = batch[SEGMENTATION].long()
        onehot = F.one_hot(seg.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()
        return onehot * (seg >= 0).unsqueeze(1).float()
    raise ConfigError(f"unknown teacher extra modality {modality!r}; use depth or segmentation")


def model_inputs(model: torch.nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    """Positional inputs of ``model`` for ``batch``: ``(image,)`` or ``(image, extra)`` (teacher)."""
    modality = getattr(model, "extra_modality", None)
    if modality is None:
        modality = (getattr(model, "config", None) or {}).get("extra_modality")
    if modality is None:
        return (batch["image"],)
    return (batch["image"], teacher_extra_input(batch, modality, model.num_classes))


class MultiTaskModule(pl.LightningModule):
    """Train ``model`` on its ``tasks`` with ``weighting``; DWA is updated at every epoch end.

    ``train_cfg`` is a stage's resolved ``train:`` section (see ``training.config``).
    ``tasks`` are the tasks with a loss (default: all of the model's tasks; the teacher may be
    trained on fewer than it predicts).
    """

    def __init__(self, model: torch.nn.Module, train_cfg: Mapping[str, Any],
                 tasks: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.model = model
        self.train_cfg = dict(train_cfg)
        self.loss_tasks = tuple(tasks or model.tasks)
        self.weighting = make_weighting(train_cfg["weighting"], self.loss_tasks,
                                        **(train_cfg.get("weighting_options") or {}))
        self._epoch_sums: dict[str, float] = {}
        self._epoch_counts: dict[str, int] = {}
        #: the last training step's unweighted auxiliary (front-end-only) loss, or None
        self._aux_loss: torch.Tensor | None = None
        self._outputs: dict[str, torch.Tensor] = {}
        #: the validation metrics of the running epoch (a training.metrics.MetricSuite)
        self._val_metrics: Any = None

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(*inputs)

    @property
    def deep_supervision(self) -> bool:
        """True when the model's initial predictions are supervised (MTI-Net)."""
        return bool(getattr(self.model, "deep_supervision", False))

    def _step_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-task losses of one batch; in training, deep supervision's initial-prediction
        losses are added to their task's loss and the auxiliary loss is kept in ``_aux_loss``."""
        inputs = model_inputs(self.model, batch)
        self._aux_loss = None
        if not (self.training and self.deep_supervision):
            self._outputs = self.model(*inputs)
            return compute_losses(self._outputs, batch, self.loss_tasks)
        self._outputs, aux = self.model(*inputs, return_aux=True)
        losses = compute_losses(self._outputs, batch, self.loss_tasks)
        initial, self._aux_loss = deep_supervision_losses(
            aux, batch, self.loss_tasks, getattr(self.model, "aux_tasks", ()), compute_losses)
        for task, value in initial.items():
            losses[task] = losses[task] + value if task in losses else value
        return losses

    def _no_loss(self) -> torch.Tensor | None:
        """What a step without any labelled pixel returns: nothing (the step is skipped) in
        one process; under DDP a zero loss through every output, because all ranks must run
        the same backward and all-reduce (find_unused_parameters covers the rest)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return torch.stack([o.sum() for o in self._outputs.values()]).sum() * 0.0

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        losses = self._step_losses(batch)
        checked = dict(losses)
        if self._aux_loss is not None:
            checked["auxiliary"] = self._aux_loss
        bad = {t: float(v.detach()) for t, v in checked.items() if not torch.isfinite(v).all()}
        if bad:
            raise TrainingError(
                f"non-finite loss at epoch {self.current_epoch}, step {self.global_step}: {bad}; "
                "training stopped before this step, the last good checkpoint is kept - lower the "
                "learning rate (train.lr) or check the data for NaN/inf values"
            )
        if not losses and self._aux_loss is None:  # no labelled pixel of any task in this batch
            zero, self._outputs = self._no_loss(), {}
            return zero
        self._outputs = {}  # the graph is held by the losses; drop the reference
        total = self.weighting(losses) if losses else self._aux_loss.new_zeros(())
        if self._aux_loss is not None:
            total = total + self._aux_loss
            self.log("train/loss_auxiliary", self._aux_loss.detach(), on_step=True,
                     on_epoch=True, batch_size=batch["image"].shape[0])
        for task, value in losses.items():
            v = float(value.detach())
            self._epoch_sums[task] = self._epoch_sums.get(task, 0.0) + v
            self._epoch_counts[task] = self._epoch_counts.get(task, 0) + 1
            self.log(f"train/loss_{task}", value.detach(), on_step=True, on_epoch=True,
                     batch_size=batch["image"].shape[0])
        self.log("train/loss", total.detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["image"].shape[0])
        return total

    def on_train_epoch_end(self) -> None:
        means: dict[str, float] = {}
        for task in self.loss_tasks:
            stats = torch.tensor([self._epoch_sums.get(task, 0.0),
                                  float(self._epoch_counts.get(task, 0))], dtype=torch.float64)
            stats = self.trainer.strategy.reduce(stats.to(self.device), reduce_op="sum")
            if float(stats[1]) > 0:
                means[task] = float(stats[0] / stats[1])
        self.weighting.epoch_end(means)
        for task, w in self.weighting.weights().items():
            self.log(f"weight/{task}", float(w), sync_dist=True)
        self._epoch_sums.clear()
        self._epoch_counts.clear()

    def on_validation_epoch_start(self) -> None:
        from training.metrics import MetricSuite

        tasks = [t for t in TASKS if t in getattr(self.model, "tasks", ())]
        self._val_metrics = MetricSuite(tasks, int(getattr(self.model, "num_classes", 13)))

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        losses = self._step_losses(batch)
        if self._val_metrics is not None:
            self._val_metrics.update_batch(self._outputs, batch)
        self._outputs = {}
        n = batch["image"].shape[0]
        for task, value in losses.items():
            self.log(f"val/loss_{task}", value, on_epoch=True, sync_dist=True, batch_size=n)
        if losses:
            total = torch.stack([v for v in losses.values()]).sum()
            self.log("val/loss", total, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=n)

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation metrics (:data:`training.curves.CURVE_METRICS`, pooled
        over this process's validation pixels; under DDP the ranks' values are averaged) as
        ``val/<task>/<metric>`` for TensorBoard, ``metrics.csv`` and the curves."""
        from training.curves import CURVE_METRICS, metric_column

        suite, self._val_metrics = self._val_metrics, None
        if suite is None:
            return
        computed = suite.compute()
        # every rank must log the same keys (each is an all-reduce): NaN where a rank saw no
        # valid pixel; in one process, tasks without a valid pixel are left out
        distributed = self._trainer is not None and self._trainer.world_size > 1
        for task in suite.tasks:
            for key in CURVE_METRICS[task]:
                value = float(computed.get(task, {}).get(key, float("nan")))
                if distributed or value == value:
                    self.log(metric_column(task, key), value, sync_dist=True)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: every trainable parameter at ``train.lr``, except
        a weighting's learned parameters when it names its own ``lr`` (MT-UNet's Eq. 5 weights,
        1e-3 in the paper): those form a second group at that rate, without weight decay."""
        own_lr = getattr(self.weighting, "lr", None)
        separate = (isinstance(self.weighting, Weighting) and own_lr is not None
                    and any(p.requires_grad for p in self.weighting.parameters()))
        skip = {id(p) for p in self.weighting.parameters()} if separate else set()
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in skip]
        if not params:
            raise ConfigError("the model has no trainable parameters (everything is frozen)")
        groups: list[dict[str, Any]] = [{"params": params}]
        if separate:
            groups.append({"params": [p for p in self.weighting.parameters() if p.requires_grad],
                           "lr": float(own_lr), "weight_decay": 0.0, "name": "weighting"})
        return groups

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = self.parameter_groups()
        cfg = self.train_cfg
        name, lr, wd = cfg["optimizer"], float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
        if name == "adam":
            return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # A finite loss can still give non-finite gradients; refuse to write NaN into the
        # weights. fp16 AMP skips such steps itself (its grad scaler), so it is left alone.
        if str(self.trainer.precision).startswith("16"):
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            raise TrainingError(
                f"non-finite gradient at epoch {self.current_epoch}, step {self.global_step}; "
                "training stopped, the last good checkpoint is kept - lower train.lr"
            )
