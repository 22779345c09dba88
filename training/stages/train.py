"""The training stages: ``pretrain-st``, ``assemble``, ``train-mbmt``, ``train-mt``,
``train-teacher`` and ``train-student``.

Each trains (or assembles) one model with :func:`~training.stages.common.fit_model` and writes
``<stage>/model.safetensors``; the caller (:func:`training.stages.run_stage`) writes
``done.json`` afterwards. ``pretrain-st`` trains one net per task into ``<stage>/<task>/``, each
with its own ``done.json`` so a crash in the third net does not repeat the first two.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mbmt_ros.tasks import SEGMENTATION, TASKS
from training.errors import CheckpointError, ConfigError
from training.model_configs import (
    MULTI_BACKBONE_ARCHS,
    multitask_arch,
    shared_backbones,
    st_model_configs,
    stage_model_config,
    teacher_model_config,
)
from training.run_dir import DONE_FILE, MODEL_FILE
from training.stages.common import (
    StageContext,
    fit_model,
    is_rank_zero,
    save_stage_model,
    seed_everything,
)
from training.stages.data import (
    ensure_dataset,
    image_size,
    make_dataset,
    make_loader,
    manifest_path,
    validation_holdout,
)
from training.stages.models import check_num_classes, load_stage_model

__all__ = ["pretrain_st", "assemble", "train_mbmt", "train_mt", "train_teacher",
           "train_student", "train_model"]

log = logging.getLogger(__name__)


def _manifest_classes(root: Path, path: Path) -> tuple[int, list[str]]:
    from training.data.manifest import open_manifest

    manifest = open_manifest(root, path)
    return manifest.num_classes, list(manifest.class_names)


def _data_metadata(ctx: StageContext, root: Path, manifest: Path) -> dict[str, Any]:
    """What an exported bundle needs to know about the data: input size and class names."""
    size = ctx.config.data["input_size"] or image_size(root, ctx.config.data["train_split"])
    return {"input_size": [int(size[0]), int(size[1])],
            "class_names": _manifest_classes(root, manifest)[1], "data": str(root),
            "manifest": str(manifest)}


def train_model(ctx: StageContext, model_cfg: dict[str, Any] | None = None, *,
                model: Any = None, out_dir: Path | None = None, name: str | None = None,
                loss_tasks: tuple[str, ...] | None = None, keep: Any = None,
                manifest_ref: str | None = None, seed_offset: int = 0,
                init: Path | None = None) -> dict[str, Any]:
    """Build (or take) a model, train it on the stage's data and save ``out_dir/model.safetensors``.

    ``init``: a model file of another run to start from (:mod:`training.stages.init`).
    Returns provenance for ``done.json``: the model path, epochs, data and manifest used.
    """
    from mbmt_ros.models import build_model
    from training.lightning_module import MultiTaskModule

    seed_everything(ctx.seed(seed_offset))
    root = ensure_dataset(ctx.config, ctx.run)
    manifest = manifest_path(ctx.config, ctx.run, manifest_ref if manifest_ref is not None
                             else ctx.spec.options.get("manifest"))
    if model is None:
        model = build_model(model_cfg)
    started = {}
    if init is not None:
        from training.stages.init import init_model

        started = init_model(model, init, f"stage '{ctx.spec.name}'" + (f"/{name}" if name else ""))
    check_num_classes(model.num_classes, _manifest_classes(root, manifest)[0],
                      f"the model of stage '{ctx.spec.name}'")
    data = ctx.config.data
    held = validation_holdout(ctx.config, ctx.run)
    if held:  # data.val_from_train: validate on held-out training frames, never on val_split
        train_ds = make_dataset(root, data["train_split"], manifest, data["input_size"],
                                augment=bool(ctx.train["augment"]),
                                keep=lambda e: e.index not in held and (keep is None or keep(e)))
        val_ds = make_dataset(root, data["train_split"], data["manifest"], data["input_size"],
                              keep=lambda e: e.index in held and (keep is None or keep(e)))
    else:
        train_ds = make_dataset(root, data["train_split"], manifest, data["input_size"],
                                augment=bool(ctx.train["augment"]), keep=keep)
        val_ds = make_dataset(root, data["val_split"], manifest, data["input_size"], keep=None)
    train_loader = make_loader(train_ds, ctx.train, shuffle=True, seed=ctx.seed(seed_offset))
    val_loader = make_loader(val_ds, ctx.train, shuffle=False, seed=ctx.seed(seed_offset))
    module = MultiTaskModule(model, ctx.train, tasks=loss_tasks)
    log.info("%s%s: training %s (%s) on %d samples for %d epochs", ctx.spec.name,
             f"/{name}" if name else "", model.config.get("arch"), ",".join(module.loss_tasks),
             len(train_ds), ctx.train["epochs"])
    trainer = fit_model(ctx, module, train_loader, val_loader, name=name)
    out_dir = out_dir or ctx.dir
    path = out_dir / MODEL_FILE
    info = {"model": str(path), "epochs": int(trainer.current_epoch),
            "global_step": int(trainer.global_step), "train_samples": len(train_ds),
            "manifest": str(manifest), "data": str(root), "tasks": list(module.loss_tasks),
            "weights": module.weighting.weights(), **started}
    if is_rank_zero():
        save_stage_model(path, module.model.cpu(), ctx, train=ctx.train,
                         **_data_metadata(ctx, root, manifest))
    return info


# -- stage 1 ---------------------------------------------------------------------------------


def pretrain_st(ctx: StageContext) -> dict[str, Any]:
    """One single-task net per task, each backbone + head trained fully, in ``<stage>/<task>/``."""
    from mbmt_ros.io import atomic_write_json

    models: dict[str, str] = {}
    for i, (task, cfg) in enumerate(st_model_configs(ctx.config.model, ctx.spec)):
        sub = ctx.dir / task
        if (sub / DONE_FILE).is_file() and (sub / MODEL_FILE).is_file():
            log.info("%s/%s: already trained, skipping", ctx.spec.name, task)
        else:
            info = train_model(ctx, cfg, out_dir=sub, name=task,
                               keep=lambda e, t=task: e.has(t), seed_offset=i,
                               init=_init(ctx, task))
            if is_rank_zero():
                atomic_write_json(sub / DONE_FILE, {"task": task, **info})
        models[task] = str(sub / MODEL_FILE)
    return {"models": models}


def _init(ctx: StageContext, task: str | None = None) -> Path | None:
    """The model file the stage's ``init:`` names (for one ST task), or None."""
    ref = ctx.spec.options.get("init")
    if not ref:
        return None
    from training.stages.init import init_file

    return init_file(ref, task)


# -- stage 2 ---------------------------------------------------------------------------------


def _st_checkpoints(ctx: StageContext, source: str, tasks: list[str], backbones: list[str],
                    num_classes: int, st_dir: Path | None = None) -> list[str]:
    """The ST checkpoints (one per MBMT backbone, in task order), checked before assembly:
    those of stage ``source``, or of ``st_dir`` (another run's pretrain-st folder, ``init:``)."""
    from mbmt_ros.models import read_checkpoint_config

    if len(backbones) != len(tasks):
        raise ConfigError(f"assemble: the MBMT model has {len(backbones)} backbones but "
                          f"{len(tasks)} tasks {tasks}; it takes one ST backbone per task")
    st_dir = st_dir if st_dir is not None else ctx.run.stage_dir(source, create=False)
    paths = []
    for task, backbone in zip(tasks, backbones, strict=True):
        path = st_dir / task / MODEL_FILE
        if not path.is_file():
            raise CheckpointError(
                f"assemble: the single-task checkpoint for {task} is missing ({path}); run "
                f"stage '{source}' (mbmt-train pretrain-st) first")
        cfg = read_checkpoint_config(path)
        if cfg.get("backbone") != backbone:
            raise CheckpointError(f"assemble: {path} has backbone {cfg.get('backbone')!r} but "
                                  f"the MBMT model expects {backbone!r} for {task}")
        if task == SEGMENTATION and int(cfg.get("num_classes", num_classes)) != num_classes:
            raise CheckpointError(
                f"assemble: mismatched class counts: {path} was trained with "
                f"{cfg.get('num_classes')} classes, the MBMT model has {num_classes}")
        paths.append(str(path))
    return paths


def _mbmt_config(ctx: StageContext, cold: bool, freeze: bool, source: str | None) -> dict[str, Any]:
    cfg = stage_model_config(ctx.config.model, ctx.spec, "mbmt")
    tasks = [t for t in TASKS if t in (cfg.get("tasks") or TASKS)]
    backbones = list(cfg.get("backbones") or shared_backbones(cfg))
    if cold:
        # a cold start trains randomly initialised backbones: freezing them would be meaningless
        cfg.update(backbone_checkpoints=None, freeze_backbones=False)
    elif source is None and ctx.spec.options.get("init"):
        # another run's ST nets (e.g. pretrained on the source domain only, training.stages.init)
        st_dir = Path(ctx.spec.options["init"])
        cfg.update(backbone_checkpoints=_st_checkpoints(
            ctx, str(st_dir), tasks, backbones, int(cfg.get("num_classes", 13)), st_dir=st_dir),
            freeze_backbones=bool(freeze))
    elif ctx.config.stage(source).kind == "train-mt":
        # no specialisation: every backbone is a copy of one multi-task net's backbone
        path = ctx.run.require_model(source, f"stage '{ctx.spec.name}'")
        cfg.update(backbone_checkpoints=[str(path)] * len(backbones),
                   freeze_backbones=bool(freeze))
    else:
        cfg.update(backbone_checkpoints=_st_checkpoints(
            ctx, source, tasks, backbones, int(cfg.get("num_classes", 13))),
            freeze_backbones=bool(freeze))
    return cfg


def assemble(ctx: StageContext) -> dict[str, Any]:
    """MBMT-Net from the ST backbones (frozen unless ``freeze: false``); decoder untrained."""
    from mbmt_ros.models import build_model

    opts = ctx.spec.options
    cfg = _mbmt_config(ctx, bool(opts["cold"]), bool(opts["freeze"]), opts.get("from"))
    seed_everything(ctx.seed())
    model = build_model(cfg)
    path = ctx.dir / MODEL_FILE
    root = ensure_dataset(ctx.config, ctx.run)
    if is_rank_zero():
        save_stage_model(path, model, ctx, backbone_checkpoints=cfg["backbone_checkpoints"],
                         **_data_metadata(ctx, root, manifest_path(ctx.config, ctx.run, None)))
    return {"model": str(path), "backbone_checkpoints": cfg["backbone_checkpoints"],
            "freeze_backbones": cfg["freeze_backbones"]}


def train_mbmt(ctx: StageContext) -> dict[str, Any]:
    """Train the MBMT decoder (DWA): from an ``assemble`` stage, or ``cold`` from scratch."""
    opts = ctx.spec.options
    if opts.get("from"):
        path = ctx.run.require_model(opts["from"], f"stage '{ctx.spec.name}'")
        # an assembled MBMT-Net, or MTI-Net decoding the same frozen ST backbones
        model = load_stage_model(path, MULTI_BACKBONE_ARCHS, f"stage '{ctx.spec.name}'")
        return {**train_model(ctx, model=model), "init": str(path)}
    if not opts["cold"]:
        raise ConfigError(f"stage '{ctx.spec.name}': train-mbmt needs 'from: <assemble stage>' "
                          "or 'cold: true'")
    return {**train_model(ctx, _mbmt_config(ctx, cold=True, freeze=False, source=None)),
            "init": "cold"}


# -- stages 3, 4, 6 --------------------------------------------------------------------------


def train_mt(ctx: StageContext) -> dict[str, Any]:
    """The MT-Net baseline (one shared backbone, all tasks, DWA) - or the multi-task
    architecture the config names (``mtinet``, ``mtunet``; see :func:`multitask_arch`)."""
    shared = ctx.config.model
    return train_model(ctx, stage_model_config(shared, ctx.spec, multitask_arch(shared)),
                       init=_init(ctx))


def train_teacher(ctx: StageContext) -> dict[str, Any]:
    """The multi-modal teacher (RGB + the abundant label as input) on frames with both labels:
    the MBMT-style ``teacher``, or ``mti_teacher`` when the stage's or shared ``arch`` says so."""
    cfg = teacher_model_config(ctx.config.model, ctx.spec)
    modality = cfg["extra_modality"]
    tasks = tuple(t for t in TASKS if t in cfg.get("tasks", TASKS))
    cfg["tasks"] = list(tasks)
    needed = set(tasks) | {modality}
    info = train_model(ctx, cfg, keep=lambda e: all(e.has(t) for t in needed), init=_init(ctx))
    return {**info, "extra_modality": modality}


def train_student(ctx: StageContext) -> dict[str, Any]:
    """The RGB-only multi-task student on ground truth + pseudo labels (UMMT-PS); with a
    make-split manifest and no pseudo labels it is the UMMT baseline. MT-Net unless the
    config names another RGB multi-task architecture (the stage's or the shared ``arch``)."""
    shared = ctx.config.model
    return train_model(ctx, stage_model_config(shared, ctx.spec, multitask_arch(shared)),
                       init=_init(ctx))

