"""GPU paths (skipped without CUDA): the torch backend's FP16 / channels-last / CUDA-graph
path, ONNX Runtime's CUDA provider and a real TensorRT build, each against the FP32 CPU
outputs of the same bundle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import camera_image

from mbmt_ros.runtime import open_predictor

pytestmark = pytest.mark.gpu

#: FP16 vs FP32 bounds (tiny random-init model: logits are close, so agreement is looser).
SEG_AGREEMENT_FP16 = 0.95
DEPTH_ATOL_FP16 = 5e-2
NORMALS_ATOL_FP16 = 5e-2


def _reference(bundle: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    with open_predictor(bundle, backend="onnxruntime", precision="fp32", device="cpu") as pred:
        return pred.predict(image)


def _check(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert np.mean(out["segmentation"] == ref["segmentation"]) >= SEG_AGREEMENT_FP16
    np.testing.assert_allclose(out["depth"], ref["depth"], atol=DEPTH_ATOL_FP16, rtol=5e-2)
    np.testing.assert_allclose(out["normals"], ref["normals"], atol=NORMALS_ATOL_FP16)


@pytest.mark.parametrize("options", [{}, {"cuda_graphs": True}])
def test_torch_cuda_fp16(tiny_bundle_master: Path, options: dict) -> None:
    image = camera_image(64, 96, seed=2)
    ref = _reference(tiny_bundle_master, image)
    with open_predictor(tiny_bundle_master, backend="torch", precision="fp16", device="cuda",
                        **options) as pred:
        assert pred.device == "cuda" and pred.precision == "fp16"
        first = pred.predict(image)
        _check(first, ref)
        again = pred.predict(image)  # CUDA-graph replay gives the same answer
        assert np.array_equal(first["segmentation"], again["segmentation"])
        batch = pred.predict_batch(np.stack([image, image]))
        assert np.array_equal(batch[1]["segmentation"], first["segmentation"])


def test_onnxruntime_cuda(tiny_bundle_master: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA execution provider here")
    image = camera_image(64, 96, seed=2)
    with open_predictor(tiny_bundle_master, backend="onnxruntime", precision="fp16",
                        device="cuda", ort_tensorrt=False) as pred:
        assert pred.device == "cuda"
        _check(pred.predict(image), _reference(tiny_bundle_master, image))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_build_cache_and_parity(tiny_bundle: Path, precision: str) -> None:
    pytest.importorskip("tensorrt")
    image = camera_image(64, 96, seed=2)
    ref = _reference(tiny_bundle, image)
    with open_predictor(tiny_bundle, backend="tensorrt", precision=precision) as pred:
        _check(pred.predict(image), ref)
    engines = list((tiny_bundle / "engines").glob("*.engine"))
    assert len(engines) == 1
    mtime = engines[0].stat().st_mtime_ns
    with open_predictor(tiny_bundle, backend="tensorrt", precision=precision) as pred:
        _check(pred.predict(image), ref)
    assert engines[0].stat().st_mtime_ns == mtime  # loaded from the cache, not rebuilt


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "tensorrt"])
def test_gpu_fp16_paths_are_measured_against_the_reference_set(tiny_bundle: Path,
                                                               backend: str) -> None:
    """verify on a GPU: the fp16 path's figures against the exported FP32 reference (a tiny
    random-init model: the same bounds as the parity checks above; a trained model meets the
    FP16 limits of docs/deployment.md section 9)."""
    from mbmt_ros.runtime import BACKENDS
    from mbmt_ros.runtime.verify import verify_predictor

    if BACKENDS[backend].availability("cuda") is not None:
        pytest.skip(f"{backend} cannot run on CUDA here")
    options = {"ort_tensorrt": False} if backend == "onnxruntime" else {}
    with open_predictor(tiny_bundle, backend=backend, precision="fp16", device="cuda",
                        **options) as pred:
        assert (pred.device, pred.precision, pred.fallback) == ("cuda", "fp16", None)
        if backend == "onnxruntime":  # the FP16 graph, on the CUDA provider that loaded
            assert pred.model_file == "model_fp16.onnx"
            assert pred.providers[0] == "CUDAExecutionProvider"
        result = verify_predictor(pred)
    assert result.status in ("passed", "failed") and result.precision == "fp16"
    assert result.figures["segmentation_agreement"] >= SEG_AGREEMENT_FP16
    assert result.figures["normals_angle_deg"] < 10.0
