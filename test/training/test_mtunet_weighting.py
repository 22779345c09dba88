"""MT-UNet's learned weighting behaves as the paper describes: with losses of different
scale the learned weights stay balanced (the paper: ~0.5 each), and under DDP every rank
derives the same variance ratios from the statistics of all ranks."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.weighting import make_weighting

TASKS = ("segmentation", "depth")


def _noisy_losses(steps: int) -> list[dict[str, torch.Tensor]]:
    """Per step: segmentation ~2.0 and depth ~0.6, each with 10 % noise."""
    noise = torch.randn(steps, 2, generator=torch.Generator().manual_seed(0))
    values = (torch.tensor([2.0, 0.6]) * (1 + 0.1 * noise)).tolist()
    return [{"segmentation": torch.tensor(seg, requires_grad=True),
             "depth": torch.tensor(depth, requires_grad=True)} for seg, depth in values]


def _train_weights(objective: str, steps: int = 4000, steps_per_epoch: int = 100) -> dict:
    """Adam at lr 1e-3 on the weighting alone, losses ~2.0 (seg) and ~0.6 (depth)."""
    w = make_weighting("mtunet", TASKS)
    optimiser = torch.optim.Adam(w.parameters(), lr=1e-3)
    for step, losses in enumerate(_noisy_losses(steps)):
        if objective == "mtunet":
            total = w(losses)
        else:  # the naive rule: minimise sum_k w_k L_k over the normalised weights
            weights = w.normalised_weights()
            total = weights[0] * losses["segmentation"] + weights[1] * losses["depth"]
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        if (step + 1) % steps_per_epoch == 0:
            w.epoch_end({})
    return w.weights()


def test_weights_stay_balanced_with_losses_of_different_scale():
    weights = _train_weights("mtunet")
    assert all(0.3 <= v <= 0.7 for v in weights.values()), weights
    assert sum(weights.values()) == pytest.approx(1.0)


def test_the_scenario_collapses_the_naive_rule():
    """The same scenario with the weights minimising sum_k w_k L_k drains segmentation
    (0.015 after 4,000 steps; already below 0.1 after 2,000)."""
    naive = _train_weights("naive", steps=2000)
    assert naive["segmentation"] < 0.1, naive


def test_returned_value_is_the_weighted_loss_and_gradients_split():
    w = make_weighting("mtunet", TASKS)
    for value in (1.0, 3.0):  # epoch 0: Lbar = (2, 2) for seg, (1, 1) for depth after 2 steps
        w({"segmentation": torch.tensor(value), "depth": torch.tensor(1.0)})
    w.epoch_end({})
    assert w.means.tolist() == pytest.approx([2.0, 1.0])
    seg, depth = torch.tensor(3.0, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    total = w({"segmentation": seg, "depth": depth})
    assert float(total.detach()) == pytest.approx(0.5 * 3.0 + 0.5 * 0.5)  # value: the weighted sum
    total.backward()
    assert (float(seg.grad), float(depth.grad)) == pytest.approx((0.5, 0.5))  # weights fixed
    # the learned weights see scale-free ratios r = L / Lbar = (1.5, 0.5): dJ/ds = W r - 1
    assert w.log_weights.grad.tolist() == pytest.approx([1.5 - 1.0, 0.5 - 1.0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        w = make_weighting("mtunet", TASKS, window=1)
        # each rank sees different steps; pooled they are seg (1, 3, 5, 7), depth (1, 1, 2, 2)
        per_rank = [[(1.0, 1.0), (5.0, 2.0)], [(3.0, 1.0), (7.0, 2.0)]][rank]
        for epoch_scale in (1.0, 2.0):
            for seg, depth in per_rank:
                w({"segmentation": torch.tensor(seg * epoch_scale),
                   "depth": torch.tensor(depth)})
            w.epoch_end({})
        queue.put((rank, w.alphas.tolist(), w.means.tolist(), w.variances.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_pool_the_variance_statistics():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, rest) for r, *rest in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]  # every rank computes the same a and Lbar
    alphas, means, variances = results[0]
    # pooled epoch variances: seg var(1,3,5,7) = 20/3, then var(2,6,10,14) = 80/3 -> a = 4;
    # depth var(1,1,2,2) = 1/3 in both epochs -> a = 1
    assert alphas == pytest.approx([4.0, 1.0])
    assert means == pytest.approx([8.0, 1.5])
    assert variances[-1] == pytest.approx([80 / 3, 1 / 3])
    assert not math.isnan(alphas[0])
