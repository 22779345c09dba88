"""What runs is what is reported: ONNX Runtime's GPU providers detected from onnxruntime
itself, its TensorRT EP configured (profile, cache outside a read-only bundle), CPU threads,
warm-up, and ``auto`` passing over OpenVINO or a missing backend module without crashing."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import BUNDLE_SIZE

from mbmt_ros.runtime import (
    BACKENDS,
    BackendNotInstalledError,
    Bundle,
    FallbackError,
    open_predictor,
    registry,
)
from mbmt_ros.runtime import engine_cache as ec
from mbmt_ros.runtime.backends import onnxruntime_backend as orb

H, W = BUNDLE_SIZE
ALL_GPU_EPS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_gpu_providers_are_detected_from_onnxruntime_without_cuda_python() -> None:
    """The bug: with onnxruntime-gpu but no cuda-python, CUDA was declared unavailable."""
    assert orb.cuda_unavailable(["CUDAExecutionProvider", "CPUExecutionProvider"], None) is None
    assert orb.cuda_unavailable(ALL_GPU_EPS, None) is None
    assert "no CUDA/TensorRT execution provider" in orb.cuda_unavailable(
        ["CPUExecutionProvider"], None)
    assert orb.cuda_unavailable(ALL_GPU_EPS, 0) == "no CUDA GPU is visible"  # cuda-python veto


def test_tensorrt_ep_options(tiny_bundle: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = Bundle.load(tiny_bundle)
    providers, model = orb._providers(bundle, "fp16", "cuda", {"batch": 2}, ALL_GPU_EPS)
    name, trt = providers[0]
    assert name == "TensorrtExecutionProvider" and model.endswith("model.onnx")
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_enable"]
    assert trt["trt_engine_cache_path"] == str(tiny_bundle / "engines" / "ort_trt")
    assert trt["trt_timing_cache_path"] == trt["trt_engine_cache_path"]
    assert trt["trt_profile_min_shapes"] == f"image:2x{H}x{W}x3"
    assert trt["trt_profile_max_shapes"] == f"image:2x{H}x{W}x3"
    assert trt["trt_max_workspace_size"] == 1 << 30  # default fits an 8 GB Jetson
    assert [p if isinstance(p, str) else p[0] for p in providers[1:]] == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    # a read-only bundle keeps its engines in the user's cache, never inside the bundle
    monkeypatch.setattr(ec, "_writable", lambda d: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    providers, _ = orb._providers(bundle, "fp32", "cuda", {"dynamic_batch": True, "batch": 4},
                                  ALL_GPU_EPS)
    trt = providers[0][1]
    assert Path(trt["trt_engine_cache_path"]).is_relative_to(tmp_path / "cache")
    assert Path(trt["trt_engine_cache_path"]).is_dir() and not trt["trt_fp16_enable"]
    assert trt["trt_profile_min_shapes"] == f"image:1x{H}x{W}x3"
    # CUDA EP only: the FP16 graph for fp16
    providers, model = orb._providers(bundle, "fp16", "cuda", {}, ALL_GPU_EPS[1:])
    assert model.endswith("model_fp16.onnx") and providers[0][0] == "CUDAExecutionProvider"


def test_cpu_fallback_is_an_error_unless_allowed_then_a_warning(
        tiny_bundle_master: Path, caplog: pytest.LogCaptureFixture) -> None:
    """CUDA + fp16 requested from a CPU-only onnxruntime: refused by default, naming what was
    asked and what would run; with allow_fallback it runs, says so at WARN (never INFO) and
    reports device cpu, precision fp32, the providers that loaded and the file."""
    if orb.availability("cuda") is None:
        pytest.skip("this onnxruntime can run on a GPU")
    with pytest.raises(FallbackError, match="requested fp16 on cuda, ran fp32 on cpu "
                                            r"\(CUDA unavailable"):
        open_predictor(tiny_bundle_master, backend="onnxruntime", precision="fp16",
                       device="cuda")
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle_master, backend="onnxruntime", precision="fp16",
                        device="cuda", allow_fallback=True) as pred:
        assert (pred.backend, pred.device, pred.precision) == ("onnxruntime", "cpu", "fp32")
        assert pred.provider == "CPUExecutionProvider"
        assert pred.providers == ("CPUExecutionProvider",) and pred.model_file == "model.onnx"
        report = pred.report()
        assert report["fallback"].startswith("onnxruntime: requested fp16 on cuda, ran fp32")
    fallback_lines = [r for r in caplog.records if "requested fp16 on cuda" in r.getMessage()]
    assert fallback_lines and all(r.levelno == logging.WARNING for r in fallback_lines)


def test_the_file_follows_the_providers_that_loaded(tiny_bundle_master: Path) -> None:
    """The model file is picked from the providers that *loaded*: the FP16 graph only on the
    CUDA EP, the INT8 graph only on the CPU EP, model.onnx under the TensorRT EP."""
    bundle = Bundle.load(tiny_bundle_master)
    cuda, cpu = ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]
    assert orb.model_for_providers(bundle, "fp16", cuda).endswith("model_fp16.onnx")
    assert orb.model_for_providers(bundle, "fp16", cpu).endswith("model.onnx")  # CUDA EP failed
    assert orb.model_for_providers(bundle, "fp16", ALL_GPU_EPS).endswith("model.onnx")
    assert orb.ran_precision(str(bundle.model_path), ALL_GPU_EPS, "fp16") == "fp16"
    assert orb.ran_precision(str(bundle.model_path), cuda, "fp16") == "fp32"  # TRT EP skipped
    assert orb.ran_precision(str(bundle.fp16_model_path), cuda, "fp16") == "fp16"


def test_num_threads_and_warmup(tiny_bundle_master: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle_master, backend="onnxruntime", device="cpu",
                        num_threads=1, warmup=True) as pred:
        assert pred._runner._session.get_session_options().intra_op_num_threads == 1
        assert "onnxruntime warm-up on cpu (fp32, CPUExecutionProvider)" in caplog.text
        assert pred.warmup() > 0.0
        out = pred.predict(np.zeros((10, 20, 3), np.uint8))
        assert out["depth"].shape == (10, 20) and float(out["depth"].min()) >= 0.0


def test_auto_prefers_openvino_on_the_cpu_and_survives_a_missing_module(
        tiny_bundle_master: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    order = [name for name, dev in registry._AUTO_ORDER if dev == "cpu"]
    assert order.index("openvino") < order.index("onnxruntime")
    ghost = registry._LazyBackend("openvino", "mbmt_ros.runtime.backends.no_such_backend")
    assert "not part of this mbmt_ros installation" in ghost.availability("cpu")
    with pytest.raises(BackendNotInstalledError, match="no_such_backend is missing"):
        ghost.open(Bundle.load(tiny_bundle_master), "fp32", "cpu")
    monkeypatch.setitem(BACKENDS, "openvino", ghost)
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle_master, device="cpu") as pred:
        assert pred.backend == "onnxruntime"
    assert "passed over: openvino/cpu: backend 'openvino' is not part of" in caplog.text


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_provider_that_fails_to_load_never_runs_the_fp16_graph_on_the_cpu(
        tiny_bundle_master: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu whose CUDA provider does not load (a cuDNN mismatch): ONNX Runtime
    itself drops to the CPU provider. The graph follows the providers that loaded - the FP32
    one, not model_fp16.onnx - and the run is reported as fp32 on the CPU, a fallback."""
    if orb.availability("cuda") is None:
        pytest.skip("the CUDA provider loads here")
    monkeypatch.setattr(orb, "availability", lambda device: None)  # "this build has CUDA"
    with pytest.raises(FallbackError, match="requested fp16 on cuda, ran fp32 on cpu"):
        open_predictor(tiny_bundle_master, backend="onnxruntime", precision="fp16",
                       device="cuda", ort_tensorrt=False)
    with open_predictor(tiny_bundle_master, backend="onnxruntime", precision="fp16",
                        device="cuda", ort_tensorrt=False, allow_fallback=True) as pred:
        assert (pred.device, pred.precision, pred.model_file) == ("cpu", "fp32", "model.onnx")
        assert pred.providers == ("CPUExecutionProvider",)
        assert "model_fp16.onnx was picked for CUDAExecutionProvider but " \
               "CPUExecutionProvider loaded" in pred.fallback
