"""Building TensorRT engines from a bundle's ONNX graph, and the engine cache around it.

Written against the TensorRT 10.x Python API (``build_serialized_network``; no binding
indices) and TensorRT 11.x, where weak typing is gone:

* **TensorRT 10.x** - FP32: the FP32 graph. FP16: the FP32 graph with ``BuilderFlag.FP16``
  (TensorRT picks FP16 kernels where they are faster). INT8: ``BuilderFlag.INT8`` + FP16 with
  an entropy calibrator fed by calibration images.
* **TensorRT 11.x** (and 10.x with ``strongly_typed=True``) - the network is created
  ``STRONGLY_TYPED`` and precision comes from the graph: FP16 builds parse
  ``model_fp16.onnx`` (FP16 inside, uint8 in / int32 + float32 out as in the contract).
  INT8 would need a Q/DQ-quantised graph, which bundles do not carry: a clear error.

Every build uses a timing cache (shared per GPU - name, compute capability, SM count, memory -
and TensorRT version; a refused cache is replaced by an empty one), an optimisation profile
for the ``image`` input (fixed batch, or dynamic 1..N), holds a file lock (a second process
waits, then loads the engine), logs that it is building (minutes on a Jetson), and writes the
engine atomically; INT8 engine keys and calibration tables include the calibration frames'
SHA-256; an out-of-memory build raises
:class:`EngineOutOfMemoryError` and leaves no engine behind. The configuration logic
(:func:`plan_build`, :func:`assemble_builder_config`) takes the ``tensorrt`` module as an
argument so it can be tested without TensorRT.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbmt_ros.io import atomic_write_bytes
from mbmt_ros.runtime.bundle import INPUT_NAME, Bundle, sha256_file
from mbmt_ros.runtime.engine_cache import (
    EngineKey,
    cache_dir,
    calibration_table_path,
    find_prebuilt,
    load_or_build,
    read_engine,
    timing_cache_path,
    write_engine,
)
from mbmt_ros.runtime.errors import (
    BackendNotInstalledError,
    EngineBuildError,
    EngineOutOfMemoryError,
)

__all__ = ["TENSORRT_INSTALL_HINT", "BuildSettings", "BuildPlan", "import_tensorrt",
           "tensorrt_major", "plan_build", "assemble_builder_config", "engine_key",
           "build_engine", "load_or_build_engine", "is_out_of_memory", "calibration_sha256"]

_log = logging.getLogger(__name__)

TENSORRT_INSTALL_HINT = (
    "TensorRT is not installed: on a Jetson install JetPack's `nvidia-tensorrt` / "
    "`python3-libnvinfer` apt packages; on x86 `pip install tensorrt` (needs an NVIDIA driver). "
    "The backend also needs cuda-python 12.6.1 or newer: `pip install \"cuda-python>=12.6.1\"`")

_OOM_MARKERS = ("out of memory", "outofmemory", "cudaerrormemoryallocation",
                "failed to allocate", "insufficient memory", "allocation failed")


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`BackendNotInstalledError` naming the packages."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendNotInstalledError(TENSORRT_INSTALL_HINT) from exc


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


@dataclass(frozen=True)
class BuildSettings:
    """What the user asks of an engine."""

    precision: str = "fp16"          # fp32 | fp16 | int8
    batch: int = 1                   # the profile's max (and opt) batch
    dynamic_batch: bool = False      # profile 1..batch instead of exactly batch
    workspace_bytes: int | None = None
    strongly_typed: bool | None = None   # None: only where TensorRT requires it (11.x)
    calibration_images: Any = None   # (N, H, W, 3) uint8 for INT8 on TensorRT 10.x

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise EngineBuildError(f"unknown precision {self.precision!r}; choose fp32, fp16 "
                                   f"or int8")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise EngineBuildError(f"--batch must be a positive integer, got {self.batch!r}")


@dataclass(frozen=True)
class BuildPlan:
    """The decisions of :func:`plan_build`: which graph, network and builder flags."""

    onnx_path: Path
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    network_flags: tuple[str, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    notes: tuple[str, ...] = field(default=())


def plan_build(trt: Any, bundle: Bundle, settings: BuildSettings) -> BuildPlan:
    """Decide graph and flags for ``settings`` on the installed TensorRT (no GPU work)."""
    flags = trt.BuilderFlag
    strongly = _strongly_typed(trt, settings)
    if strongly and not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise EngineBuildError(f"TensorRT {trt.__version__} has no strongly typed networks; "
                               f"use TensorRT >= 9 or drop strongly_typed")
    notes: list[str] = []
    onnx_path = bundle.model_path
    builder_flags: list[str] = []
    if settings.precision == "fp16":
        if strongly:
            if bundle.fp16_model_path is None:
                raise EngineBuildError(
                    f"TensorRT {trt.__version__} builds FP16 only from an FP16 graph (strong "
                    f"typing), but {bundle.path} has no model_fp16.onnx; re-export without "
                    f"--no-fp16 or build with --precision fp32")
            onnx_path = bundle.fp16_model_path
            notes.append("strongly typed network from model_fp16.onnx")
        else:
            builder_flags.append("FP16")
            notes.append("weakly typed FP32 graph with the FP16 builder flag")
    elif settings.precision == "int8":
        if strongly or not hasattr(flags, "INT8"):
            raise EngineBuildError(
                f"INT8 on TensorRT {trt.__version__} needs an explicitly quantised (Q/DQ) ONNX "
                f"graph, which mbmt_ros bundles do not carry; use --precision fp16")
        if settings.calibration_images is None:
            raise EngineBuildError("INT8 needs calibration images (calibration_images= an "
                                   "(N, H, W, 3) uint8 array of typical camera frames)")
        builder_flags += ["INT8", "FP16"]
        notes.append("implicit INT8 with entropy calibration (+FP16 fallback)")
    network_flags = ("STRONGLY_TYPED",) if strongly else ()
    height, width = bundle.input_size
    low = 1 if settings.dynamic_batch else settings.batch
    profile = ((low, height, width, 3), (settings.batch, height, width, 3),
               (settings.batch, height, width, 3))
    return BuildPlan(onnx_path, strongly, tuple(builder_flags), network_flags, profile,
                     tuple(notes))


def network_creation_flags(trt: Any, plan: BuildPlan) -> int:
    """The bit mask for ``builder.create_network`` (0 = explicit batch, the 10.x default)."""
    mask = 0
    for name in plan.network_flags:
        mask |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return mask


def assemble_builder_config(trt: Any, builder: Any, plan: BuildPlan, settings: BuildSettings,
                            timing_cache: bytes | None, calibrator: Any = None) -> Any:
    """An ``IBuilderConfig`` for ``plan``: flags, workspace, profile, timing cache, calibrator."""
    config = builder.create_builder_config()
    if settings.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_bytes))
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *plan.profile)
    config.add_optimization_profile(profile)
    if calibrator is not None:
        config.int8_calibrator = calibrator
        if hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(profile)
    cache = config.create_timing_cache(timing_cache or b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False) and timing_cache:
        # False: TensorRT refused the cached timings (another device / version): start empty
        _log.warning("TensorRT refused the timing cache (made on another GPU or TensorRT); "
                     "building with an empty one")
        if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
            raise EngineBuildError("TensorRT refused even an empty timing cache "
                                   "(set_timing_cache returned False); see the TensorRT log")
    return config


def _strongly_typed(trt: Any, settings: BuildSettings) -> bool:
    """Strong typing where asked, or where TensorRT has no weak-typing FP16 flag (11.x)."""
    flags = getattr(trt, "BuilderFlag", None)
    weak_fp16 = hasattr(flags, "FP16") and tensorrt_major(trt) < 11
    return settings.strongly_typed if settings.strongly_typed is not None else not weak_fp16


def source_graph(trt: Any, bundle: Bundle, settings: BuildSettings) -> Path:
    """The ONNX file an engine for ``settings`` is built from (FP16 strongly typed builds
    parse ``model_fp16.onnx``; everything else ``model.onnx``)."""
    if settings.precision == "fp16" and _strongly_typed(trt, settings) \
            and bundle.fp16_model_path is not None:
        return bundle.fp16_model_path
    return bundle.model_path


def engine_key(trt: Any, bundle: Bundle, settings: BuildSettings, gpu: Any) -> EngineKey:
    """The cache key of an engine for ``bundle`` + ``settings`` on ``gpu`` (a GpuInfo):
    GPU name, compute capability, SM count and memory size (every Orin is named "Orin"),
    TensorRT version, precision, batch profile and the SHA-256 of the ONNX file parsed."""
    onnx = source_graph(trt, bundle, settings)
    calibration = ""
    if settings.precision == "int8" and settings.calibration_images is not None:
        calibration = calibration_sha256(settings.calibration_images)
    return EngineKey(model_sha256=bundle.model_sha256, gpu_name=gpu.name,
                     compute_capability=gpu.compute_capability,
                     tensorrt_version=str(trt.__version__), precision=settings.precision,
                     max_batch=settings.batch, dynamic_batch=settings.dynamic_batch,
                     sm_count=int(getattr(gpu, "multiprocessor_count", 0)),
                     total_memory_mib=int(gpu.total_memory) >> 20,
                     onnx_file=onnx.name, onnx_sha256=sha256_file(onnx),
                     calibration_sha256=calibration)


def calibration_sha256(images: Any) -> str:
    """SHA-256 of calibration frames (shape, dtype and pixels): part of the INT8 engine key,
    so `mbmt-engine build --force --calibration new.npy` never reuses the old table."""
    import numpy as np

    frames = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{frames.shape}|{frames.dtype}|".encode())
    digest.update(frames.tobytes())
    return digest.hexdigest()


def is_out_of_memory(messages: list[str]) -> bool:
    """Whether TensorRT's log lines report a GPU memory allocation failure."""
    text = " ".join(messages).lower().replace("_", "")
    return any(marker.replace("_", "") in text for marker in _OOM_MARKERS)


def make_logger(trt: Any) -> Any:
    """A TensorRT logger forwarding to Python logging and keeping errors for diagnosis."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                _log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                _log.warning("TensorRT: %s", msg)
            else:
                _log.debug("TensorRT: %s", msg)

    return _Logger()


def build_engine(trt: Any, bundle: Bundle, settings: BuildSettings, key: EngineKey,
                 directory: Path, logger: Any) -> bytes:
    """Build, cache (atomically) and return a serialized engine."""
    plan = plan_build(trt, bundle, settings)
    _log.info("building the TensorRT %s engine for %s on %s (%s); this takes minutes - "
              "prebuild it with `mbmt-engine build %s`", settings.precision, bundle.path,
              key.gpu_name, ", ".join(plan.notes) or "fp32", bundle.path)
    started = time.monotonic()
    builder = trt.Builder(logger)
    network = builder.create_network(network_creation_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {plan.onnx_path}: "
                               + "; ".join(errors))
    timing_path = timing_cache_path(directory, key)
    timing = timing_path.read_bytes() if timing_path.is_file() else None
    calibrator = None
    if settings.precision == "int8":
        from mbmt_ros.runtime.trt_calibrator import make_calibrator

        calibrator = make_calibrator(trt, settings.calibration_images, settings.batch,
                                     calibration_table_path(directory, key))
    config = assemble_builder_config(trt, builder, plan, settings, timing, calibrator)
    try:
        serialized = builder.build_serialized_network(network, config)
    except MemoryError as exc:
        raise _oom(bundle, settings) from exc
    finally:
        if calibrator is not None:
            calibrator.free()  # its device buffer, whether calibrated or the cache was reused
    if serialized is None:
        if is_out_of_memory(getattr(logger, "errors", [])):
            raise _oom(bundle, settings)
        raise EngineBuildError(f"TensorRT could not build an engine for {plan.onnx_path}: "
                               + ("; ".join(getattr(logger, "errors", [])) or "see the log"))
    payload = bytes(serialized)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    path = write_engine(directory / key.filename(), key, payload,
                        extra={"notes": list(plan.notes), "onnx": plan.onnx_path.name,
                               "build_seconds": round(time.monotonic() - started, 1)})
    _log.info("TensorRT engine built in %.0f s: %s", time.monotonic() - started, path)
    return payload


def _oom(bundle: Bundle, settings: BuildSettings) -> EngineOutOfMemoryError:
    return EngineOutOfMemoryError(
        f"the GPU ran out of memory while building the {settings.precision} engine for "
        f"{bundle.path} (batch {settings.batch}); no engine was written. Free GPU memory "
        f"(stop other GPU processes), lower --batch, or limit the workspace")


def load_or_build_engine(trt: Any, bundle: Bundle, settings: BuildSettings, gpu: Any,
                         logger: Any, engine_dir: str | Path | None = None,
                         rebuild: bool = False) -> tuple[bytes, Path]:
    """The cached engine for this bundle/GPU/TensorRT/precision, rebuilt when stale. Builds
    hold a file lock (:func:`~mbmt_ros.runtime.engine_cache.engine_lock`): two nodes starting
    together build once, the second loads the first's engine. INT8 without calibration
    frames (the node) loads an engine prebuilt with `mbmt-engine build --calibration`."""
    key = engine_key(trt, bundle, settings, gpu)
    directory = cache_dir(bundle, engine_dir)
    path = directory / key.filename()
    if settings.precision == "int8" and settings.calibration_images is None and not rebuild:
        prebuilt = find_prebuilt(directory, key)
        if prebuilt is None:
            raise EngineBuildError(
                f"no prebuilt INT8 engine for this GPU / TensorRT in {directory}, and INT8 "
                f"needs calibration frames to build one: run `mbmt-engine build {bundle.path} "
                f"--precision int8 --calibration frames.npy` first, or use fp16")
        stored = list_engine_key(prebuilt)
        _log.info("TensorRT: using prebuilt INT8 engine %s", prebuilt)
        return read_engine(prebuilt, stored), prebuilt
    payload, built = load_or_build(
        path, key, lambda: build_engine(trt, bundle, settings, key, directory, logger),
        rebuild=rebuild)
    if not built:
        _log.info("TensorRT: using cached engine %s", path)
    return payload, path


def list_engine_key(path: Path) -> EngineKey:
    """The key stored in an engine file's header (already checked intact by the caller)."""
    from mbmt_ros.runtime.engine_cache import list_engines

    record = next(r for r in list_engines(path.parent) if r.path == path)
    assert record.header is not None
    return EngineKey(**record.header["key"])
