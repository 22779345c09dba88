"""Which process of a multi-GPU / multi-node job this is, and how ranks wait for rank 0.

Ranks come from Lightning's own cluster environments, chosen in the order the Trainer chooses
them (torchelastic / ``torchrun`` first, then SLURM, LSF, MPI, else Lightning's own launcher), so
the pipeline agrees with Lightning about who is global rank 0:

- ``torchrun`` / SLURM / LSF / MPI create every process up front and say each one's global rank;
  :func:`setup` joins their process group at once, so ranks can meet at a barrier before the
  first ``trainer.fit`` (Lightning then reuses that group).
- Lightning's own launcher (``train.devices: N`` started as a plain command) starts the other
  processes of the node only inside the first ``trainer.fit``; they re-run the command from the
  start with ``LOCAL_RANK`` / ``NODE_RANK`` / ``WORLD_SIZE`` set (no ``RANK``): global rank =
  ``NODE_RANK * devices + LOCAL_RANK``. Until that first fit the launching process is alone, so
  it does rank 0's work without waiting; from then on the process group exists everywhere.
  A process it started skips the finished stages (no collective calls) and meets the others in
  the first training - so every rank runs the same sequence of barriers and fits.

Only global rank 0 writes shared artefacts (synthetic data, manifests, pseudo labels, weights,
markers, results) and removes or renames folders; the others wait at :func:`barrier`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from training.errors import ConfigError

__all__ = ["RankInfo", "cluster_environment", "rank_info", "is_rank_zero", "setup", "barrier",
           "is_distributed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job (a single process is rank 0 of 1)."""

    global_rank: int
    local_rank: int
    node_rank: int
    world_size: int
    launcher: str             # the Lightning cluster environment's class name

    @property
    def is_zero(self) -> bool:
        return self.global_rank == 0


def cluster_environment() -> Any:
    """The Lightning ``ClusterEnvironment`` the Trainer would pick for this process."""
    from lightning.fabric.plugins.environments import (
        LightningEnvironment,
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    # the order of lightning.pytorch's AcceleratorConnector._choose_and_init_cluster_environment
    for env_type in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
        if env_type.detect():
            return env_type()
    return LightningEnvironment()


def rank_info(train: dict[str, Any] | None = None) -> RankInfo:
    """Global/local/node rank and world size, as Lightning will set them up.

    ``train`` (the config's ``train:`` section) gives ``devices`` / ``num_nodes`` for Lightning's
    own launcher, whose processes know only their node and local rank.
    """
    env = cluster_environment()
    name = type(env).__name__
    if name != "LightningEnvironment":
        return RankInfo(env.global_rank(), env.local_rank(), env.node_rank(), env.world_size(),
                        name)
    dist = _initialized_dist()
    devices = _int(train, "devices")
    if dist is not None:  # after the first fit under Lightning's launcher
        return RankInfo(dist.get_rank(), env.local_rank(), env.node_rank(),
                        dist.get_world_size(), name)
    world = int(os.environ.get("WORLD_SIZE") or devices * _int(train, "num_nodes"))
    return RankInfo(env.node_rank() * devices + env.local_rank(), env.local_rank(),
                    env.node_rank(), world, name)


def is_rank_zero(train: dict[str, Any] | None = None) -> bool:
    """True in a single process and on global rank 0 of a multi-process job."""
    return rank_info(train).is_zero


def is_distributed(train: dict[str, Any] | None = None) -> bool:
    return rank_info(train).world_size > 1


def setup(train: dict[str, Any]) -> RankInfo:
    """Join the launcher's process group now when every process already exists (torchrun,
    SLURM, ...), so that :func:`barrier` works before Lightning's first fit.

    Under Lightning's own launcher nothing is joined here (the other processes do not exist
    yet); across several nodes that launcher cannot let ranks wait for rank 0's data, which is a
    ConfigError saying to use torchrun or srun.
    """
    info = rank_info(train)
    if info.world_size <= 1 or _initialized_dist() is not None:
        return info
    env = cluster_environment()
    if info.launcher == "LightningEnvironment":
        if _int(train, "num_nodes") > 1 or info.node_rank > 0:
            raise ConfigError(
                "training on several nodes: start mbmt-train with torchrun (--nnodes N "
                "--nproc_per_node D) or srun (SLURM) on every node so that all processes exist "
                "from the start; Lightning's own launcher is supported on one node")
        return info
    import torch
    import torch.distributed as dist

    gpu = torch.cuda.is_available() and str(train.get("accelerator", "auto")) in (
        "auto", "gpu", "cuda")
    if gpu:
        torch.cuda.set_device(info.local_rank)
    os.environ["MASTER_ADDR"] = env.main_address
    os.environ["MASTER_PORT"] = str(env.main_port)
    dist.init_process_group("nccl" if gpu else "gloo", rank=info.global_rank,
                            world_size=info.world_size)
    log.info("rank %d of %d (%s): process group joined", info.global_rank, info.world_size,
             info.launcher)
    return info


def barrier() -> None:
    """Wait until every rank gets here. A no-op while no process group exists: then this
    process is alone (a single process, or Lightning's launcher before its first fit)."""
    dist = _initialized_dist()
    if dist is not None:
        dist.barrier()


def _initialized_dist() -> Any:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def _int(train: dict[str, Any] | None, key: str) -> int:
    value = (train or {}).get(key, 1)
    return int(value) if isinstance(value, int) and value > 0 else 1
