"""The typed schema of a pipeline config's values (pydantic v2): types, ranges and enums.

:mod:`training.config` checks the shape (sections, unknown keys, stage references); this
module checks every value, before any stage starts: ``train:`` (shared and per stage),
``data:``, and each stage kind's options. :func:`first_error` turns a pydantic
``ValidationError`` into one ``(dotted key, reason)`` pair, which the caller words as one line
naming the config file - or the ``--set`` flag that supplied the value.
The model sections are checked against the architecture registry and timm's model names in
:mod:`training.config_models`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from mbmt_ros.tasks import TASKS

__all__ = ["TrainSchema", "DataSchema", "STAGE_OPTION_SCHEMAS", "PRECISIONS", "ACCELERATORS",
           "validate_section", "first_error"]

#: ``train.precision``: ``auto`` or a Lightning precision
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true",
              "32", "16", "bf16", "64", "transformer-engine", "transformer-engine-float16")
#: ``train.accelerator``: ``auto`` or a Lightning accelerator
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
TaskName = Literal["segmentation", "depth", "normals"]
assert set(TASKS) == {"segmentation", "depth", "normals"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSchema(_Strict):
    """``train:`` (docs/training.md "Training settings")."""

    epochs: PosInt
    batch_size: PosInt
    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)]
    optimizer: Literal["adam", "adamw", "sgd"]
    weighting: str
    weighting_options: dict[str, Any]
    precision: str
    accelerator: Literal[ACCELERATORS]  # type: ignore[valid-type]
    devices: PosInt
    strategy: str
    num_nodes: PosInt
    num_workers: NonNegInt
    num_threads: NonNegInt
    augment: StrictBool
    max_steps: Annotated[int, Field(ge=-1)]
    limit_train_batches: PosInt | Annotated[float, Field(gt=0, le=1)]
    limit_val_batches: NonNegInt | Annotated[float, Field(ge=0, le=1)]
    gradient_clip: Annotated[float, Field(ge=0)]
    log_every_n_steps: PosInt
    deterministic: StrictBool

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> str:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if text not in PRECISIONS:
            raise ValueError(f"unknown precision {value!r}; use one of {list(PRECISIONS)}")
        return text

    @field_validator("weighting")
    @classmethod
    def _weighting(cls, value: str) -> str:
        from training.weighting import available_weightings

        if value not in available_weightings():
            raise ValueError(f"unknown weighting {value!r}; use one of {available_weightings()}")
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value == "auto":
            return value
        from lightning.pytorch.strategies import StrategyRegistry

        known = StrategyRegistry.available_strategies()
        if value not in known:
            raise ValueError(f"unknown strategy {value!r}; use auto or one of Lightning's: "
                             f"{', '.join(s for s in known if 'ddp' in s or s == 'fsdp')}, ...")
        return value


class SynthSchema(_Strict):
    """``data.synth:``: generate synthetic scenes into ``<run dir>/data``."""

    count: Annotated[int, Field(ge=2)]
    size: Annotated[list[PosInt], Field(min_length=2, max_length=2)] = [64, 80]
    seed: int | None = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    #: which synthetic distribution (training.data.synth.scene.DOMAINS); None: target
    domain: Literal["target", "source"] | None = None


class DataSchema(_Strict):
    """``data:`` (docs/data.md)."""

    root: str | None
    synth: SynthSchema | None
    input_size: Annotated[list[PosInt], Field(min_length=2, max_length=2)] | None
    train_split: str
    val_split: str
    manifest: str | None
    val_from_train: Annotated[float, Field(ge=0, lt=1)]


# -- per stage kind: its options (besides name/kind/model/train) --------------------------------

class _MakeSplit(_Strict):
    depth: NonNegInt | None
    segmentation: NonNegInt | None
    normals: NonNegInt | None
    seed: int | None


class _PretrainST(_Strict):
    tasks: list[TaskName] | None
    manifest: str | None
    init: str | None  # folder with <task>/model.safetensors of another run (training.stages.init)


class _Assemble(_Strict):
    from_: str | None = Field(alias="from")
    cold: StrictBool
    freeze: StrictBool
    init: str | None = None  # assemble only: another run's pretrain-st folder instead of from:


class _TrainMBMT(_Assemble):
    manifest: str | None


class _Manifest(_Strict):
    manifest: str | None


class _Init(_Manifest):
    init: str | None  # weights of another run to start from (training.stages.init)


class _Teacher(_Init):
    extra_modality: Literal["depth", "segmentation"]


class _Pseudo(_Manifest):
    teacher: str | None
    tau: Annotated[float, Field(ge=0, lt=1)]
    task: Literal["segmentation"]


class _Evaluate(_Strict):
    stages: list[str] | None
    baseline: str | None
    split: str | None
    samples: NonNegInt


class _Export(_Strict):
    from_: str | None = Field(alias="from")
    input_size: Annotated[list[PosInt], Field(min_length=2, max_length=2)] | None


STAGE_OPTION_SCHEMAS: dict[str, type[BaseModel]] = {
    "make-split": _MakeSplit, "pretrain-st": _PretrainST, "assemble": _Assemble,
    "train-mbmt": _TrainMBMT, "train-mt": _Init, "train-teacher": _Teacher,
    "pseudo-label": _Pseudo, "train-student": _Init, "evaluate": _Evaluate,
    "affinity": _Manifest, "export": _Export,
}


def validate_section(schema: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked and normalised by ``schema`` (numbers from YAML strings such as
    ``1e-4`` become floats); raises pydantic's ValidationError."""
    return schema.model_validate(values).model_dump(by_alias=True, exclude_unset=True)


def first_error(exc: ValidationError) -> tuple[str, str, Any]:
    """(dotted key, reason, offending value) of the first problem pydantic found."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err.get("loc", ()) if not _is_union_branch(p)]
    reason = str(err.get("msg", "invalid value"))
    reason = reason.removeprefix("Value error, ")
    return ".".join(loc), reason, err.get("input")


def _is_union_branch(part: Any) -> bool:
    # pydantic names the tried union member in the location (e.g. "int", "float",
    # "constrained-float"); the user's key never contains those
    return isinstance(part, str) and (part in ("int", "float", "str", "list[...]", "none")
                                      or part.startswith(("constrained-", "function-")))
