"""TensorRT backend hardening that needs no libnvinfer and no GPU.

TensorRT cannot be installed in CI, so nothing here builds or runs an engine (that is
``test_runtime_gpu.py`` on a GPU machine). ``FakeTensorRTForRunnerChecks`` and
``FakeCudaRuntimeForBookkeeping`` stand in for ``tensorrt`` and ``cuda.bindings.runtime``
ONLY to check our own bookkeeping around them: that return values of ``set_input_shape`` /
``set_tensor_address`` are checked, that out-of-memory is reported as such (never as a reason
to rebuild), that every buffer allocated is freed on failure, and that the INT8 calibrator
frees its device buffer. The CUDA error mapping uses the real ``cuda.bindings`` enums.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from runtime_helpers import BUNDLE_SIZE

from mbmt_ros.runtime import Bundle, InferenceOutOfMemoryError
from mbmt_ros.runtime.backends import tensorrt_backend as tb
from mbmt_ros.runtime.cuda_device import DEFAULT_WORKSPACE_MB, GpuInfo, check, workspace_bytes
from mbmt_ros.runtime.engine_cli import build_parser
from mbmt_ros.runtime.errors import BackendError
from mbmt_ros.runtime.trt_build import BuildSettings, engine_key

rt_real = pytest.importorskip("cuda.bindings.runtime")
SUCCESS = rt_real.cudaError_t.cudaSuccess
H, W = BUNDLE_SIZE
ORIN_AGX = GpuInfo("Orin", "8.7", 64 << 30, multiprocessor_count=16)
ORIN_NANO = GpuInfo("Orin", "8.7", 8 << 30, multiprocessor_count=8)


class FakeCudaRuntimeForBookkeeping:
    """Hands out host memory for 'device' and 'pinned' buffers and records every free."""

    cudaError_t = rt_real.cudaError_t
    cudaMemcpyKind = rt_real.cudaMemcpyKind
    cudaStreamNonBlocking = 1

    def __init__(self) -> None:
        self.live: dict[int, ctypes.Array] = {}
        self.allocations = 0

    def _alloc(self, nbytes: int) -> tuple:
        buf = ctypes.create_string_buffer(max(int(nbytes), 1))
        self.live[ctypes.addressof(buf)] = buf
        self.allocations += 1
        return SUCCESS, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def _free(self, pointer: int) -> tuple:
        del self.live[int(pointer)]
        return (SUCCESS,)

    cudaFree = cudaFreeHost = _free

    def cudaSetDevice(self, device: int) -> tuple:  # noqa: N802 - CUDA's names
        return (SUCCESS,)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple:  # noqa: N802
        return SUCCESS, 7

    def cudaStreamSynchronize(self, stream: int) -> tuple:  # noqa: N802
        return (SUCCESS,)

    cudaStreamDestroy = cudaStreamSynchronize

    def cudaMemcpy(self, *args) -> tuple:  # noqa: N802
        return (SUCCESS,)


class FakeTensorRTForRunnerChecks:
    """The engine/context surface TensorRTRunner touches; what the calls return is set."""

    def __init__(self, *, engine: bool = True, context: bool = True, shape_ok: bool = True,
                 address_ok: bool = True) -> None:
        self.engine, self.context = engine, context
        self.shape_ok, self.address_ok = shape_ok, address_ok
        self.names = ["image", "segmentation", "segmentation_confidence", "depth", "normals"]

    def Runtime(self, logger):  # noqa: N802 - TensorRT's name
        return SimpleNamespace(deserialize_cuda_engine=lambda payload: self if self.engine
                               else None)

    # engine
    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def create_execution_context(self):
        return self if self.context else None

    def get_tensor_dtype(self, name: str) -> type:
        return {"image": np.uint8, "segmentation": np.int32}.get(name, np.float32)

    def nptype(self, dtype: type) -> type:
        return dtype

    # context
    def set_input_shape(self, name: str, shape: tuple) -> bool:
        return self.shape_ok

    def get_tensor_shape(self, name: str) -> tuple:
        return {"image": (1, H, W, 3), "normals": (1, 3, H, W)}.get(name, (1, H, W))

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        return self.address_ok


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCudaRuntimeForBookkeeping:
    fake = FakeCudaRuntimeForBookkeeping()
    monkeypatch.setattr(tb, "cudart", lambda: fake)
    return fake


def _runner(trt: FakeTensorRTForRunnerChecks, bundle: Bundle) -> tb.TensorRTRunner:
    return tb.TensorRTRunner(trt, b"engine", bundle, BuildSettings("fp16"), SimpleNamespace())


def test_runner_binds_every_tensor_and_frees_everything(cuda, tiny_bundle_master: Path) -> None:
    runner = _runner(FakeTensorRTForRunnerChecks(), Bundle.load(tiny_bundle_master))
    assert cuda.allocations == 10 and len(cuda.live) == 10  # device + pinned per tensor
    runner.close()
    assert cuda.live == {}


def test_refused_input_shape_is_an_error(cuda, tiny_bundle_master: Path) -> None:
    with pytest.raises(BackendError, match=r"refused input shape \(1, 64, 96, 3\).*--batch"):
        _runner(FakeTensorRTForRunnerChecks(shape_ok=False), Bundle.load(tiny_bundle_master))
    assert cuda.live == {}


def test_refused_tensor_address_frees_what_was_allocated(cuda, tiny_bundle_master: Path) -> None:
    with pytest.raises(BackendError, match="set_tensor_address returned False"):
        _runner(FakeTensorRTForRunnerChecks(address_ok=False), Bundle.load(tiny_bundle_master))
    assert cuda.allocations == 2 and cuda.live == {}  # the first tensor's buffers, freed


def test_out_of_memory_is_reported_and_never_a_rebuild(cuda, tiny_bundle_master: Path) -> None:
    """No context with an allocation failure in TensorRT's log is out-of-memory, which
    ``open`` does not treat as an unusable engine to rebuild; an engine TensorRT cannot read
    is. No context for another reason says what TensorRT logged - never a guessed OOM."""
    bundle = Bundle.load(tiny_bundle_master)
    oom_log = SimpleNamespace(errors=["[defaultAllocator.cpp::allocate] Error Code 1: Cuda "
                                      "Runtime (out of memory)"])
    with pytest.raises(InferenceOutOfMemoryError, match="out of memory") as oom:
        tb.TensorRTRunner(FakeTensorRTForRunnerChecks(context=False), b"engine", bundle,
                          BuildSettings("fp16"), oom_log)
    assert not isinstance(oom.value, tb.UnusableEngine)
    other_log = SimpleNamespace(errors=["IExecutionContext: profile 0 is invalid"])
    with pytest.raises(BackendError, match="could not create an execution context: "
                                           "IExecutionContext: profile 0 is invalid") as other:
        tb.TensorRTRunner(FakeTensorRTForRunnerChecks(context=False), b"engine", bundle,
                          BuildSettings("fp16"), other_log)
    assert not isinstance(other.value, (InferenceOutOfMemoryError, tb.UnusableEngine))
    with pytest.raises(BackendError, match="no error was logged") as silent:
        _runner(FakeTensorRTForRunnerChecks(context=False), bundle)
    assert not isinstance(silent.value, InferenceOutOfMemoryError)
    with pytest.raises(tb.UnusableEngine, match="deserialise"):
        _runner(FakeTensorRTForRunnerChecks(engine=False), bundle)


def test_cuda_allocation_failure_is_an_out_of_memory_error() -> None:
    with pytest.raises(InferenceOutOfMemoryError, match="GPU is out of memory.*cudaMalloc"):
        check((rt_real.cudaError_t.cudaErrorMemoryAllocation, 0), "cudaMalloc")
    with pytest.raises(BackendError, match="cudaErrorInvalidValue") as other:
        check((rt_real.cudaError_t.cudaErrorInvalidValue,), "cudaMemcpyAsync")
    assert not isinstance(other.value, InferenceOutOfMemoryError)


def test_calibrator_frees_its_buffer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mbmt_ros.runtime import trt_calibrator

    class Base:
        def __init__(self) -> None:
            pass

    fake_trt = SimpleNamespace(IInt8EntropyCalibrator2=Base)
    cuda = FakeCudaRuntimeForBookkeeping()
    monkeypatch.setattr(trt_calibrator, "cudart", lambda: cuda)
    frames = np.zeros((3, 4, 5, 3), np.uint8)
    cache = tmp_path / "engine.calib"
    # calibration: one buffer for all batches, freed after the last one
    calibrator = trt_calibrator.make_calibrator(fake_trt, frames, 1, cache)
    assert cuda.allocations == 0 and calibrator.read_calibration_cache() is None
    assert [len(calibrator.get_batch(["image"])) for _ in range(3)] == [1, 1, 1]
    assert cuda.allocations == 1 and len(cuda.live) == 1
    assert calibrator.get_batch(["image"]) is None and cuda.live == {}
    calibrator.write_calibration_cache(b"table")
    # a cached table: TensorRT asks for no batch, nothing stays allocated
    reuse = trt_calibrator.make_calibrator(fake_trt, frames, 1, cache)
    assert reuse.read_calibration_cache() == b"table"
    reuse.free()
    assert cuda.allocations == 1 and cuda.live == {}
    # interrupted calibration: free() (called by the build) releases the buffer
    partial = trt_calibrator.make_calibrator(fake_trt, frames, 1, tmp_path / "other.calib")
    partial.get_batch(["image"])
    partial.free()
    partial.free()  # idempotent
    assert cuda.live == {}


def test_engine_key_tells_orin_modules_and_onnx_files_apart(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    trt10, trt11 = SimpleNamespace(__version__="10.3.0"), SimpleNamespace(__version__="11.0.0")
    fp32 = BuildSettings("fp32")
    agx, nano = engine_key(trt10, bundle, fp32, ORIN_AGX), engine_key(trt10, bundle, fp32,
                                                                      ORIN_NANO)
    assert (agx.gpu_name, agx.compute_capability) == (nano.gpu_name, nano.compute_capability)
    assert agx.filename() != nano.filename()
    assert (agx.sm_count, agx.total_memory_mib, nano.sm_count) == (16, 64 << 10, 8)
    assert agx.onnx_file == "model.onnx"
    fp16 = engine_key(trt11, bundle, BuildSettings("fp16"), ORIN_AGX)  # strongly typed
    assert fp16.onnx_file == "model_fp16.onnx" and fp16.onnx_sha256 != agx.onnx_sha256
    # the ONNX file's own bytes are hashed: a changed file is a different engine
    with open(tiny_bundle / "model_fp16.onnx", "ab") as fh:
        fh.write(b"\0")
    assert engine_key(trt11, bundle, BuildSettings("fp16"), ORIN_AGX).filename() != \
        fp16.filename()


def test_workspace_default_fits_an_8gb_jetson() -> None:
    assert DEFAULT_WORKSPACE_MB == 1024
    assert workspace_bytes({}) == workspace_bytes({"workspace_mb": None}) == 1 << 30
    assert workspace_bytes({"workspace_mb": 256}) == 256 << 20
    assert workspace_bytes({"workspace_mb": 0}) is None  # TensorRT's own default
    assert workspace_bytes({"workspace_bytes": 12345}) == 12345
    with pytest.raises(BackendError, match=">= 0"):
        workspace_bytes({"workspace_mb": -1})
    args = build_parser().parse_args(["build", "b"])
    assert args.workspace_mb == 1024
    args = build_parser().parse_args(["build", "b", "--workspace-mb", "512"])
    assert args.workspace_mb == 512
