"""Selection strategies over per-frame scores: uncertainty, diversity, hybrid, random.

- ``uncertainty``: the ``budget`` frames with the highest uncertainty.
- ``diversity``: k-center greedy (Sener & Savarese, "core-set") on the embeddings: each pick
  is the frame farthest from everything already labelled or picked, so N near-duplicate
  frames of one corridor are not all chosen.
- ``hybrid``: k-center greedy among the ``pool_factor x budget`` most uncertain frames.
- ``random``: a uniform sample (the baseline).

All are deterministic for a seed (ties go to the earlier frame; the seed only draws the first
k-center pick when nothing is labelled yet, and the random sample).
"""
from __future__ import annotations

import numpy as np

from training.errors import DataError

__all__ = ["STRATEGIES", "k_center_greedy", "select"]

STRATEGIES: tuple[str, ...] = ("uncertainty", "diversity", "hybrid", "random")


def k_center_greedy(features: np.ndarray, budget: int, centers: np.ndarray | None = None,
                    seed: int = 0) -> list[int]:
    """Indices of ``budget`` rows of ``features`` picked greedily farthest-first from
    ``centers`` (rows already covered, e.g. the labelled frames' embeddings)."""
    n = len(features)
    budget = min(budget, n)
    if budget <= 0:
        return []
    feats = np.asarray(features, dtype=np.float64)
    if centers is not None and len(centers):
        c = np.asarray(centers, dtype=np.float64)
        dist = np.sqrt(((feats[:, None, :] - c[None, :, :]) ** 2).sum(-1)).min(1)
        picks: list[int] = []
    else:
        first = int(np.random.default_rng(seed).integers(n))
        picks = [first]
        dist = np.sqrt(((feats - feats[first]) ** 2).sum(-1))
    while len(picks) < budget:
        dist[picks] = -1.0
        nxt = int(np.argmax(dist))  # first maximum: ties to the earlier frame
        picks.append(nxt)
        dist = np.minimum(dist, np.sqrt(((feats - feats[nxt]) ** 2).sum(-1)))
    return picks


def select(strategy: str, uncertainty: np.ndarray, features: np.ndarray, budget: int,
           seed: int = 0, labelled: np.ndarray | None = None,
           pool_factor: float = 3.0) -> list[int]:
    """Positions of the chosen frames (in pick order) among the candidates."""
    if strategy not in STRATEGIES:
        raise DataError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    if budget < 1:
        raise DataError(f"--budget must be >= 1, got {budget}")
    n = len(uncertainty)
    budget = min(budget, n)
    by_uncertainty = np.lexsort((np.arange(n), -np.asarray(uncertainty)))
    if strategy == "uncertainty":
        return [int(i) for i in by_uncertainty[:budget]]
    if strategy == "random":
        return [int(i) for i in np.random.default_rng(seed).permutation(n)[:budget]]
    if strategy == "diversity":
        return k_center_greedy(features, budget, labelled, seed)
    if pool_factor < 1:
        raise DataError(f"--pool-factor must be >= 1, got {pool_factor}")
    pool = by_uncertainty[:min(n, int(np.ceil(pool_factor * budget)))]
    return [int(pool[i]) for i in k_center_greedy(features[pool], budget, labelled, seed)]
