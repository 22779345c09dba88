"""Nothing stale (issue 20): INT8 calibration tables and engines keyed by the calibration
data, timing caches keyed like the engine's GPU, the timing cache's acceptance checked, one
engine build at a time across processes (a file lock; a fake builder function, no TensorRT),
prebuilt INT8 engines found by a node without calibration frames, ``backend: auto`` passing
over a backend that cannot build, and OpenVINO clearing only its own model's cache."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mbmt_ros.runtime import BACKENDS, Bundle, EngineBuildError, open_predictor
from mbmt_ros.runtime import trt_build as tb
from mbmt_ros.runtime.bundle import sha256_file
from mbmt_ros.runtime.cuda_device import GpuInfo
from mbmt_ros.runtime.engine_cache import (
    calibration_table_path,
    read_engine,
    timing_cache_path,
    write_engine,
)
from mbmt_ros.runtime.trt_build import BuildSettings, engine_key, load_or_build_engine

TRT = SimpleNamespace(__version__="10.3.0")
AGX = GpuInfo(name="Orin", compute_capability="8.7", total_memory=64 << 30)


def _gpu(sms: int, memory_gib: int) -> SimpleNamespace:
    return SimpleNamespace(name="Orin", compute_capability="8.7", multiprocessor_count=sms,
                           total_memory=memory_gib << 30)


def _frames(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)


def test_calibration_data_is_part_of_the_int8_key_and_table(tiny_bundle_master: Path,
                                                            tmp_path: Path) -> None:
    bundle = Bundle.load(tiny_bundle_master)
    old = engine_key(TRT, bundle, BuildSettings("int8", calibration_images=_frames(0)), AGX)
    new = engine_key(TRT, bundle, BuildSettings("int8", calibration_images=_frames(1)), AGX)
    same = engine_key(TRT, bundle, BuildSettings("int8", calibration_images=_frames(0)), AGX)
    assert old.calibration_sha256 and old.calibration_sha256 != new.calibration_sha256
    assert old == same and old.filename() != new.filename()
    # `mbmt-engine build --force --calibration new.npy` reads/writes another table
    assert calibration_table_path(tmp_path, old) != calibration_table_path(tmp_path, new)
    # fp16 engines do not depend on calibration frames
    assert engine_key(TRT, bundle, BuildSettings("fp16", calibration_images=_frames(0)),
                      AGX).calibration_sha256 == ""
    # an engine written before the field existed still loads (the field reads as empty)
    fp16 = engine_key(TRT, bundle, BuildSettings("fp16"), AGX)
    legacy = {k: v for k, v in fp16.as_dict().items() if k != "calibration_sha256"}
    from mbmt_ros.runtime import engine_cache as ec

    payload = b"engine"
    header = {"key": legacy, "payload_size": len(payload),
              "payload_sha256": __import__("hashlib").sha256(payload).hexdigest()}
    blob = json.dumps(header).encode()
    (tmp_path / "old.engine").write_bytes(ec.MAGIC + ec._LEN.pack(len(blob)) + blob + payload)
    assert read_engine(tmp_path / "old.engine", fp16) == payload


def test_timing_cache_is_keyed_by_sm_count_and_memory(tiny_bundle_master: Path,
                                                      tmp_path: Path) -> None:
    bundle = Bundle.load(tiny_bundle_master)
    settings = BuildSettings("fp16")
    agx = engine_key(TRT, bundle, settings, _gpu(16, 64))
    nano = engine_key(TRT, bundle, settings, _gpu(8, 8))
    agx_fp32 = engine_key(TRT, bundle, BuildSettings("fp32"), _gpu(16, 64))
    assert timing_cache_path(tmp_path, agx) != timing_cache_path(tmp_path, nano)
    assert "16sms_65536mib" in timing_cache_path(tmp_path, agx).name
    assert timing_cache_path(tmp_path, agx) == timing_cache_path(tmp_path, agx_fp32)


class _ConfigRefusingTheCache:
    """A builder + config surface whose ``set_timing_cache`` returns what it is told."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers, self.caches = answers, []

    def create_builder_config(self) -> _ConfigRefusingTheCache:
        return self

    def create_optimization_profile(self) -> SimpleNamespace:
        return SimpleNamespace(set_shape=lambda *a: None)

    def add_optimization_profile(self, profile: object) -> None:
        pass

    def set_flag(self, flag: object) -> None:
        pass

    def create_timing_cache(self, data: bytes) -> bytes:
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        self.caches.append(cache)
        return self.answers.pop(0)


def test_a_refused_timing_cache_is_replaced_by_an_empty_one(
        tiny_bundle_master: Path, caplog: pytest.LogCaptureFixture) -> None:
    bundle = Bundle.load(tiny_bundle_master)
    fake = SimpleNamespace(__version__="10.3.0", BuilderFlag=SimpleNamespace(FP16="FP16"),
                           NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1))
    settings = BuildSettings("fp32")
    plan = tb.plan_build(fake, bundle, settings)
    caplog.set_level(logging.WARNING, logger="mbmt_ros.runtime")
    config = _ConfigRefusingTheCache([False, True])
    tb.assemble_builder_config(fake, config, plan, settings, b"timings from elsewhere")
    assert config.caches == [b"timings from elsewhere", b""]
    assert "refused the timing cache" in caplog.text
    with pytest.raises(EngineBuildError, match="set_timing_cache returned False"):
        tb.assemble_builder_config(fake, _ConfigRefusingTheCache([False, False]), plan,
                                   settings, b"x")


_BUILDER = r"""
import sys, time
from pathlib import Path
from mbmt_ros.runtime.engine_cache import EngineKey, load_or_build, write_engine

path, log = Path(sys.argv[1]), Path(sys.argv[2])
key = EngineKey("m" * 64, "Orin", "8.7", "10.3.0", "fp16", 1, False)

def build():
    with open(log, "a") as fh:
        fh.write(f"start {sys.argv[3]}\n")
    time.sleep(1.5)  # a build takes a while; the other process must wait, not build too
    write_engine(path, key, b"built by " + sys.argv[3].encode())
    with open(log, "a") as fh:
        fh.write(f"end {sys.argv[3]}\n")
    return b"built by " + sys.argv[3].encode()

payload, built = load_or_build(path, key, build)
print(payload.decode(), built)
"""


def test_two_processes_build_one_engine_and_the_second_loads_it(tmp_path: Path) -> None:
    path, log = tmp_path / "engines" / "e.engine", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(path), str(log), name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("A", "B")]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    lines = log.read_text().split()
    assert lines.count("start") == 1 and lines.count("end") == 1  # one build, not two
    builder = lines[1]
    outputs = sorted(r[0].strip() for r in results)
    # the builder returns its payload; the other waited on the lock, then loaded that engine
    assert outputs == sorted([f"built by {builder} True", f"built by {builder} False"])


def test_int8_without_calibration_frames_uses_a_prebuilt_engine(
        tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = Bundle.load(tiny_bundle)
    monkeypatch.setattr(tb, "build_engine", lambda *a: pytest.fail("must not build"))
    with pytest.raises(EngineBuildError, match="no prebuilt INT8 engine.*--calibration"):
        load_or_build_engine(TRT, bundle, BuildSettings("int8"), AGX, None)
    built = engine_key(TRT, bundle, BuildSettings("int8", calibration_images=_frames(0)), AGX)
    write_engine(bundle.engine_dir / built.filename(), built, b"int8 engine")
    payload, path = load_or_build_engine(TRT, bundle, BuildSettings("int8"), AGX, None)
    assert payload == b"int8 engine" and path.name == built.filename()
    # another GPU's INT8 engine is not taken
    other = engine_key(TRT, bundle, BuildSettings("int8", calibration_images=_frames(0)),
                       _gpu(8, 8))
    with pytest.raises(EngineBuildError, match="no prebuilt INT8 engine"):
        load_or_build_engine(TRT, bundle, BuildSettings("int8"), _gpu(8, 8), None)
    assert other.filename() != built.filename()


class _CannotBuild:
    """A registry entry standing in for a backend that is installed but cannot build the
    engine asked for (what TensorRT's backend raises for INT8 without a prebuilt engine)."""

    name = "tensorrt"

    def availability(self, device: str) -> None:
        return None

    def open(self, bundle: Bundle, precision: str, device: str, **options: object):
        raise EngineBuildError("no prebuilt INT8 engine for this GPU / TensorRT")


def test_auto_passes_over_a_backend_that_cannot_build_int8(
        tiny_bundle_master: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(BACKENDS, "tensorrt", _CannotBuild())
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    # no backend delivers int8 from this bundle (no INT8 graph): the policy says error ...
    with pytest.raises(Exception, match="requested int8"):
        open_predictor(tiny_bundle_master, precision="int8", device="auto")
    assert "passing over tensorrt on cuda: no prebuilt INT8 engine" in caplog.text
    # ... or, accepted, the next backend runs what it can, with a WARN line
    with open_predictor(tiny_bundle_master, precision="int8", device="auto",
                        allow_fallback=True) as pred:
        assert pred.backend != "tensorrt" and pred.precision == "fp32"
        assert pred.fallback and "requested int8" in pred.fallback


def test_openvino_int8_flags_and_cache_folders(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("openvino")
    from mbmt_ros.runtime.backends import openvino_backend as ovb

    assert ovb.cpu_has_int8_dot_product("flags\t: fpu sse avx2 avx512_vnni")
    assert ovb.cpu_has_int8_dot_product("Features\t: fp asimd asimddp")
    assert not ovb.cpu_has_int8_dot_product("flags\t: fpu sse avx2 fma")
    bundle = Bundle.load(tiny_bundle)
    root = tiny_bundle / "engines" / "openvino"
    mine = ovb.model_cache_dir(root, bundle, bundle.model_path)
    assert mine.name.startswith("model-") and mine.parent == root
    # a compile failure with the cache clears this model's folder only
    other = root / "model_int8-0123456789abcdef"
    for folder in (mine, other):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "entry.blob").write_bytes(b"x")
    calls: list[str] = []

    class _FailsOnce:
        def compile_model(self, model: object, device: str, config: dict) -> str:
            calls.append(device)
            if len(calls) == 1:
                raise RuntimeError("cache entry unreadable")
            return "compiled"

    monkeypatch.setattr(ovb, "_core", lambda: _FailsOnce())
    assert ovb._compile(None, "CPU", {"CACHE_DIR": str(mine)}) == "compiled"
    assert not (mine / "entry.blob").exists() and mine.is_dir()
    assert (other / "entry.blob").exists()  # another model's compiled blob is kept


def test_openvino_says_when_the_qdq_pattern_matches_nothing(
        tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A QDQ pattern that no longer matches (another OpenVINO version) must not silently lose
    the speed-up: here an "INT8" file without any quantize-dequantize pair."""
    pytest.importorskip("openvino")
    shutil.copyfile(tiny_bundle / "model.onnx", tiny_bundle / "model_int8.onnx")
    meta = json.loads((tiny_bundle / "meta.json").read_text())
    meta["files"]["model_int8.onnx"] = {"sha256": sha256_file(tiny_bundle / "model_int8.onnx"),
                                        "size": (tiny_bundle / "model_int8.onnx").stat().st_size}
    (tiny_bundle / "meta.json").write_text(json.dumps(meta))
    caplog.set_level(logging.WARNING, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle, backend="openvino", precision="int8", device="cpu") as pred:
        assert pred.model_file == "model_int8.onnx"
    assert "no convolution-output quantize-dequantize pair matched" in caplog.text
