"""MT-UNet's learned, loss-variance-normalised task weighting (the MT-UNet paper's Eq. 5).

For tasks ``k = 1..K`` with unweighted losses ``L_k``::

    L = sum_k  W_k a_k / (sum_j W_j a_j) * L_k
    a_k = (sigma_k(t-1) + eps) / (sigma_k(t-2) + eps)

``W_k`` are learned weights and ``sigma_k(t)`` is the average, over the last ``window``
epochs up to epoch ``t``, of the variance of ``L_k`` over the training steps of an epoch.
The normalised weights sum to 1 over the tasks. As in DWA (and as the paper implies, since
``a`` needs two earlier epochs) ``a_k = 1`` for the first two epochs; a task whose variance
is unknown in either of those epochs (no labelled sample) keeps ``a_k = 1``.

How ``W`` is learned (the paper only says "gradient descent with the losses fixed"):
minimising ``sum_k w_k L_k`` over the weights themselves always drains the task with the
larger loss (a linear objective on the simplex has its minimum at a vertex: with
segmentation ~2.0 and depth ~0.6, Adam at lr 1e-3 drives the weights to 0.015 / 0.985 in
4,000 steps), while the paper reports weights that settle near 0.5 each. So ``W`` learns
from *scale-free* losses, with the uncertainty-style objective of Kendall et al. (CVPR 2018)
applied to them::

    J(W) = sum_k  W_k r_k - log W_k,        r_k = L_k / Lbar_k   (held fixed)

``Lbar_k`` is task ``k``'s mean training loss over the previous epoch (over the current
epoch so far, this step included, during the first epoch), so ``r_k ~ 1`` whatever the
loss's scale. Each ``W_k`` has its optimum at ``1 / r_k``: equal learned weights (0.5 each
for two tasks) when every task's loss sits at its usual level, whatever their scales; a
task whose loss drops below its recent mean gets a little more weight, one whose loss jumps
a little less. The ``- log W`` term is the regulariser that keeps the fixed point interior.

Implementation choices the paper leaves open:

- ``W_k = exp(s_k)`` with a learned ``s_k`` (initially 0, so ``W_k = 1``): the weights stay
  positive without clamping. ``s`` is an ``nn.Parameter``: the trainer must optimise
  ``weighting.parameters()``, ideally in their own parameter group with learning rate
  :attr:`MtUnetWeighting.lr` (1e-3 in the paper, 1e-4 for the networks). One backward pass of
  the returned loss gives the paper's alternate updates: the networks get the gradient of
  ``L`` with the weights held constant, ``s`` gets the gradient of ``J`` with the losses
  held constant (the returned value is ``L``; ``J`` enters with value zero).
- The per-step losses are recorded by :meth:`forward` only in training mode with gradients
  enabled (not during validation); ``epoch_end`` turns them into that epoch's variance
  (unbiased, over the epoch's steps) and mean, and ignores the epoch means it is given.
- Under DDP (``torch.distributed`` initialised), ``epoch_end`` sums the per-epoch count / sum
  / sum-of-squares over all ranks before computing the variance, so every rank derives the
  same ``a`` and ``Lbar`` from all the steps of the epoch - as the trainer averages DWA's
  epoch means over ranks.
- The normalisation runs over all tasks; a task missing from a step (no labelled sample) adds
  no term but keeps its share of the weights.

Everything (learned ``s``, the running sums, variance history, ``Lbar`` and ``a``) is in the
state dict.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from training.errors import ConfigError, TrainingError
from training.weighting.base import Weighting, register_weighting

__all__ = ["MtUnetWeighting"]


def _positive(name: str, value: object, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"mtunet weighting: {name} must be a positive number, got {value!r}")
    return float(value)


@register_weighting("mtunet")
class MtUnetWeighting(Weighting):
    """Eq. 5 of MT-UNet: learned weights ``W`` times variance ratios ``a``, normalised."""

    def __init__(self, tasks: Iterable[str], window: int = 3, eps: float = 1e-8,
                 lr: float = 1e-3, init_weight: float = 1.0) -> None:
        super().__init__(tasks)
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ConfigError(f"mtunet weighting: window must be an integer >= 1, got {window!r}")
        self.window = window
        self.eps = _positive("eps", eps)
        #: learning rate the paper uses for the weights (the trainer's param group for them)
        self.lr = _positive("lr", lr)
        k = len(self.tasks)
        self.log_weights = nn.Parameter(
            torch.full((k,), math.log(_positive("init_weight", init_weight)))
        )
        f64 = torch.float64
        # running sums over the current epoch's steps: count, sum, sum of squares
        self.register_buffer("step_stats", torch.zeros((3, k), dtype=f64))
        # per-epoch variances of the last `window` epochs (NaN = unknown), oldest first
        self.register_buffer("variances", torch.full((window, k), float("nan"), dtype=f64))
        # sigma(t-2), sigma(t-1)
        self.register_buffer("sigmas", torch.full((2, k), float("nan"), dtype=f64))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("alphas", torch.ones(k, dtype=f64))
        # Lbar: each task's mean training loss over the previous epoch (NaN = unknown)
        self.register_buffer("means", torch.full((k,), float("nan"), dtype=f64))

    def normalised_weights(self) -> torch.Tensor:
        """``W_k a_k / sum_j W_j a_j`` (differentiable w.r.t. the learned weights)."""
        scaled = torch.exp(self.log_weights) * self.alphas.to(self.log_weights.dtype)
        return scaled / scaled.sum()

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        unknown = [t for t in losses if t not in self.tasks]
        if unknown:
            raise TrainingError(
                f"losses for task(s) {unknown} that the weighting was not built for "
                f"(tasks {list(self.tasks)})"
            )
        values = {t: float(v.detach()) for t, v in losses.items()}
        if self.training and torch.is_grad_enabled():
            self._record(values)
        weights = self.normalised_weights().detach()
        present = [i for i, t in enumerate(self.tasks) if t in losses]
        if not present:
            return torch.zeros(())
        total = torch.stack([weights[i].to(losses[self.tasks[i]].dtype) * losses[self.tasks[i]]
                             for i in present]).sum()
        objective = self.weight_objective(values)
        return total + (objective - objective.detach()).to(total.dtype)

    def loss_ratios(self, losses: Mapping[str, float]) -> dict[int, float]:
        """``r_k = L_k / Lbar_k`` of the tasks in ``losses`` (1 where ``Lbar_k`` is unknown)."""
        means = self.means.tolist()
        running = None
        ratios = {}
        for i, t in enumerate(self.tasks):
            if t not in losses:
                continue
            ref = means[i]
            if not math.isfinite(ref):  # first epoch: its running mean so far
                running = self.step_stats[:2].tolist() if running is None else running
                ref = running[1][i] / running[0][i] if running[0][i] > 0 else math.nan
            value = losses[t]
            ok = math.isfinite(ref) and ref > 0 and math.isfinite(value)
            ratios[i] = value / ref if ok else 1.0
        return ratios

    def weight_objective(self, losses: Mapping[str, float]) -> torch.Tensor:
        """``J = sum_k W_k r_k - log W_k`` over the tasks in ``losses`` (their values):
        what the learned weights minimise; its optimum ``W_k = 1 / r_k`` is scale-free."""
        ratios = self.loss_ratios(losses)
        s = self.log_weights
        if not ratios:
            return s.sum() * 0.0
        index = list(ratios)
        r = torch.tensor([ratios[i] for i in index], dtype=s.dtype, device=s.device)
        return (torch.exp(s[index]) * r - s[index]).sum()

    def task_weight(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        return self.normalised_weights()[index].detach().to(loss.dtype) * loss

    def _record(self, values: Mapping[str, float]) -> None:
        rows = [[0.0] * len(self.tasks) for _ in range(3)]
        for i, t in enumerate(self.tasks):
            value = values.get(t, math.nan)
            if math.isfinite(value):
                rows[0][i], rows[1][i], rows[2][i] = 1.0, value, value * value
        self.step_stats += torch.tensor(rows, dtype=torch.float64, device=self.step_stats.device)

    def epoch_end(self, mean_unweighted_losses: Mapping[str, float] | None = None) -> None:
        """Close an epoch: its loss variances update ``sigma`` and then ``a`` (for the next),
        its mean losses become ``Lbar``. Under DDP the statistics are summed over the ranks
        first (every rank must call this, as Lightning does at every epoch end)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.step_stats, op=dist.ReduceOp.SUM)
        count, total, squares = self.step_stats
        mean = total / count.clamp(min=1)
        var = (squares - count * mean * mean).clamp(min=0) / (count - 1).clamp(min=1)
        var = torch.where(count >= 2, var, torch.full_like(var, float("nan")))
        self.variances.copy_(torch.cat([self.variances[1:], var[None]], dim=0))
        self.means.copy_(torch.where(count > 0, mean, self.means))
        self.step_stats.zero_()
        known = torch.isfinite(self.variances)
        sigma = torch.where(known, self.variances, 0.0).sum(0) / known.sum(0).clamp(min=1)
        sigma = torch.where(known.any(0), sigma, torch.full_like(sigma, float("nan")))
        self.sigmas.copy_(torch.stack([self.sigmas[1], sigma]))
        self.epochs_seen += 1
        if int(self.epochs_seen) < 2:
            self.alphas.fill_(1.0)
            return
        older, newer = self.sigmas
        usable = torch.isfinite(older) & torch.isfinite(newer)
        ratio = (newer + self.eps) / (torch.where(usable, older, 0.0) + self.eps)
        self.alphas.copy_(torch.where(usable, ratio, 1.0))

    def weights(self) -> dict[str, float]:
        with torch.no_grad():
            w = self.normalised_weights()
        return {t: float(v) for t, v in zip(self.tasks, w.tolist(), strict=True)}

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, window={self.window}, eps={self.eps}, lr={self.lr}"
