"""Pipeline configs: load a YAML with ``model``, ``data``, ``train`` and ``stages`` sections.

A pipeline config names the shared model settings (``model:``, the ``build_model`` keys of
docs/models.md), where the data comes from (``data:``), the training defaults (``train:``) and
the ordered list of stages (``stages:``). Every stage is ``{name, kind, ...options}``; ``kind``
is an ``mbmt-train`` stage command (defaults to ``name``), ``name`` is its folder in the run
directory, and ``model:``/``train:`` inside a stage override the shared sections for that stage.
Validation happens once, here, so a typo or a bad value fails before any training starts:
the shape here, every value through the typed schema of :mod:`training.config_schema`
(pydantic) and every model each stage will build through :mod:`training.config_models`. An
error is one line naming the file - or the ``--set`` flag that supplied the value - and the key.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from training.errors import ConfigError

__all__ = ["PipelineConfig", "StageSpec", "load_config", "read_config", "parse_config",
           "STAGE_KINDS",
           "TRAIN_DEFAULTS", "DATA_DEFAULTS", "deep_merge"]

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 8,
    "lr": 1.0e-4,
    "weight_decay": 0.0,
    "optimizer": "adam",            # adam | adamw | sgd
    "weighting": "dwa",             # a training.weighting name
    "weighting_options": {},        # method options (DWA: temperature, default 2.0)
    "precision": "auto",            # auto -> 16-mixed on CUDA, 32-true on CPU
    "accelerator": "auto",
    "devices": 1,
    "strategy": "auto",
    "num_nodes": 1,
    "num_workers": 0,
    "num_threads": 0,               # torch CPU threads; 0 = torch's default
    "augment": False,
    "max_steps": -1,
    "limit_train_batches": 1.0,
    "limit_val_batches": 1.0,
    "gradient_clip": 0.0,
    "log_every_n_steps": 10,
    "deterministic": True,
}
DATA_DEFAULTS: dict[str, Any] = {
    "root": None,                   # dataset folder (NYUv2 layout); None -> <run dir>/data
    "synth": None,                  # {count, size: [H, W], seed, val_fraction, domain} to generate it
    "input_size": None,             # [H, W] the networks see; None -> the files' size
    "train_split": "train",
    "val_split": "val",
    "manifest": None,               # label manifest; None -> <root>/manifest.json
    "val_from_train": 0.0,          # fraction of train held out for validation (0: val_split)
}
_SYNTH_KEYS = {"count", "size", "seed", "val_fraction", "domain"}

#: stage kind -> the options it accepts (besides name/kind/model/train), with defaults.
STAGE_KINDS: dict[str, dict[str, Any]] = {
    "make-split": {"depth": None, "segmentation": None, "normals": None, "seed": None},
    "pretrain-st": {"tasks": None, "manifest": None, "init": None},
    "assemble": {"from": None, "cold": False, "freeze": True, "init": None},
    "train-mbmt": {"from": None, "cold": False, "freeze": True, "manifest": None},
    "train-mt": {"manifest": None, "init": None},
    "train-teacher": {"manifest": None, "extra_modality": "depth", "init": None},
    "pseudo-label": {"teacher": None, "manifest": None, "tau": 0.9, "task": "segmentation"},
    "train-student": {"manifest": None, "init": None},
    "evaluate": {"stages": None, "baseline": None, "split": None, "samples": 3},
    "affinity": {"manifest": None},
    "export": {"from": None, "input_size": None},
}
_TRAINING_KINDS = {"pretrain-st", "train-mbmt", "train-mt", "train-teacher", "train-student",
                   "affinity"}
_TOP_KEYS = {"name", "seed", "model", "data", "train", "stages", "description", "input_size"}


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` updated with ``override``; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class StageSpec:
    """One entry of ``stages:``: its folder name, command kind and resolved options."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)   # overrides of the shared model section
    train: dict[str, Any] = field(default_factory=dict)   # resolved training settings

    @property
    def trains(self) -> bool:
        return self.kind in _TRAINING_KINDS

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.options, "model": self.model,
                "train": self.train}


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline config."""

    name: str
    path: Path | None
    seed: int
    model: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    stages: tuple[StageSpec, ...]
    raw: dict[str, Any]

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise ConfigError(f"config '{self.name}' has no stage named '{name}'; its stages are "
                          f"{[s.name for s in self.stages]}")

    def first_of_kind(self, kind: str) -> StageSpec:
        for spec in self.stages:
            if spec.kind == kind:
                return spec
        raise ConfigError(f"config '{self.name}' lists no '{kind}' stage; add one under "
                          f"stages: (e.g. '- {{name: {kind}, kind: {kind}}}') or pass --stage")


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML; every problem is a ConfigError naming the file."""
    return parse_config(read_config(path), path=Path(path))


def installed_config(path: Path) -> Path:
    """``path`` itself when it exists or is absolute, else the installed pipeline config it
    names (``share/mbmt_ros/config/...`` via :func:`mbmt_ros.resources.share_file`)."""
    if path.exists() or path.is_absolute():
        return path
    from mbmt_ros.resources import ResourceNotFoundError, share_file

    parts = path.parts if path.parts[:1] == ("config",) else \
        ("config", "train", *path.parts[:-1], path.name if path.suffix else f"{path.name}.yaml")
    try:
        return share_file(*parts)
    except ResourceNotFoundError:
        return path


def read_config(path: str | Path) -> Any:
    """The parsed YAML of a pipeline config, not yet validated (``--set`` applies to it).

    A relative path that does not exist here (``config/train/tiny.yaml``, ``tiny.yaml``,
    ``tiny``) is looked up among the installed configs, so the documented commands work from
    any directory and from a non-editable install.
    """
    path = installed_config(Path(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (see config/train/ for examples)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    return raw


def parse_config(raw: Any, path: Path | None = None,
                 overrides: list[str] | None = None) -> PipelineConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`); ``overrides`` are
    the ``--set KEY=VALUE`` items applied to it, so that an error names the flag."""
    where = str(path) if path is not None else "config"
    locate = _locator(where, overrides)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping with model/data/train/stages")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    name = raw.get("name") or (path.stem if path is not None else "run")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{where}: seed must be an integer, got {seed!r}")
    model = _mapping(raw.get("model"), f"{where}: model")
    if not model:
        raise ConfigError(f"{where}: a 'model:' section is required (see docs/models.md)")
    data = _section(raw.get("data"), DATA_DEFAULTS, "data", locate)
    if data["input_size"] is None and raw.get("input_size") is not None:
        data["input_size"] = raw["input_size"]  # the model files' top-level input size
    train = _section(raw.get("train"), TRAIN_DEFAULTS, "train", locate)
    train = _check_train(train, "train", locate)
    data = _check_data(data, "data", locate)
    stages = _parse_stages(raw.get("stages"), train, where, locate)
    from training.config_models import check_models

    check_models(model, stages, locate)
    return PipelineConfig(name=str(name), path=path, seed=seed, model=model, data=data,
                          train=train, stages=stages, raw=raw)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
    return copy.deepcopy(value)


def _locator(where: str, overrides: list[str] | None) -> Callable[[str], str]:
    """``locate(dotted key)``: the ``--set`` flag that set that key (or a section above or
    below it), else the config file."""
    sets = [(item.partition("=")[0], item) for item in overrides or []]

    def locate(key: str) -> str:
        for flag, item in reversed(sets):
            if key == flag or key.startswith(flag + ".") or flag.startswith(key + "."):
                return f"--set {item}"
        return where
    return locate


def _section(value: Any, defaults: dict[str, Any], key: str,
             locate: Callable[[str], str]) -> dict[str, Any]:
    value = _mapping(value, f"{locate(key)}: {key}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ConfigError(f"{locate(f'{key}.{unknown[0]}')}: {key}: unknown key(s) {unknown}; "
                          f"allowed: {sorted(defaults)}")
    return deep_merge(defaults, value)


def _validated(schema: Any, values: dict[str, Any], key: str,
               locate: Callable[[str], str]) -> dict[str, Any]:
    """``values`` checked by a :mod:`training.config_schema` model; one-line ConfigError."""
    from training.config_schema import first_error, validate_section

    try:
        return validate_section(schema, values)
    except ValidationError as exc:
        sub, reason, value = first_error(exc)
        full = f"{key}.{sub}" if sub else key
        raise ConfigError(f"{locate(full)}: {full}: {reason} (got {value!r})") from None


def _check_train(train: dict[str, Any], key: str,
                 locate: Callable[[str], str]) -> dict[str, Any]:
    from training.config_schema import TrainSchema

    return _validated(TrainSchema, train, key, locate)


def _check_data(data: dict[str, Any], key: str, locate: Callable[[str], str]) -> dict[str, Any]:
    from training.config_schema import DataSchema

    where = f"{locate(key)}: {key}"
    synth = data["synth"]
    if synth is not None:
        if not isinstance(synth, dict):
            raise ConfigError(f"{where}.synth must be a mapping with {sorted(_SYNTH_KEYS)}")
        unknown = sorted(set(synth) - _SYNTH_KEYS)
        if unknown:
            raise ConfigError(f"{where}.synth: unknown key(s) {unknown}; allowed: {sorted(_SYNTH_KEYS)}")
        if not isinstance(synth.get("count"), int) or synth["count"] < 2:
            raise ConfigError(f"{where}.synth.count must be an integer >= 2")
    elif data["root"] is None:
        raise ConfigError(f"{where}: give either 'root' (a dataset folder) or 'synth' (to generate one)")
    size = data["input_size"]
    if size is not None and (not isinstance(size, (list, tuple)) or len(size) != 2
                             or not all(isinstance(v, int) and v > 0 for v in size)):
        raise ConfigError(f"{where}.input_size must be [height, width] in pixels, got {size!r}")
    return _validated(DataSchema, data, key, locate)


def _parse_stages(value: Any, train: dict[str, Any], where: str,
                  locate: Callable[[str], str]) -> tuple[StageSpec, ...]:
    from training.config_schema import STAGE_OPTION_SCHEMAS

    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: 'stages:' must be a non-empty list; kinds: {sorted(STAGE_KINDS)}")
    specs: list[StageSpec] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(value):
        here = f"{where}: stages[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{here} must be a mapping with at least a 'name'")
        entry = dict(entry)
        name = str(entry.pop("name"))
        if not name or "/" in name or name.startswith(".") or name in ("data", "config.yaml"):
            raise ConfigError(f"{here}: '{name}' is not a usable stage folder name")
        if name in seen:
            raise ConfigError(f"{here}: stage name '{name}' is used twice")
        kind = str(entry.pop("kind", name))
        if kind not in STAGE_KINDS:
            raise ConfigError(f"{here} ('{name}'): unknown kind '{kind}'; kinds: {sorted(STAGE_KINDS)}")
        model = _mapping(entry.pop("model", None), f"{here}.model")
        overrides = _mapping(entry.pop("train", None), f"{here}.train")
        unknown = sorted(set(overrides) - set(TRAIN_DEFAULTS))
        if unknown:
            raise ConfigError(f"{here}.train: unknown key(s) {unknown}; allowed: {sorted(TRAIN_DEFAULTS)}")
        stage_train = deep_merge(train, overrides)
        if "weighting" in overrides and overrides["weighting"] != train["weighting"]:
            # another method's options would be unknown to it: take only the stage's own
            stage_train["weighting_options"] = copy.deepcopy(
                overrides.get("weighting_options") or {})
        stage_train = _check_train(stage_train, f"stages.{name}.train", locate)
        allowed = STAGE_KINDS[kind]
        unknown = sorted(set(entry) - set(allowed))
        if unknown:
            raise ConfigError(f"{here} ('{name}', kind {kind}): unknown option(s) {unknown}; "
                              f"allowed: {sorted(allowed)}")
        options = _validated(STAGE_OPTION_SCHEMAS[kind], {**allowed, **entry},
                             f"stages.{name}", locate)
        _check_refs(name, kind, options, seen, here)
        seen[name] = kind
        specs.append(StageSpec(name=name, kind=kind, options=options, model=model, train=stage_train))
    return tuple(specs)


# option -> stage kinds it may name (a string that is not an earlier stage is taken as a path)
_REF_KINDS = {
    ("assemble", "from"): {"pretrain-st", "train-mt"},  # train-mt: its backbone, once per task
    ("train-mbmt", "from"): {"assemble"},
    ("pseudo-label", "teacher"): {"train-teacher"},
    ("export", "from"): _TRAINING_KINDS - {"affinity"},
    ("evaluate", "baseline"): {"pretrain-st"},
}


def _check_refs(name: str, kind: str, options: dict[str, Any], seen: dict[str, str], here: str) -> None:
    for (k, opt), kinds in _REF_KINDS.items():
        if k != kind:
            continue
        ref = options.get(opt)
        if ref is None:
            if kind == "assemble" and opt == "from" and not (options.get("cold")
                                                             or options.get("init")):
                raise ConfigError(f"{here} ('{name}'): 'from:' must name the pretrain-st stage "
                                  "(or give init: <another run's pretrain-st folder>, or set "
                                  "cold: true)")
            if kind in ("pseudo-label", "export") and opt in ("teacher", "from"):
                raise ConfigError(f"{here} ('{name}'): '{opt}:' must name an earlier stage")
            continue
        if ref not in seen:
            raise ConfigError(f"{here} ('{name}'): {opt}: '{ref}' is not an earlier stage; "
                              f"earlier stages: {list(seen)}")
        if seen[ref] not in kinds:
            raise ConfigError(f"{here} ('{name}'): {opt}: '{ref}' is a {seen[ref]} stage, "
                              f"expected one of {sorted(kinds)}")
    manifest = options.get("manifest")
    if manifest is not None and manifest in seen and seen[manifest] not in ("make-split", "pseudo-label"):
        raise ConfigError(f"{here} ('{name}'): manifest: '{manifest}' must be a make-split or "
                          "pseudo-label stage (or a manifest file path)")
    if kind == "pseudo-label":
        tau = options["tau"]
        if not isinstance(tau, (int, float)) or not 0.0 <= tau < 1.0:
            raise ConfigError(f"{here} ('{name}'): tau must be in [0, 1), got {tau!r}")
    if kind == "evaluate":
        for ref in options.get("stages") or []:
            if ref not in seen:
                raise ConfigError(f"{here} ('{name}'): stages: '{ref}' is not an earlier stage")
