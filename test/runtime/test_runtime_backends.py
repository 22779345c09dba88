"""Every CPU backend reproduces the PyTorch model on the exported bundle (stated tolerances),
at the bundle size, at another resolution and in batches; backend selection and errors."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import BUNDLE_SIZE, camera_image, reference_outputs

from mbmt_ros.runtime import (
    BACKENDS,
    BackendError,
    BackendNotInstalledError,
    FallbackError,
    InputError,
    Predictor,
    UnknownBackendError,
    open_predictor,
)

CPU_BACKENDS = ["onnxruntime", "torch"]
#: Tolerances against the FP32 PyTorch model on the CPU (both backends run FP32 there).
SEG_AGREEMENT = 0.999
CONF_ATOL = 1e-4
DEPTH_ATOL = 1e-4
NORMALS_ATOL = 1e-4


@pytest.fixture(scope="module", params=CPU_BACKENDS)
def predictor(request: pytest.FixtureRequest, tiny_bundle_master: Path):
    with open_predictor(tiny_bundle_master, backend=request.param, device="cpu") as pred:
        yield pred


def _compare(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert set(out) == set(ref)
    assert np.mean(out["segmentation"] == ref["segmentation"]) >= SEG_AGREEMENT
    np.testing.assert_allclose(out["segmentation_confidence"], ref["segmentation_confidence"],
                               atol=CONF_ATOL)
    np.testing.assert_allclose(out["depth"], ref["depth"], atol=DEPTH_ATOL, rtol=1e-4)
    np.testing.assert_allclose(out["normals"], ref["normals"], atol=NORMALS_ATOL)


def test_predictor_matches_pytorch_at_bundle_size(predictor, tiny_model) -> None:
    image = camera_image(*BUNDLE_SIZE)
    out = predictor.predict(image)
    assert isinstance(predictor, Predictor)
    assert predictor.precision == "fp32" and predictor.device == "cpu"
    assert predictor.tasks == ("segmentation", "depth", "normals")
    assert out["segmentation"].dtype == np.int32 and out["segmentation"].shape == BUNDLE_SIZE
    assert out["depth"].dtype == np.float32 and out["normals"].shape == (*BUNDLE_SIZE, 3)
    _compare(out, reference_outputs(tiny_model, image))


def test_other_resolution_is_resized_there_and_back(predictor, tiny_model) -> None:
    from PIL import Image

    image = camera_image(120, 100, seed=3)  # portrait, not a multiple of anything
    out = predictor.predict(image)
    assert out["segmentation"].shape == (120, 100)
    assert out["depth"].shape == (120, 100) and out["normals"].shape == (120, 100, 3)
    # the reference: the model at the bundle size, resized back like the contract says
    small = np.asarray(Image.fromarray(image).resize(BUNDLE_SIZE[::-1],
                                                     Image.Resampling.BILINEAR))
    ref = reference_outputs(tiny_model, small)
    rows = ((np.arange(120) + 0.5) * BUNDLE_SIZE[0] / 120).astype(int)
    cols = ((np.arange(100) + 0.5) * BUNDLE_SIZE[1] / 100).astype(int)
    assert np.mean(out["segmentation"] == ref["segmentation"][rows][:, cols]) >= SEG_AGREEMENT
    assert set(np.unique(out["segmentation"])) <= set(np.unique(ref["segmentation"]))
    depth = np.asarray(Image.fromarray(ref["depth"]).resize((100, 120), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(out["depth"], depth, atol=DEPTH_ATOL, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(out["normals"], axis=-1), 1.0, atol=1e-4)


def test_batch_equals_single_predictions(predictor) -> None:
    images = np.stack([camera_image(48, 80, seed=s) for s in range(3)])
    batch = predictor.predict_batch(images)
    assert len(batch) == 3
    for image, out in zip(images, batch, strict=True):
        single = predictor.predict(image)
        assert np.array_equal(out["segmentation"], single["segmentation"])
        np.testing.assert_allclose(out["depth"], single["depth"], atol=1e-5)
        np.testing.assert_allclose(out["normals"], single["normals"], atol=1e-5)


def test_backends_agree_with_each_other(tiny_bundle_master: Path) -> None:
    image = camera_image(70, 90, seed=5)
    outs = []
    for name in CPU_BACKENDS:
        with open_predictor(tiny_bundle_master, backend=name, device="cpu") as pred:
            outs.append(pred.predict(image))
    _compare(outs[0], outs[1])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((32, 32, 4), np.uint8), "3-channel RGB"),
    (np.zeros((32, 32), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((32, 32, 3), np.float32), "uint8"),
    (np.zeros((0, 32, 3), np.uint8), "zero size"),
    ([[1, 2, 3]], "NumPy array"),
])
def test_bad_images_are_rejected(predictor, bad, match) -> None:
    with pytest.raises(InputError, match=match):
        predictor.predict(bad)


def test_bad_batches_are_rejected(predictor) -> None:
    with pytest.raises(InputError, match=r"\(N, H, W, 3\)"):
        predictor.predict_batch(np.zeros((2, 32, 32, 1), np.uint8))
    with pytest.raises(InputError, match="empty"):
        predictor.predict_batch(np.zeros((0, 32, 32, 3), np.uint8))


def test_closed_predictor_refuses_work(tiny_bundle_master: Path) -> None:
    pred = open_predictor(tiny_bundle_master, backend="onnxruntime", device="cpu")
    pred.close()
    pred.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        pred.predict(camera_image(32, 32))


def test_auto_picks_onnxruntime_on_cpu_and_says_why(tiny_bundle_master: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle_master) as pred:  # defaults: auto, fp16, cuda
        assert pred.backend in ("tensorrt", "onnxruntime", "openvino")
        if pred.backend in ("onnxruntime", "openvino") and pred.device == "cpu":
            assert pred.precision in ("fp32", "bf16")  # what runs, not the fp16 requested
    assert "backend auto: using" in caplog.text
    if pred.backend != "tensorrt":
        assert "passed over: tensorrt/cuda:" in caplog.text  # and why


def test_unknown_backend_and_options(tiny_bundle_master: Path) -> None:
    with pytest.raises(UnknownBackendError, match="choose 'auto' or one of"):
        open_predictor(tiny_bundle_master, backend="tflite")
    with pytest.raises(BackendError, match="precision"):
        open_predictor(tiny_bundle_master, backend="onnxruntime", precision="fp8")
    with pytest.raises(BackendError, match="device"):
        open_predictor(tiny_bundle_master, backend="onnxruntime", device="tpu")
    assert set(BACKENDS) == {"tensorrt", "onnxruntime", "openvino", "torch"}


def test_tensorrt_not_installed_names_the_package(tiny_bundle_master: Path) -> None:
    pytest.importorskip("cuda.bindings")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendNotInstalledError, match="pip install tensorrt"):
        open_predictor(tiny_bundle_master, backend="tensorrt", device="cuda")
    assert "tensorrt is not installed" in BACKENDS["tensorrt"].availability("cuda")


_MISSING_ORT = """
import sys
sys.modules["onnxruntime"] = None  # as if the package were not installed
from mbmt_ros.runtime import open_predictor, BackendNotInstalledError
try:
    open_predictor(sys.argv[1], backend="onnxruntime", device="cpu")
except BackendNotInstalledError as exc:
    print("MESSAGE:", exc)
    sys.exit(0)
sys.exit(1)
"""


def test_onnxruntime_not_installed_names_the_package(tiny_bundle_master: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _MISSING_ORT, str(tiny_bundle_master)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pip install onnxruntime" in proc.stdout


_NO_TORCH = """
import sys
import numpy as np
from mbmt_ros.runtime import open_predictor
for backend in ("onnxruntime", "auto"):
    with open_predictor(sys.argv[1], backend=backend, device="cpu") as pred:
        out = pred.predict(np.zeros((40, 50, 3), np.uint8))
        assert out["depth"].shape == (40, 50), out["depth"].shape
print("torch" in sys.modules, pred.backend)
"""  # auto takes OpenVINO on the CPU where it is installed: neither imports torch


def test_runtime_with_onnxruntime_never_imports_torch(tiny_bundle_master: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(tiny_bundle_master)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "False"
    assert proc.stdout.split()[1] in ("onnxruntime", "openvino")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_openvino_only_values_are_reported_as_what_really_runs(backend: str,
                                                               tiny_bundle_master: Path) -> None:
    # an Intel GPU is OpenVINO's: another backend refuses rather than run elsewhere silently
    with pytest.raises(BackendError, match="only the openvino backend"):
        open_predictor(tiny_bundle_master, backend=backend, device="gpu")
    # device auto / precision auto: the predictor states the device and precision used
    with open_predictor(tiny_bundle_master, backend=backend, precision="auto",
                        device="auto") as pred:
        assert pred.device in ("cuda", "cpu") and pred.fallback is None
        assert pred.precision in (("fp16", "fp32") if pred.device == "cuda" else ("fp32",))
        out = pred.predict(camera_image(*BUNDLE_SIZE))
        assert out["segmentation"].shape == BUNDLE_SIZE
    # bf16 (OpenVINO's) is not what this backend runs: an error naming both by default ...
    with pytest.raises(FallbackError, match=rf"{backend}: requested bf16 on auto, ran fp32"):
        open_predictor(tiny_bundle_master, backend=backend, precision="bf16", device="auto")
    # ... and accepted with allow_fallback: a WARN line and the predictor's fallback field
    with open_predictor(tiny_bundle_master, backend=backend, precision="bf16", device="cpu",
                        allow_fallback=True) as pred:
        assert pred.precision == "fp32" and "requested bf16 on cpu, ran fp32" in pred.fallback
        assert pred.report()["fallback"] == pred.fallback
