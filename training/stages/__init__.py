"""The pipeline stages, one function per stage kind, and the runner that skips finished ones.

``run_stage(config, run, name)`` runs one stage of a config into ``<run dir>/<name>/`` unless
its ``done.json`` exists; ``run_pipeline`` runs the config's stages in order. Under a DDP
launcher (``torchrun``) every rank runs the same stages, rank 0 alone writes shared artefacts
and all ranks meet at a barrier after each stage.
"""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from training.config import PipelineConfig
from training.errors import ConfigError, TrainingError
from training.run_dir import RunDir
from training.stages.common import StageContext, is_rank_zero

__all__ = ["RUNNERS", "run_stage", "run_pipeline", "default_run_dir"]

log = logging.getLogger(__name__)


def _runners() -> dict[str, Callable[[StageContext], dict[str, Any]]]:
    from training.stages import affinity, evaluate, export, pseudo, split, train

    return {
        "make-split": split.make_split,
        "pretrain-st": train.pretrain_st,
        "assemble": train.assemble,
        "train-mbmt": train.train_mbmt,
        "train-mt": train.train_mt,
        "train-teacher": train.train_teacher,
        "pseudo-label": pseudo.pseudo_label,
        "train-student": train.train_student,
        "evaluate": evaluate.evaluate,
        "affinity": affinity.affinity,
        "export": export.export,
    }


RUNNERS = _runners


def default_run_dir(config: PipelineConfig) -> str:
    """``runs/<config name>``."""
    return os.path.join("runs", config.name)


def _distributed_setup() -> None:
    """Join the launcher's process group early (torchrun sets WORLD_SIZE) so stages can wait
    for rank 0's artefacts; Lightning reuses an existing group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_stage(config: PipelineConfig, run: RunDir, name: str, force: bool = False) -> dict[str, Any]:
    """Run stage ``name`` unless finished; ``force`` deletes its folder and runs it afresh.

    An unfinished stage (no ``done.json``) resumes from its ``checkpoints/last.ckpt``.
    """
    spec = config.stage(name)
    ctx = StageContext(config, run, spec)
    if run.is_done(name) and not force:
        done = run.read_done(name)
        if done.get("config_digest") != ctx.digest:
            log.warning("stage '%s' finished with a different config; keeping it (delete %s or "
                        "pass --force to re-run it)", name, run.root / name / "done.json")
        log.info("stage '%s' (%s): already done, skipping", name, spec.kind)
        return done
    runners = RUNNERS()
    if spec.kind not in runners:
        raise ConfigError(f"no runner for stage kind {spec.kind!r}")
    _distributed_setup()
    if int(spec.train.get("num_threads") or 0) > 0:
        import torch

        torch.set_num_threads(int(spec.train["num_threads"]))
    if force and is_rank_zero():
        # start the stage afresh: its old weights, checkpoints and per-net markers go
        import shutil

        shutil.rmtree(run.root / name, ignore_errors=True)
    _barrier()
    log.info("stage '%s' (%s): starting in %s", name, spec.kind, run.root / name)
    try:
        info = runners[spec.kind](ctx)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise TrainingError(
            f"stage '{name}': no space left on the device while writing ({exc}); every file is "
            "written atomically, so finished artefacts and the last checkpoint are intact - free "
            "some space and re-run to continue") from exc
    if is_rank_zero():
        run.mark_done(name, spec.kind, ctx.digest, **(info or {}))
    _barrier()
    log.info("stage '%s' (%s): done", name, spec.kind)
    return info


def run_pipeline(config: PipelineConfig, run: RunDir, only: Iterable[str] | None = None,
                 force: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Run the config's stages in order (or just ``only``), skipping finished ones."""
    only = list(only) if only is not None else None
    force = set(force)
    if is_rank_zero():
        run.root.mkdir(parents=True, exist_ok=True)
        run.write_config({**config.raw, "name": config.name})
    results = {}
    for spec in config.stages:
        if only is not None and spec.name not in only:
            continue
        results[spec.name] = run_stage(config, run, spec.name, force=spec.name in force)
    return results
