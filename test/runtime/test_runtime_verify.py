"""Self-verifying bundles (issue 20): the exported reference set, its checksum, the check of
every CPU backend against it, a deliberately broken graph caught through the API and the
``mbmt-engine verify`` command, older bundles without a set, and ``precision: auto`` walking
down to the next precision when one fails."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import BUNDLE_SIZE, break_graph, drop_reference

from mbmt_ros.runtime import (
    BundleError,
    VerificationError,
    open_predictor,
)
from mbmt_ros.runtime import verify as vf
from mbmt_ros.runtime.bundle import Bundle
from mbmt_ros.runtime.engine_cli import main as engine_main

FIGURE = r"(segmentation agreement|depth relative error|normals angle error)"


def _cpu_backends() -> list[str]:
    from mbmt_ros.runtime import BACKENDS

    return [n for n in ("onnxruntime", "openvino", "torch") if BACKENDS[n].availability("cpu")
            is None]


def test_export_stores_a_small_reference_set_covered_by_the_checksum(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle, verify_checksums=True)
    assert bundle.reference_path == tiny_bundle / "reference.npz"
    assert "sha256" in bundle.meta["files"]["reference.npz"]
    assert bundle.meta["reference"]["frames"] == 3
    reference = vf.load_reference(bundle)
    assert reference.frames.shape == (3, *BUNDLE_SIZE, 3) and reference.frames.dtype == np.uint8
    rows, cols = len(reference.rows), len(reference.cols)
    assert reference.outputs["normals"].shape == (3, 3, rows, cols)
    assert reference.outputs["depth"].shape == reference.outputs["segmentation"].shape == (
        3, rows, cols)
    # a damaged reference set is caught by the bundle's own checksum check
    data = bytearray((tiny_bundle / "reference.npz").read_bytes())
    data[-100] ^= 0xFF
    (tiny_bundle / "reference.npz").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="reference.npz does not match its sha256"):
        Bundle.load(tiny_bundle, verify_checksums=True)


@pytest.mark.parametrize("size", [(288, 384), (480, 640)])
def test_reference_set_stays_a_few_hundred_kilobytes(size, tmp_path: Path) -> None:
    """Even with incompressible (random) outputs, the worst case, at the paper's sizes."""
    frames = vf.reference_frames(*size)
    rng = np.random.default_rng(0)
    outputs = {"segmentation": rng.integers(0, 13, (3, *size)).astype(np.int32),
               "depth": rng.random((3, *size), dtype=np.float32) * 5,
               "normals": rng.standard_normal((3, 3, *size)).astype(np.float32)}
    path = vf.save_reference(tmp_path / "reference.npz", frames, outputs)
    assert path.stat().st_size < 400_000
    rows, cols = vf.sample_grid(*size)
    assert len(rows) * len(cols) <= vf.MAX_SAMPLES
    assert rows[0] < size[0] / 8 and rows[-1] > size[0] * 7 / 8  # the whole frame is covered


@pytest.mark.parametrize("backend", _cpu_backends())
def test_every_cpu_backend_passes_fp32_verification(backend: str,
                                                    tiny_bundle_master: Path) -> None:
    with open_predictor(tiny_bundle_master, backend=backend, precision="fp32", device="cpu",
                        verify=True) as pred:
        result = pred.verification
        assert result.passed, result.summary
        assert result.figures["segmentation_agreement"] >= 0.995
        assert result.figures["depth_rel_error"] <= 1e-3
        assert result.figures["normals_angle_deg"] <= 0.5
        assert pred.report()["verify"].startswith("passed (fp32 limits)")


def test_a_perturbed_weight_is_caught_by_verify_only(tiny_bundle: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """The checksum is re-stamped, so loading passes; the reference check names the figure
    that failed, through the API and the command line, on each ONNX backend."""
    assert engine_main(["verify", str(tiny_bundle), "--backend", "onnxruntime", "--precision",
                        "fp32", "--device", "cpu"]) == 0
    assert "passed (fp32 limits)" in capsys.readouterr().out
    break_graph(tiny_bundle)
    Bundle.load(tiny_bundle, verify_checksums=True)  # the checksums cannot tell
    backends = [b for b in _cpu_backends() if b != "torch"]  # torch runs the weights file
    for backend in backends:
        with pytest.raises(VerificationError, match=rf"verify {backend} fp32 on cpu: FAILED: "
                                                    rf"{FIGURE} .* \(fp32 limit\)"):
            open_predictor(tiny_bundle, backend=backend, precision="fp32", device="cpu",
                           verify=True)
        code = engine_main(["verify", str(tiny_bundle), "--backend", backend, "--precision",
                            "fp32", "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 1 and "FAILED" in err
        assert any(figure in err for figure in ("segmentation agreement", "depth relative "
                                                "error", "normals angle error")), err
    # without verify the broken graph opens: the check is what catches it
    with open_predictor(tiny_bundle, backend="onnxruntime", precision="fp32",
                        device="cpu") as pred:
        assert pred.verification is None


def test_verify_json_reports_what_runs(tiny_bundle_master: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    assert engine_main(["verify", str(tiny_bundle_master), "--backend", "onnxruntime",
                        "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["result"]["status"] == "passed"
    assert (report["backend"], report["device"], report["precision"]) == ("onnxruntime", "cpu",
                                                                          "fp32")
    assert report["providers"] == "CPUExecutionProvider" and report["model_file"] == "model.onnx"
    assert report["fallback"] == "none"
    # an explicit request this machine cannot honour is an error, or accepted and shown
    if _no_cuda():
        assert engine_main(["verify", str(tiny_bundle_master), "--backend", "onnxruntime",
                            "--precision", "fp16", "--device", "cuda"]) == 2
        assert "requested fp16 on cuda, ran fp32 on cpu" in capsys.readouterr().err
        assert engine_main(["verify", str(tiny_bundle_master), "--backend", "onnxruntime",
                            "--precision", "fp16", "--device", "cuda",
                            "--allow-fallback"]) == 0
        out = capsys.readouterr().out
        assert "fallback    onnxruntime: requested fp16 on cuda" in out and "passed" in out


def _no_cuda() -> bool:
    from mbmt_ros.runtime import BACKENDS

    return BACKENDS["onnxruntime"].availability("cuda") is not None


def test_bundle_without_reference_set(tiny_bundle: Path, capsys: pytest.CaptureFixture,
                                      caplog: pytest.LogCaptureFixture) -> None:
    drop_reference(tiny_bundle)
    assert engine_main(["verify", str(tiny_bundle), "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert "has no reference set" in err and "re-export" in err
    caplog.set_level(logging.WARNING, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle, backend="onnxruntime", device="cpu", verify=True) as pred:
        assert pred.verification.status == "skipped"  # opened, with a warning
    assert any(r.levelno == logging.WARNING and "no reference set" in r.getMessage()
               for r in caplog.records)


def test_precision_auto_falls_back_to_the_next_precision_that_verifies(
        tiny_bundle_master: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("openvino")
    from mbmt_ros.runtime.backends.openvino_backend import cpu_capabilities

    with open_predictor(tiny_bundle_master, backend="openvino", precision="auto",
                        device="cpu") as pred:
        first = pred.precision  # bf16 where the CPU has it (no INT8 graph in this bundle)
    assert first == ("bf16" if "BF16" in cpu_capabilities() else "fp32")
    if first == "fp32":
        pytest.skip("this CPU has no BF16: auto starts at fp32, nothing to fall back from")
    # make bf16 fail its limits: auto must warn, go down and end on a verified fp32
    monkeypatch.setitem(vf.LIMITS, "bf16", vf.Limits(1.01, 0.0, 0.0))
    caplog.set_level(logging.INFO, logger="mbmt_ros.runtime")
    with open_predictor(tiny_bundle_master, backend="openvino", precision="auto", device="cpu",
                        verify=True) as pred:
        assert pred.precision == "fp32" and pred.verification.passed
    warned = [r for r in caplog.records if r.levelno == logging.WARNING
              and "verify openvino bf16 on cpu" in r.getMessage()]
    assert warned and "precision auto tries fp16 next" in warned[0].getMessage()
    assert "segmentation agreement" in warned[0].getMessage()
    # an explicit precision that fails is refused, naming the figure, never silently lowered
    with pytest.raises(VerificationError, match=r"openvino bf16 on cpu: FAILED: segmentation "
                                                r"agreement .* \(bf16 limit\)"):
        open_predictor(tiny_bundle_master, backend="openvino", precision="bf16", device="cpu",
                       verify=True)


def test_limits_and_figures_arithmetic(tiny_bundle_master: Path) -> None:
    bundle = Bundle.load(tiny_bundle_master)
    assert vf.limits_for(bundle, "int8") == vf.LIMITS["int8"]  # no quantize-time figures
    measured = {**bundle.meta, "quantization": {"int8": {"reference": {
        "onnxruntime": {"segmentation_agreement": 0.97, "depth_rel_error": 0.02,
                        "normals_angle_deg": 3.0},
        "openvino": {"segmentation_agreement": 0.99, "depth_rel_error": 0.01,
                     "normals_angle_deg": 1.0}}}}}
    derived = vf.limits_for(Bundle(**{**bundle.__dict__, "meta": measured}), "int8")
    assert derived.min_segmentation_agreement == pytest.approx(0.92)  # 1 - (2 * 0.03 + 0.02)
    assert derived.max_depth_rel_error == pytest.approx(0.05)
    assert derived.max_normals_angle_deg == pytest.approx(8.0)
    ref = {"segmentation": np.array([[[1, 2], [3, 4]]]), "depth": np.full((1, 2, 2), 2.0),
           "normals": np.stack([np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((1, 2, 2))],
                               axis=1)}
    tilted = ref["normals"].copy()
    tilted[:, 0] = 1.0  # 45 degrees off
    figures = vf.compare({"segmentation": np.array([[[1, 2], [3, 0]]]),
                          "depth": np.full((1, 2, 2), 2.2), "normals": tilted}, ref)
    assert figures["segmentation_agreement"] == pytest.approx(0.75)
    assert figures["depth_rel_error"] == pytest.approx(0.1)
    assert figures["normals_angle_deg"] == pytest.approx(45.0)
