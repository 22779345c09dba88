"""TensorRT build planning and builder-configuration assembly, without TensorRT.

``FakeTensorRTForConfigAssembly`` stands in for the ``tensorrt`` module ONLY to check which
flags, profile and timing cache our code hands to the builder configuration on TensorRT
10.x vs 11.x; it builds nothing. Real builds are in ``test_runtime_tensorrt_gpu.py`` (GPU +
TensorRT only).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from runtime_helpers import BUNDLE_SIZE

from mbmt_ros.runtime import Bundle, EngineBuildError
from mbmt_ros.runtime import trt_build as tb
from mbmt_ros.runtime.cuda_device import GpuInfo
from mbmt_ros.runtime.engine_cache import pack_engine, write_engine
from mbmt_ros.runtime.trt_build import (
    BuildSettings,
    assemble_builder_config,
    engine_key,
    is_out_of_memory,
    load_or_build_engine,
    network_creation_flags,
    plan_build,
)

H, W = BUNDLE_SIZE
GPU = GpuInfo(name="NVIDIA Jetson AGX Orin", compute_capability="8.7", total_memory=1 << 35)


class FakeTensorRTForConfigAssembly:
    """Records builder-config calls; mimics the enum surface of TensorRT 10.x or 11.x."""

    def __init__(self, version: str) -> None:
        self.__version__ = version
        flags = {"TF32": "TF32"}
        if int(version.split(".")[0]) < 11:  # weak-typing flags exist only before 11.x
            flags.update(FP16="FP16", INT8="INT8")
        self.BuilderFlag = SimpleNamespace(**flags)
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.calls: list[tuple] = []

    # builder surface used by assemble_builder_config
    def create_builder_config(self) -> FakeTensorRTForConfigAssembly:
        return self

    def create_optimization_profile(self) -> FakeTensorRTForConfigAssembly:
        return self

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return f"<{name}>"
        return record

    def called(self, name: str) -> list[tuple]:
        return [(a, k) for n, a, k in self.calls if n == name]


@pytest.fixture
def bundle(tiny_bundle_master: Path) -> Bundle:
    return Bundle.load(tiny_bundle_master)


@pytest.fixture
def bundle_without_fp16(tiny_bundle: Path) -> Bundle:
    meta = json.loads((tiny_bundle / "meta.json").read_text())
    del meta["files"]["model_fp16.onnx"]
    (tiny_bundle / "meta.json").write_text(json.dumps(meta))
    (tiny_bundle / "model_fp16.onnx").unlink()
    return Bundle.load(tiny_bundle)


def test_tensorrt10_fp16_uses_the_builder_flag(bundle: Bundle) -> None:
    trt = FakeTensorRTForConfigAssembly("10.3.0")
    plan = plan_build(trt, bundle, BuildSettings("fp16"))
    assert plan.onnx_path.name == "model.onnx" and not plan.strongly_typed
    assert plan.builder_flags == ("FP16",) and network_creation_flags(trt, plan) == 0
    assemble_builder_config(trt, trt, plan, BuildSettings("fp16"), b"timing")
    assert trt.called("set_flag") == [(("FP16",), {})]
    assert trt.called("set_shape") == [(("image", (1, H, W, 3), (1, H, W, 3), (1, H, W, 3)), {})]
    assert trt.called("add_optimization_profile")
    assert trt.called("create_timing_cache") == [((b"timing",), {})]
    assert trt.called("set_timing_cache") == [(("<create_timing_cache>",),
                                               {"ignore_mismatch": False})]
    assert trt.called("set_memory_pool_limit") == []


def test_tensorrt11_fp16_is_strongly_typed_from_the_fp16_graph(bundle: Bundle) -> None:
    trt = FakeTensorRTForConfigAssembly("11.1.0")
    settings = BuildSettings("fp16", workspace_bytes=1 << 30)
    plan = plan_build(trt, bundle, settings)
    assert plan.onnx_path.name == "model_fp16.onnx" and plan.strongly_typed
    assert plan.builder_flags == () and network_creation_flags(trt, plan) == 1 << 1
    assemble_builder_config(trt, trt, plan, settings, None)
    assert trt.called("set_flag") == []
    assert trt.called("set_memory_pool_limit") == [(("WORKSPACE", 1 << 30), {})]
    assert trt.called("create_timing_cache") == [((b"",), {})]  # fresh timing cache


def test_strong_typing_can_be_forced_on_tensorrt10(bundle: Bundle) -> None:
    plan = plan_build(FakeTensorRTForConfigAssembly("10.8.0"), bundle,
                      BuildSettings("fp16", strongly_typed=True))
    assert plan.strongly_typed and plan.onnx_path.name == "model_fp16.onnx"


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_fp32_builds_the_fp32_graph_without_flags(bundle: Bundle, version: str) -> None:
    plan = plan_build(FakeTensorRTForConfigAssembly(version), bundle, BuildSettings("fp32"))
    assert plan.onnx_path.name == "model.onnx" and plan.builder_flags == ()


def test_dynamic_batch_profile(bundle: Bundle) -> None:
    plan = plan_build(FakeTensorRTForConfigAssembly("10.3.0"), bundle,
                      BuildSettings("fp32", batch=4, dynamic_batch=True))
    assert plan.profile == ((1, H, W, 3), (4, H, W, 3), (4, H, W, 3))
    fixed = plan_build(FakeTensorRTForConfigAssembly("10.3.0"), bundle,
                       BuildSettings("fp32", batch=4))
    assert fixed.profile == ((4, H, W, 3),) * 3


def test_int8(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match="Q/DQ"):
        plan_build(FakeTensorRTForConfigAssembly("11.0.0"), bundle, BuildSettings("int8"))
    trt10 = FakeTensorRTForConfigAssembly("10.3.0")
    with pytest.raises(EngineBuildError, match="calibration images"):
        plan_build(trt10, bundle, BuildSettings("int8"))
    frames = np.zeros((2, H, W, 3), np.uint8)
    plan = plan_build(trt10, bundle, BuildSettings("int8", calibration_images=frames))
    assert plan.builder_flags == ("INT8", "FP16")
    assemble_builder_config(trt10, trt10, plan, BuildSettings("int8"), None, calibrator="cal")
    assert vars(trt10)["int8_calibrator"] == "cal"
    assert [a for a, _ in trt10.called("set_flag")] == [("INT8",), ("FP16",)]


def test_tensorrt11_fp16_needs_the_fp16_graph(bundle_without_fp16: Bundle) -> None:
    with pytest.raises(EngineBuildError, match="--no-fp16"):
        plan_build(FakeTensorRTForConfigAssembly("11.0.0"), bundle_without_fp16,
                   BuildSettings("fp16"))


def test_bad_settings() -> None:
    with pytest.raises(EngineBuildError, match="batch"):
        BuildSettings("fp16", batch=0)
    with pytest.raises(EngineBuildError, match="precision"):
        BuildSettings("bf16")


def test_out_of_memory_detection() -> None:
    assert is_out_of_memory(["[defaultAllocator.cpp::allocate] Error Code 1: Cuda Runtime "
                             "(out of memory)"])
    assert is_out_of_memory(["Requested amount of GPU memory could not be allocated: "
                             "cudaErrorMemoryAllocation"])
    assert not is_out_of_memory(["Network has dynamic or shape inputs, but no profile"])


def test_cached_engine_is_used_and_stale_one_rebuilt(
        tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The invalidation logic around the build: a valid cache entry is loaded without
    building; an engine from another TensorRT version or a corrupt file is rebuilt, with a
    log line saying why."""
    bundle = Bundle.load(tiny_bundle)
    trt = SimpleNamespace(__version__="10.3.0")
    settings = BuildSettings("fp16")
    key = engine_key(trt, bundle, settings, GPU)
    builds: list[str] = []

    def build(trt_, bundle_, settings_, key_, directory, logger):
        builds.append(key_.tensorrt_version)
        write_engine(directory / key_.filename(), key_, b"rebuilt")
        return b"rebuilt"

    monkeypatch.setattr(tb, "build_engine", build)
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    path = bundle.engine_dir / key.filename()
    # 1. nothing cached -> build
    assert load_or_build_engine(trt, bundle, settings, GPU, None)[0] == b"rebuilt"
    assert builds == ["10.3.0"]
    # 2. cached and valid -> no build
    write_engine(path, key, b"cached")
    assert load_or_build_engine(trt, bundle, settings, GPU, None) == (b"cached", path)
    assert builds == ["10.3.0"]
    # 3. corrupt file under the right name -> rebuild with the reason logged
    path.write_bytes(pack_engine(key, b"cached")[:-3])
    caplog.clear()
    load_or_build_engine(trt, bundle, settings, GPU, None)
    assert builds == ["10.3.0"] * 2
    assert "rebuilding" in caplog.text and "truncated" in caplog.text
    # 4. a file claiming to be built by another TensorRT under this name -> rebuild
    other = engine_key(SimpleNamespace(__version__="10.2.0"), bundle, settings, GPU)
    path.write_bytes(pack_engine(other, b"old"))
    caplog.clear()
    load_or_build_engine(trt, bundle, settings, GPU, None)
    assert "tensorrt_version: cached '10.2.0', now '10.3.0'" in caplog.text
    # 5. --force rebuilds a valid engine
    load_or_build_engine(trt, bundle, settings, GPU, None, rebuild=True)
    assert len(builds) == 4
    # a re-exported model (new checksum) gets its own cache entry, never the old engine
    changed = dataclasses.replace(bundle, model_sha256="0" * 64)
    assert engine_key(trt, changed, settings, GPU).filename() != key.filename()


def test_tensorrt_missing_is_a_clear_error() -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(tb.BackendNotInstalledError, match="nvidia-tensorrt.*pip install "
                                                          "tensorrt"):
        tb.import_tensorrt()
