"""Loss weighting: registry, equal, DWA over several epochs, uncertainty gradients, resume."""
from __future__ import annotations

import math

import pytest
import torch

from training.errors import ConfigError, TrainingError
from training.weighting import available_weightings, make_weighting

TASKS = ("segmentation", "depth", "normals")


def test_registry_names_and_errors():
    assert {"dwa", "equal", "uncertainty"} <= set(available_weightings())
    with pytest.raises(ConfigError, match="unknown loss weighting 'gradnorm'"):
        make_weighting("gradnorm", TASKS)
    with pytest.raises(ConfigError, match="bad options"):
        make_weighting("equal", TASKS, temperature=2.0)
    with pytest.raises(ConfigError, match="temperature"):
        make_weighting("dwa", TASKS, temperature=0.0)
    with pytest.raises(ConfigError, match="unknown task"):
        make_weighting("dwa", ["edges"])


def test_equal_is_the_plain_sum_and_skips_missing_tasks():
    w = make_weighting("equal", TASKS)
    total = w({"segmentation": torch.tensor(2.0), "normals": torch.tensor(0.5)})
    assert total.item() == pytest.approx(2.5)
    assert w.weights() == {"segmentation": 1.0, "depth": 1.0, "normals": 1.0}
    with pytest.raises(TrainingError, match="edges"):
        w({"edges": torch.tensor(1.0)})
    assert w({}).item() == 0.0


def _softmax_times_k(ratios, temperature):
    e = [math.exp(r / temperature) for r in ratios]
    return [len(e) * x / sum(e) for x in e]


def test_dwa_weights_over_epochs_hand_computed():
    w = make_weighting("dwa", TASKS)  # T = 2.0 by default
    epoch_losses = [
        {"segmentation": 2.0, "depth": 1.0, "normals": 0.5},  # epoch 0
        {"segmentation": 1.0, "depth": 0.9, "normals": 0.5},  # epoch 1
        {"segmentation": 0.5, "depth": 0.9, "normals": 0.25},  # epoch 2
    ]
    # epochs 0 and 1 use weight 1
    assert w.weights() == {t: 1.0 for t in TASKS}
    w.epoch_end(epoch_losses[0])
    assert w.weights() == {t: 1.0 for t in TASKS}
    w.epoch_end(epoch_losses[1])
    # epoch 2: w = L(1)/L(0) = (0.5, 0.9, 1.0); w/T = (0.25, 0.45, 0.5)
    # exp: 1.2840254, 1.5683122, 1.6487213; sum 4.5010589
    # lambda = 3 * exp / sum = 0.8558156, 1.0452955, 1.0988889
    expected = [0.8558156, 1.0452955, 1.0988889]
    assert list(w.weights().values()) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(_softmax_times_k([0.5, 0.9, 1.0], 2.0), rel=1e-6)
    assert sum(w.weights().values()) == pytest.approx(3.0)
    # the step's total is the weighted sum of the unweighted losses
    losses = {t: torch.tensor(v) for t, v in zip(TASKS, (1.0, 2.0, 3.0), strict=True)}
    total = w(losses)
    assert total.item() == pytest.approx(0.8558156 + 2 * 1.0452955 + 3 * 1.0988889, rel=1e-6)
    w.epoch_end(epoch_losses[2])
    # epoch 3: w = L(2)/L(1) = (0.5, 1.0, 0.5): w/T = (0.25, 0.5, 0.25)
    # exp: 1.2840254, 1.6487213, 1.2840254; sum 4.2167721 -> 0.9135130, 1.1729739, 0.9135130
    assert list(w.weights().values()) == pytest.approx([0.9135130, 1.1729739, 0.9135130],
                                                        rel=1e-6)


def test_dwa_temperature_and_missing_task():
    w = make_weighting("dwa", ("segmentation", "depth"), temperature=1.0)
    w.epoch_end({"segmentation": 1.0, "depth": 1.0})
    w.epoch_end({"segmentation": 2.0})  # no depth labels this epoch -> neutral ratio 1
    # ratios (2, 1), T = 1: 2 * e^2 / (e^2 + e) = 1.4621172, 2 * e / (e^2 + e) = 0.5378828
    assert list(w.weights().values()) == pytest.approx([1.4621172, 0.5378828], rel=1e-6)
    # a step without a depth loss sums only segmentation's weighted term
    total = w({"segmentation": torch.tensor(1.0)})
    assert total.item() == pytest.approx(1.4621172, rel=1e-6)


def test_dwa_state_dict_resumes_history():
    w = make_weighting("dwa", TASKS)
    w.epoch_end({"segmentation": 2.0, "depth": 1.0, "normals": 0.5})
    w.epoch_end({"segmentation": 1.0, "depth": 0.9, "normals": 0.5})
    resumed = make_weighting("dwa", TASKS)
    resumed.load_state_dict(w.state_dict())
    assert resumed.weights() == w.weights()
    nxt = {"segmentation": 0.5, "depth": 0.9, "normals": 0.25}
    w.epoch_end(nxt)
    resumed.epoch_end(nxt)
    assert resumed.weights() == w.weights()
    fresh = make_weighting("dwa", TASKS)
    fresh.epoch_end(nxt)  # without the history this is only its first epoch
    assert fresh.weights() != w.weights()


def test_uncertainty_forward_and_gradients():
    w = make_weighting("uncertainty", TASKS)
    seg, depth = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    total = w({"segmentation": seg, "depth": depth})
    # s = 0: classification exp(0)*2 + 0 = 2; regression 0.5*exp(0)*3 + 0 = 1.5
    assert total.item() == pytest.approx(3.5)
    total.backward()
    # d/ds [e^-s L + s/2] = -e^-s L + 1/2 = -1.5 ; d/ds [e^-s L/2 + s/2] = -1.5 + 0.5 = -1.0
    assert w.log_vars.grad.tolist() == pytest.approx([-1.5, -1.0, 0.0])
    assert seg.grad.item() == pytest.approx(1.0)
    assert depth.grad.item() == pytest.approx(0.5)
    assert w.weights() == pytest.approx({"segmentation": 1.0, "depth": 0.5, "normals": 0.5})


def test_uncertainty_optimum_and_resume():
    # optimum: classification e^-s L = 1/2 -> s = ln(2L); regression e^-s L = 1 -> s = ln L
    w = make_weighting("uncertainty", ("segmentation", "depth"))
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([math.log(4.0), math.log(3.0)]))
    w({"segmentation": torch.tensor(2.0), "depth": torch.tensor(3.0)}).backward()
    assert w.log_vars.grad.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    # a few optimiser steps from elsewhere move towards that optimum
    w2 = make_weighting("uncertainty", ("segmentation", "depth"), init_log_var=0.5)
    for _ in range(5):  # plain gradient descent, lr 0.5
        w2.log_vars.grad = None
        w2({"segmentation": torch.tensor(2.0), "depth": torch.tensor(3.0)}).backward()
        with torch.no_grad():
            w2.log_vars -= 0.5 * w2.log_vars.grad
    target = torch.tensor([math.log(4.0), math.log(3.0)])
    assert bool(((w2.log_vars - target).abs() < abs(0.5 - target)).all())
    resumed = make_weighting("uncertainty", ("segmentation", "depth"))
    resumed.load_state_dict(w2.state_dict())
    assert resumed.weights() == pytest.approx(w2.weights())
