"""MT-UNet's learned, loss-variance-normalised task weighting (the MT-UNet paper's Eq. 5).

For tasks ``k = 1..K`` with unweighted losses ``L_k``::

    L = sum_k  W_k a_k / (sum_j W_j a_j) * L_k
    a_k = (sigma_k(t-1) + eps) / (sigma_k(t-2) + eps)

``W_k`` are learned weights and ``sigma_k(t)`` is the average, over the last ``window``
epochs up to epoch ``t``, of the variance of ``L_k`` over the training steps of an epoch.
The normalised weights sum to 1 over the tasks. As in DWA (and as the paper implies, since
``a`` needs two earlier epochs) ``a_k = 1`` for the first two epochs; a task whose variance
is unknown in either of those epochs (no labelled sample) keeps ``a_k = 1``.

Implementation choices the paper leaves open:

- ``W_k = exp(s_k)`` with a learned ``s_k`` (initially 0, so ``W_k = 1``): the weights stay
  positive without clamping. ``s`` is an ``nn.Parameter``: the trainer must optimise
  ``weighting.parameters()``, ideally in their own parameter group with learning rate
  :attr:`MtUnetWeighting.lr` (1e-3 in the paper, 1e-4 for the networks). One backward pass of
  ``L`` gives exactly the paper's alternate updates: the gradient w.r.t. the networks treats
  the weights as constants and the gradient w.r.t. ``s`` treats the losses as constants.
- The per-step losses are recorded by :meth:`forward` only in training mode with gradients
  enabled (not during validation); ``epoch_end`` turns them into that epoch's variance
  (unbiased, over the epoch's steps) and ignores the epoch means it is given.
- The normalisation runs over all tasks; a task missing from a step (no labelled sample) adds
  no term but keeps its share of the weights.

Everything (learned ``s``, the running sums, variance history and ``a``) is in the state dict.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
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
        if self.training and torch.is_grad_enabled():
            self._record(losses)
        weights = self.normalised_weights()
        terms = [weights[i].to(losses[t].dtype) * losses[t]
                 for i, t in enumerate(self.tasks) if t in losses]
        if not terms:
            return torch.zeros(())
        return torch.stack(terms).sum()

    def task_weight(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        return self.normalised_weights()[index].to(loss.dtype) * loss

    def _record(self, losses: Mapping[str, torch.Tensor]) -> None:
        for i, t in enumerate(self.tasks):
            if t in losses:
                value = float(losses[t].detach())
                if math.isfinite(value):
                    self.step_stats[:, i] += torch.tensor([1.0, value, value * value],
                                                          dtype=torch.float64)

    def epoch_end(self, mean_unweighted_losses: Mapping[str, float] | None = None) -> None:
        """Close an epoch: its loss variances update ``sigma`` and then ``a`` (for the next)."""
        count, total, squares = self.step_stats
        mean = total / count.clamp(min=1)
        var = (squares - count * mean * mean).clamp(min=0) / (count - 1).clamp(min=1)
        var = torch.where(count >= 2, var, torch.full_like(var, float("nan")))
        self.variances.copy_(torch.cat([self.variances[1:], var[None]], dim=0))
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
