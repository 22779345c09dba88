"""What every stage shares: its context (config, run folder, spec), seeding and the Lightning fit.

:func:`fit_model` is the one place a Trainer is built: mixed precision on CUDA, atomic
``weights_only`` checkpoints (``checkpoints/last.ckpt``, resumed automatically), TensorBoard
logs and ``metrics.csv`` under ``<stage>/logs`` (losses and validation metrics per epoch,
:mod:`training.metrics_log`) drawn as ``<stage>/curves.png`` (:mod:`training.curves`), progress bars, and DDP through whatever launcher started the
process (``torchrun`` / Lightning) - ``train.devices`` / ``train.strategy`` / ``train.num_nodes``.
Only global rank 0 writes final artefacts (``training.distributed``). Checkpoints carry the
stage's fingerprint and ``last.ckpt`` is resumed only under the same fingerprint.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.config import PipelineConfig, StageSpec
from training.errors import TrainingError
from training.run_dir import RunDir, config_digest

__all__ = ["StageContext", "fit_model", "resolve_precision", "resolve_strategy",
           "seed_everything", "is_rank_zero", "save_stage_model"]

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """One stage about to run: the pipeline config, the run folder and the stage's spec."""

    config: PipelineConfig
    run: RunDir
    spec: StageSpec
    #: the stage's fingerprint (training.stages.fingerprint), set by run_stage
    fingerprint: str | None = None

    @property
    def dir(self) -> Path:
        return self.run.stage_dir(self.spec.name)

    @property
    def train(self) -> dict[str, Any]:
        return self.spec.train

    @property
    def digest(self) -> str:
        return config_digest({"stage": self.spec.as_dict(), "model": self.config.model,
                              "data": self.config.data, "seed": self.config.seed})

    def seed(self, offset: int = 0) -> int:
        return self.config.seed + offset


def is_rank_zero() -> bool:
    """True in a single process and on global rank 0 of a DDP job, as Lightning's cluster
    environments see it (``training.distributed``)."""
    from training.distributed import is_rank_zero as _is_rank_zero

    return _is_rank_zero()


def seed_everything(seed: int) -> None:
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)


def resolve_precision(train: dict[str, Any]) -> str:
    """``auto`` -> bf16 (or fp16) mixed precision on CUDA, full fp32 on CPU."""
    precision = str(train.get("precision", "auto"))
    if precision != "auto":
        return precision
    wants_gpu = str(train.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


#: DDP strategy names that Lightning also offers with ``_find_unused_parameters_true``
_DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def resolve_strategy(train: dict[str, Any]) -> str:
    """``train.strategy`` with DDP's unused-parameter search switched on.

    A batch may lack a task's labels (imbalanced splits, pseudo labels) - its head then gets no
    gradient - and teachers predict tasks they are not trained on, so plain DDP would fail
    ("Expected to have finished reduction in the prior iteration"). ``ddp`` therefore means
    Lightning's ``ddp_find_unused_parameters_true`` (likewise ``ddp_spawn`` / ``ddp_fork``);
    an explicit ``..._find_unused_parameters_false`` is kept for models that use every
    parameter in every step.
    """
    strategy = train.get("strategy", "auto")
    if isinstance(strategy, str) and strategy in _DDP_STRATEGIES:
        return f"{strategy}_find_unused_parameters_true"
    return strategy


def fit_model(ctx: StageContext, module: Any, train_loader: Any, val_loader: Any | None,
              name: str | None = None) -> Any:
    """Train ``module`` for the stage's epochs, resuming ``<stage>/<name>/checkpoints/last.ckpt``.

    ``name`` separates several trainings inside one stage (pretrain-st trains one net per task).
    Returns the Trainer; raises TrainingError if training was interrupted.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from training.checkpoint_io import SafeCheckpointIO, checkpoint_fingerprint
    from training.console import quiet_console
    from training.metrics_log import ResumableCSVLogger

    quiet_console()  # Lightning is imported now: drop its own console handler (training.console)

    train = ctx.train
    base = ctx.dir / name if name else ctx.dir
    ckpt_dir = base / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    # one file, replaced (atomically, SafeCheckpointIO) at the end of every epoch
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1,
                                 save_last=False, every_n_epochs=1,
                                 enable_version_counter=False)
    resume = str(last) if last.is_file() else None
    if resume and ctx.fingerprint is not None and checkpoint_fingerprint(last) != ctx.fingerprint:
        log.warning("%s: not resuming %s: it was written under another config or other inputs "
                    "(fingerprint); training afresh", ctx.spec.name, last)
        resume = None
    if resume:
        log.info("%s: resuming from %s", ctx.spec.name, resume)
    loggers = [TensorBoardLogger(str(base), name="logs", version="", default_hp_metric=False),
               ResumableCSVLogger(base, name="logs", append=resume is not None)]
    trainer = pl.Trainer(
        max_epochs=int(train["epochs"]),
        max_steps=int(train["max_steps"]),
        accelerator=train["accelerator"],
        devices=train["devices"],
        num_nodes=int(train["num_nodes"]),
        strategy=resolve_strategy(train),
        precision=resolve_precision(train),
        default_root_dir=str(base),
        logger=loggers,
        callbacks=[checkpoint, TQDMProgressBar(refresh_rate=max(1, len(train_loader) // 5))],
        plugins=[SafeCheckpointIO(fingerprint=ctx.fingerprint)],
        deterministic="warn" if train["deterministic"] else False,
        log_every_n_steps=int(train["log_every_n_steps"]),
        limit_train_batches=train["limit_train_batches"],
        limit_val_batches=train["limit_val_batches"] if val_loader is not None else 0,
        gradient_clip_val=float(train["gradient_clip"]) or None,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                ckpt_path=resume, weights_only=True)
    if is_rank_zero():
        _draw_curves(ctx, base, name)
    if trainer.interrupted:
        raise TrainingError(f"stage '{ctx.spec.name}' was interrupted; re-run it to resume "
                            f"from {last}")
    return trainer


def _draw_curves(ctx: StageContext, base: Path, name: str | None) -> None:
    """``<base>/curves.png`` from ``<base>/logs/metrics.csv`` (training.curves)."""
    from training.curves import CURVES_FILE, save_curves
    from training.metrics_log import METRICS_FILE

    csv_path = base / "logs" / METRICS_FILE
    if csv_path.is_file():
        png = save_curves(csv_path, base / CURVES_FILE,
                          title=f"{ctx.spec.name}/{name}" if name else ctx.spec.name)
        if png is not None:
            log.info("%s: training curves in %s", ctx.spec.name, png)


def save_stage_model(path: Path, model: torch.nn.Module, ctx: StageContext,
                     **metadata: Any) -> Path:
    """Save final weights with ``save_model`` (atomic safetensors) plus the stage's provenance."""
    from mbmt_ros.models import save_model

    meta = {"stage": ctx.spec.name, "kind": ctx.spec.kind, "pipeline": ctx.config.name,
            "seed": ctx.config.seed, **metadata}
    save_model(path, model, metadata=meta)
    return path
