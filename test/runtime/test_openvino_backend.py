"""The OpenVINO backend reproduces ONNX Runtime FP32 on the exported bundle (the tolerances
the CPU backends meet against PyTorch), reports what it runs (precision, device, threads),
caches compiled models under the engine cache folder, and degrades with a reason."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import BUNDLE_SIZE, camera_image

from mbmt_ros.runtime import BACKENDS, Predictor, open_predictor

pytest.importorskip("openvino")
from mbmt_ros.runtime.backends.openvino_backend import cpu_capabilities  # noqa: E402

SEG_AGREEMENT = 0.999
ATOL = 1e-4


@pytest.fixture(scope="module")
def ov_fp32(tiny_bundle_master: Path):
    with open_predictor(tiny_bundle_master, backend="openvino", precision="fp32",
                        device="cpu") as pred:
        yield pred


def _close(out: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float = ATOL,
           agreement: float = SEG_AGREEMENT) -> None:
    assert set(out) == set(ref)
    assert np.mean(out["segmentation"] == ref["segmentation"]) >= agreement
    np.testing.assert_allclose(out["segmentation_confidence"], ref["segmentation_confidence"],
                               atol=atol)
    np.testing.assert_allclose(out["depth"], ref["depth"], atol=atol, rtol=atol)
    np.testing.assert_allclose(out["normals"], ref["normals"], atol=atol)


def test_registered_and_fp32_matches_onnxruntime_fp32(ov_fp32, tiny_bundle_master) -> None:
    assert "openvino" in BACKENDS and BACKENDS["openvino"].availability("cpu") is None
    assert isinstance(ov_fp32, Predictor)
    assert (ov_fp32.backend, ov_fp32.precision, ov_fp32.device) == ("openvino", "fp32", "cpu")
    image = camera_image(*BUNDLE_SIZE, seed=1)
    out = ov_fp32.predict(image)
    assert out["segmentation"].dtype == np.int32 and out["segmentation"].shape == BUNDLE_SIZE
    assert out["depth"].dtype == np.float32 and out["normals"].shape == (*BUNDLE_SIZE, 3)
    with open_predictor(tiny_bundle_master, backend="onnxruntime", precision="fp32",
                        device="cpu") as ort:
        _close(out, ort.predict(image))
        other = camera_image(120, 100, seed=3)  # resized there and back like every backend
        _close(ov_fp32.predict(other), ort.predict(other))


def test_batches_split_and_padded_equal_single_predictions(tiny_bundle_master) -> None:
    images = np.stack([camera_image(48, 80, seed=s) for s in range(3)])
    with open_predictor(tiny_bundle_master, backend="openvino", precision="fp32", device="cpu",
                        batch=2) as pred:
        batch = pred.predict_batch(images)  # one full batch of 2, one padded batch of 1
        assert len(batch) == 3
        for image, out in zip(images, batch, strict=True):
            single = pred.predict(image)
            assert np.array_equal(out["segmentation"], single["segmentation"])
            np.testing.assert_allclose(out["depth"], single["depth"], atol=1e-5)


def test_bf16_only_where_the_cpu_has_it_and_says_what_ran(tiny_bundle_master, ov_fp32) -> None:
    image = camera_image(*BUNDLE_SIZE, seed=2)
    with open_predictor(tiny_bundle_master, backend="openvino", precision="bf16",
                        device="cpu") as pred:
        expected = "bf16" if "BF16" in cpu_capabilities() else "fp32"
        assert pred.precision == expected
        # bf16 keeps 8 mantissa bits: close to fp32, not equal
        _close(pred.predict(image), ov_fp32.predict(image), atol=0.05, agreement=0.95)
    with open_predictor(tiny_bundle_master, backend="openvino", precision="auto",
                        device="auto") as pred:  # no INT8 graph in this bundle
        assert pred.precision == expected and pred.device in ("cpu", "gpu")


def test_int8_without_an_int8_graph_is_refused_or_runs_fp32_and_says_so(
        tiny_bundle_master, caplog) -> None:
    from mbmt_ros.runtime import FallbackError

    with pytest.raises(FallbackError, match="requested int8 on cpu, ran fp32.*mbmt-train "
                                            "quantize"):
        open_predictor(tiny_bundle_master, backend="openvino", precision="int8", device="cpu")
    caplog.set_level(logging.WARNING, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle_master, backend="openvino", precision="int8",
                        device="cpu", allow_fallback=True) as pred:
        assert pred.precision == "fp32" and pred.model_file == "model.onnx"
    assert "mbmt-train quantize" in caplog.text


def test_threads_honoured_and_model_cached_under_the_engine_cache(tiny_bundle, tmp_path,
                                                                  caplog) -> None:
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    image = camera_image(*BUNDLE_SIZE, seed=4)
    with open_predictor(tiny_bundle, backend="openvino", precision="fp32", device="cpu",
                        num_threads=1) as pred:
        first = pred.predict(image)
    assert "1 inference threads" in caplog.text
    blobs = list((tiny_bundle / "engines" / "openvino").glob("model-*/*.blob"))
    assert blobs, "no compiled model cached in <bundle>/engines/openvino"
    for blob in blobs:  # a damaged cache is recompiled, never trusted
        blob.write_bytes(blob.read_bytes()[:1000])
    with open_predictor(tiny_bundle, backend="openvino", precision="fp32", device="cpu",
                        num_threads=2) as pred:
        again = pred.predict(image)
    assert "2 inference threads" in caplog.text
    _close(again, first, atol=1e-6, agreement=1.0)
    elsewhere = tmp_path / "cache"
    with open_predictor(tiny_bundle, backend="openvino", device="cpu", precision="fp32",
                        engine_cache_dir=elsewhere):
        pass
    assert list((elsewhere / "openvino").glob("model-*/*.blob"))


def test_cuda_or_missing_intel_gpu_falls_back_to_the_cpu(tiny_bundle_master, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="mbmt_ros.runtime")
    assert "NVIDIA" in BACKENDS["openvino"].availability("cuda")
    from mbmt_ros.runtime import FallbackError

    with pytest.raises(FallbackError, match="requested fp32 on cuda, ran fp32 on cpu"):
        open_predictor(tiny_bundle_master, backend="openvino", precision="fp32", device="cuda")
    with open_predictor(tiny_bundle_master, backend="openvino", precision="fp32",
                        device="cuda", allow_fallback=True) as pred:
        assert pred.device == "cpu" and "NVIDIA" in pred.fallback
    assert "the CPU runs it" in caplog.text
    with open_predictor(tiny_bundle_master, backend="openvino", precision="fp32",
                        device="gpu", allow_fallback=True) as pred:
        gpu = BACKENDS["openvino"].availability("gpu") is None
        assert pred.device == ("gpu" if gpu else "cpu")


def test_inconsistent_bundle_is_refused(tiny_bundle, tiny_bundle_master) -> None:
    import json

    from mbmt_ros.runtime import BackendError

    meta = json.loads((tiny_bundle / "meta.json").read_text())
    meta["tasks"] = ["segmentation", "depth"]  # the graph also has normals
    (tiny_bundle / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="inconsistent"):
        open_predictor(tiny_bundle, backend="openvino", precision="fp32", device="cpu")
    shutil.rmtree(tiny_bundle)


_MISSING_OV = """
import sys
sys.modules["openvino"] = None  # as if the package were not installed
from mbmt_ros.runtime import BACKENDS, open_predictor, BackendNotInstalledError
print("REASON:", BACKENDS["openvino"].availability("cpu"))
try:
    open_predictor(sys.argv[1], backend="openvino", device="cpu", precision="fp32")
except BackendNotInstalledError as exc:
    print("MESSAGE:", exc)
"""

_NO_TORCH = """
import sys
import numpy as np
from mbmt_ros.runtime import open_predictor
with open_predictor(sys.argv[1], backend="openvino", device="cpu", precision="fp32") as pred:
    assert pred.predict(np.zeros((40, 50, 3), np.uint8))["depth"].shape == (40, 50)
print("torch" in sys.modules)
"""


def test_not_installed_names_the_package_and_torch_is_never_imported(
        tiny_bundle_master) -> None:
    proc = subprocess.run([sys.executable, "-c", _MISSING_OV, str(tiny_bundle_master)],
                          capture_output=True, text=True, timeout=120)
    assert "REASON: openvino is not installed" in proc.stdout, proc.stderr
    assert "MESSAGE:" in proc.stdout and "pip install openvino" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(tiny_bundle_master)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]
