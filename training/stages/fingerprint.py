"""Stage fingerprints: when a finished stage, or a half-finished folder, may be reused.

A stage's fingerprint hashes its own resolved config (``StageContext.digest``: the stage's
options, model, training settings, the data section and the seed) together with what it reads
from every earlier stage: that stage's fingerprint and ``run_id`` (new on every run of it,
``done.json``). So a changed config changes the stage's fingerprint, and a stage that is re-run
for any reason - changed config, changed upstream, ``--force`` - changes the fingerprint of
everything that reads it, transitively, and of nothing else.

What a stage reads (:func:`reads`): ``from:`` and ``teacher:``; a ``manifest:`` that names a
stage (or ``data.manifest`` for the stages that use the default manifest); ``evaluate``: the
stages it evaluates and its baseline; ``export``: its ``from:`` stage and the ``evaluate``
stages whose ``metrics.json`` of that stage it embeds.
"""
from __future__ import annotations

from typing import Any

from training.config import PipelineConfig, StageSpec
from training.run_dir import RunDir, config_digest

__all__ = ["EVALUATED_KINDS", "reads", "stage_fingerprint", "fingerprint_of", "evaluated_stages", "plan_stage"]

#: stage kinds that read no manifest of another stage
_NO_MANIFEST = ("make-split", "evaluate", "export")
#: stage kinds an ``evaluate`` stage scores by default (every earlier one of these kinds)
EVALUATED_KINDS = ("pretrain-st", "train-mt", "train-mbmt", "train-teacher", "train-student")


def evaluated_stages(config: PipelineConfig, spec: StageSpec) -> list[str]:
    """The stages an ``evaluate`` stage scores: its ``stages:`` or every earlier trained one."""
    if spec.options.get("stages"):
        return list(spec.options["stages"])
    return [s.name for s in _earlier(config, spec) if s.kind in EVALUATED_KINDS]


def reads(config: PipelineConfig, spec: StageSpec) -> list[str]:
    """The earlier stages whose outputs ``spec`` reads (sorted, no duplicates)."""
    earlier = {s.name for s in _earlier(config, spec)}
    opts = spec.options
    refs = [opts.get("from"), opts.get("teacher")]
    if spec.kind not in _NO_MANIFEST:
        refs.append(opts.get("manifest") or config.data.get("manifest"))
    if spec.kind == "evaluate":
        refs += evaluated_stages(config, spec) + [opts.get("baseline")]
    if spec.kind == "export":
        refs += [s.name for s in _earlier(config, spec) if s.kind == "evaluate"
                 and opts.get("from") in evaluated_stages(config, s)]
    return sorted({r for r in refs if isinstance(r, str) and r in earlier})


def stage_fingerprint(config: PipelineConfig, run: RunDir, spec: StageSpec,
                      digest: str) -> str:
    """``digest`` (the stage's own config) + the recorded identity of every stage it reads
    (+ the SHA-256 of the files its ``init:`` starts from, when it names one)."""
    upstream: dict[str, Any] = {}
    for name in reads(config, spec):
        if run.is_done(name):
            done = run.read_done(name)
            upstream[name] = [done.get("fingerprint") or done.get("config_digest"),
                              done.get("run_id") or done.get("finished_at")]
        else:
            upstream[name] = None
    if spec.options.get("init"):  # absent otherwise: existing fingerprints stay as they were
        from training.model_configs import st_tasks
        from training.stages.init import init_identity

        tasks = None
        if spec.kind == "pretrain-st":
            tasks = st_tasks(config.model, spec)
        elif spec.kind == "assemble":
            from mbmt_ros.tasks import TASKS

            wanted = {**config.model, **spec.model}.get("tasks") or TASKS
            tasks = [t for t in TASKS if t in wanted]
        return config_digest({"config": digest, "reads": upstream,
                              "init": init_identity(spec.kind, spec.options["init"], tasks)})
    return config_digest({"config": digest, "reads": upstream})


def fingerprint_of(config: PipelineConfig, run: RunDir, name: str) -> str:
    """The fingerprint stage ``name`` of ``config`` has now in ``run``."""
    from training.stages.common import StageContext

    spec = config.stage(name)
    return stage_fingerprint(config, run, spec, StageContext(config, run, spec).digest)


def plan_stage(run: RunDir, name: str, fingerprint: str, force: bool) -> str:
    """What to do with stage ``name``'s folder before running it:

    ``skip`` (finished with this fingerprint), ``force`` (delete it, run afresh), ``stale``
    (finished or started under another fingerprint: set it aside, run afresh), ``resume``
    (started under this fingerprint: keep its checkpoints) or ``fresh`` (nothing there).
    """
    if force:
        return "force"
    folder = run.root / name
    if run.is_done(name):
        return "skip" if run.read_done(name).get("fingerprint") == fingerprint else "stale"
    if folder.is_dir() and any(folder.iterdir()):
        return "resume" if run.read_fingerprint(name) == fingerprint else "stale"
    return "fresh"


def _earlier(config: PipelineConfig, spec: StageSpec) -> list[StageSpec]:
    names = [s.name for s in config.stages]
    return list(config.stages[:names.index(spec.name)])
