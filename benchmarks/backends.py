"""Benchmark the inference backends on one bundle: latency (median, p99), throughput and peak
memory per available backend, at 288x384 and 480x640, batch 1.

Usage (from the repository root)::

    .venv/bin/python benchmarks/backends.py                 # paper MBMT config, writes docs
    .venv/bin/python benchmarks/backends.py --tiny --no-docs  # smoke run with a tiny model
    .venv/bin/python benchmarks/backends.py --threads 1 2 --iters 8 --int8-frames 4 \
        --accuracy-ckpt runs/tiny/mt --accuracy-data runs/tiny/data   # + CPU precision accuracy
    .venv/bin/python benchmarks/backends.py --from-json     # rewrite the docs from the JSON

The model is the paper's MBMT-Net (three EfficientNet-B2 backbones, concatenation fusion,
two-way FPN, EfficientPS heads) with random weights - latency does not depend on the weights.
Each backend is measured in its own subprocess (clean peak-memory figures, no thread pools
left over from another backend) on the same bundle and the same input frame; GPU variants
are also compared with the CPU FP32 outputs (segmentation agreement, depth / normal error).
The table is written between the markers of the "Inference backends" section of
``docs/benchmarks.md``; the raw figures go to ``benchmarks/results/backends.json``, and
``--from-json`` regenerates the docs from them without measuring.

CPUs without an NVIDIA GPU: OpenVINO FP32 / BF16 (where the CPU has it) / INT8 and ONNX Runtime
INT8 rows are timed in the same interleaved groups as ONNX Runtime FP32 (INT8 graphs made by
``mbmt-train quantize``'s code, calibrated on synthetic frames - the timing model has random
weights). Their accuracy is measured on a *trained* model (``--accuracy-ckpt`` /
``--accuracy-data``): segmentation agreement, depth difference and the mIoU / depth abs error
deltas against ONNX Runtime FP32, checked against ``mbmt-train quantize``'s default limits. The
CPU's features (lscpu: AVX-512 VNNI / BF16, AMX) head the table, and the CPU part is repeated
between the ``cpu-precisions`` markers of ``docs/deployment.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared provenance
from provenance import cpu_model  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- backends-table:begin -->", "<!-- backends-table:end -->"
SECTION = "## Inference backends"

#: The paper's MBMT-Net (IEEE Access 2022): 3x EfficientNet-B2, CAT fusion, 13 NYUv2 classes.
MBMT_PAPER = {"arch": "mbmt", "backbones": ["efficientnet_b2"] * 3, "fusion": "cat",
              "freeze_backbones": True, "num_classes": 13}
TINY = {"arch": "mbmt", "backbones": ["test_efficientnet"] * 2, "fpn_channels": 16,
        "head_channels": 8, "task_hidden_channels": 16, "num_classes": 13}


def variants(cuda: bool, ort_cuda: bool, tensorrt: bool, openvino: bool = False,
             bf16: bool = False, int8: bool = False) -> list[dict[str, Any]]:
    """The backend configurations to measure on this machine (``bf16``: the CPU has it;
    ``int8``: the bundles carry ``model_int8.onnx``)."""
    out = [
        {"label": "onnxruntime CPU fp32", "backend": "onnxruntime", "device": "cpu",
         "precision": "fp32", "options": {}},
        {"label": "torch CPU fp32 eager", "backend": "torch", "device": "cpu",
         "precision": "fp32", "options": {}},
    ]
    if int8:
        out.append({"label": "onnxruntime CPU int8", "backend": "onnxruntime", "device": "cpu",
                    "precision": "int8", "options": {}})
    if openvino:
        out += [{"label": f"openvino CPU {p}", "backend": "openvino", "device": "cpu",
                 "precision": p, "options": {"model_cache": False}}
                for p in ("fp32", *(("bf16",) if bf16 else ()), *(("int8",) if int8 else ()))]
    if cuda:
        out += [
            {"label": "torch CUDA fp32 eager", "backend": "torch", "device": "cuda",
             "precision": "fp32", "options": {"channels_last": False}},
            {"label": "torch CUDA fp16 channels-last", "backend": "torch", "device": "cuda",
             "precision": "fp16", "options": {}},
            {"label": "torch CUDA fp16 channels-last + CUDA graphs", "backend": "torch",
             "device": "cuda", "precision": "fp16", "options": {"cuda_graphs": True}},
        ]
    if ort_cuda:
        out.append({"label": "onnxruntime CUDA fp16", "backend": "onnxruntime",
                    "device": "cuda", "precision": "fp16", "options": {"ort_tensorrt": False}})
    if tensorrt:
        out.append({"label": "TensorRT fp16", "backend": "tensorrt", "device": "cuda",
                    "precision": "fp16", "options": {}})
    return out


# --------------------------------------------------------------------------- worker side
def _open(spec: dict[str, Any]) -> Any:
    from mbmt_ros.runtime import open_predictor

    options = dict(spec["options"])
    if spec["device"] == "cpu" and spec.get("threads"):
        options["num_threads"] = spec["threads"]
    return open_predictor(spec["bundle"], backend=spec["backend"], precision=spec["precision"],
                          device=spec["device"], **options)


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Open one variant alone (subprocess): open time, peak memory, parity with the CPU FP32
    reference."""
    image = np.load(spec["image"], allow_pickle=False)
    gpu_before = _gpu_used()
    t0 = time.perf_counter()
    pred = _open(spec)
    open_s = time.perf_counter() - t0
    for _ in range(3):
        out = pred.predict(image)
    result = {"open_s": round(open_s, 2), "backend_used": pred.backend, "device": pred.device,
              "precision": pred.precision, "peak_rss_mib": _peak_rss_mib()}
    if pred.device == "cuda":
        result["gpu_mem_mib"] = _gpu_peak(spec["backend"], gpu_before)
    result["parity"] = _parity(out, np.load(spec["reference"], allow_pickle=False))
    pred.close()
    return result


def timing(group: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Latency of several variants in one process (subprocess), iterations interleaved
    round-robin so that load changes on a shared machine hit every variant alike."""
    image = np.load(group["image"], allow_pickle=False)
    preds = {spec["label"]: _open(spec) for spec in group["specs"]}
    for _ in range(group["warmup"]):
        for pred in preds.values():
            pred.predict(image)
    labels = list(preds)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for i in range(group["iters"]):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            t = time.perf_counter()
            preds[label].predict(image)
            times[label].append((time.perf_counter() - t) * 1e3)
    for pred in preds.values():
        pred.close()
    return {label: _stats(ms) for label, ms in times.items()}


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited
    from the parent across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stats(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {"median_ms": float(np.median(arr)), "p99_ms": float(np.percentile(arr, 99)),
            "mean_ms": float(arr.mean()), "throughput_fps": float(1e3 / arr.mean()),
            "iters": len(ms)}


def _gpu_used() -> int | None:
    try:
        from mbmt_ros.runtime.cuda_device import check, cudart

        free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
        return int(total - free)
    except Exception:  # no GPU / cuda-python
        return None


def _gpu_peak(backend: str, before: int | None) -> float | None:
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_reserved() / 2**20
    after = _gpu_used()  # device-wide used memory delta (ORT / TensorRT own allocators)
    return None if after is None or before is None else (after - before) / 2**20


def _parity(out: dict[str, np.ndarray], ref: Any) -> dict[str, float]:
    report = {}
    if "segmentation" in out:
        report["seg_agreement"] = float(np.mean(out["segmentation"] == ref["segmentation"]))
    for task in ("depth", "normals"):
        if task in out:
            report[f"{task}_max_abs"] = float(np.abs(out[task] - ref[task]).max())
            report[f"{task}_mean_abs"] = float(np.abs(out[task] - ref[task]).mean())
    return report


# --------------------------------------------------------------------------- driver side
def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = cpu_model() or platform.processor() or platform.machine()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "ram_gib": round(mem, 1),
            "os": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": round(os.getloadavg()[0], 2)}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["cpu_features"] = cpu_features()
    try:
        import openvino

        from mbmt_ros.runtime.backends.openvino_backend import cpu_capabilities

        info["openvino"] = openvino.__version__.split("-")[0]
        info["openvino_cpu_capabilities"] = list(cpu_capabilities())
    except ImportError:
        pass
    return info


#: lscpu flags the CPU backends' lower precisions depend on.
CPU_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")


def cpu_features() -> dict[str, bool]:
    """Which of :data:`CPU_FLAGS` this CPU has (``lscpu`` flags; /proc/cpuinfo as fallback)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    if "Flags:" not in text:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    flags = {f for line in text.splitlines() if line.lower().startswith("flags")
             for f in line.split(":", 1)[1].split()}
    return {flag: flag in flags for flag in CPU_FLAGS}


def export_bundles(cfg: dict[str, Any], sizes: list[tuple[int, int]], work: Path,
                   fp16: bool, reuse: bool = False) -> dict[tuple[int, int], Path]:
    import torch

    from mbmt_ros.models import build_model
    from training.export import export_model

    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).eval()
    bundles = {}
    for h, w in sizes:
        out = work / f"bundle_{h}x{w}"
        bundles[(h, w)] = out
        if reuse and (out / "meta.json").is_file():
            continue
        t = time.perf_counter()
        export_model(model, out, input_size=(h, w), exporter="torchscript", fp16=fp16,
                     overwrite=True, provenance={"data": "random weights (benchmark)"})
        print(f"exported {out} in {time.perf_counter() - t:.0f} s", flush=True)
        bundles[(h, w)] = out
    return bundles


def quantize_bundles(bundles: dict[tuple[int, int], Path], work: Path, frames: int,
                     reuse: bool = False) -> dict[str, float]:
    """``model_int8.onnx`` for each timing bundle (``mbmt-train quantize``'s code), calibrated
    on ``frames`` synthetic scenes at the bundle size; accuracy limits off - the timing model
    has random weights, so its accuracy means nothing (see :func:`accuracy`). Returns the
    seconds each quantization took."""
    import math

    from training.data.synth.generate import write_synth_dataset
    from training.quantize import Limits, quantize_bundle

    took = {}
    for (h, w), bundle in bundles.items():
        if reuse and (bundle / "model_int8.onnx").is_file():
            continue
        data = work / f"calibration_{h}x{w}"
        if not (data / "manifest.json").is_file():
            write_synth_dataset(data, count=frames + 2, height=h, width=w, seed=0,
                                val_fraction=2 / (frames + 2), bag=False, overwrite=True)
        t = time.perf_counter()
        quantize_bundle(bundle, data, frames=frames, val_frames=1,
                        limits=Limits(math.inf, math.inf, math.inf))
        took[f"{h}x{w}"] = round(time.perf_counter() - t, 1)
        print(f"quantized {bundle} in {took[f'{h}x{w}']:.0f} s", flush=True)
    return took


def accuracy(ckpt: str, data: str, work: Path, bf16: bool, frames: int) -> dict[str, Any]:
    """Accuracy of every lower precision on a *trained* model: export ``ckpt``, quantize it on
    ``frames`` training frames of ``data``, and score OpenVINO FP32/BF16/INT8 and ONNX Runtime
    INT8 against ONNX Runtime FP32 on ``data``'s val split (segmentation agreement, depth
    difference, mIoU / depth abs error deltas), each checked against the default limits."""
    import math

    from training.export import export_bundle
    from training.quantize import Limits, exceeded, measure_precisions, quantize_bundle

    bundle = export_bundle(ckpt, work / "trained_bundle", exporter="torchscript", fp16=False,
                           overwrite=True)
    record = quantize_bundle(bundle, data, frames=frames, limits=Limits(math.inf, math.inf, math.inf))
    variants = {"onnxruntime CPU int8": ("onnxruntime", "int8"),
                "openvino CPU fp32": ("openvino", "fp32"), "openvino CPU int8": ("openvino", "int8")}
    if bf16:
        variants["openvino CPU bf16"] = ("openvino", "bf16")
    report = measure_precisions(bundle, data, variants, work=work)
    report["within_default_limits"] = {label: not exceeded(delta, Limits())
                                       for label, delta in report["delta"].items()}
    report["checkpoint"] = str(ckpt)
    report["data"] = str(data)
    report["calibration"] = {k: record["calibration"][k] for k in ("split", "frames")}
    return report


def run_worker(mode: str, payload: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, f"--{mode}", json.dumps(payload)],
                          capture_output=True, text=True, cwd=REPO, timeout=3600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(results: list[dict[str, Any]], info: dict[str, Any], params: int,
             acc: dict[str, Any] | None = None) -> str:
    measured = info.get("measured_utc") or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Measured {measured} by "
        "`benchmarks/backends.py`: MBMT-Net (3x EfficientNet-B2, random weights, "
        f"{params / 1e6:.1f} M parameters), batch 1, end-to-end `Predictor.predict` on a frame "
        "at the bundle size (copy-in, graph incl. normalisation + argmax, copy-out).",
        "",
        f"Machine: {info['cpu']}, {info['cpu_count']} logical CPUs, {info['ram_gib']} GiB RAM, "
        f"{info.get('gpu', 'no GPU')}; {info['os']}; Python {info['python']}, torch "
        f"{info['torch']}, onnxruntime {info['onnxruntime']}; "
        f"1-min load average at start {info['load_avg_1min']}.",
        "",
        *_cpu_lines(info),
        "| input | backend | median ms | p99 ms | frames/s | peak RSS MiB | GPU MiB | "
        "seg agreement vs CPU fp32 | depth max abs (m) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["result"]
        if "error" in m:
            lines.append(f"| {r['size']} | {r['label']} | failed: {m['error']} | | | | | | |")
            continue
        par = m.get("parity", {})
        gpu = m.get("gpu_mem_mib")
        lines.append(
            f"| {r['size']} | {r['label']} | {m['median_ms']:.1f} | {m['p99_ms']:.1f} | "
            f"{m['throughput_fps']:.1f} | {m['peak_rss_mib']:.0f} | "
            f"{'-' if gpu is None else f'{gpu:.0f}'} | "
            f"{par.get('seg_agreement', float('nan')) * 100:.2f} % | "
            f"{par.get('depth_max_abs', float('nan')):.2g} |")
    lines.append("")
    for size in dict.fromkeys(r["size"] for r in results):
        by = {(r["label"], r.get("threads", 0)): r["result"] for r in results if r["size"] == size}
        for threads in dict.fromkeys(r.get("threads", 0) for r in results):
            ort = next((v for (k, t), v in by.items()
                        if k.startswith("onnxruntime CPU fp32") and t == threads), {})
            eager = next((v for (k, t), v in by.items()
                          if k.startswith("torch CPU") and t == threads), {})
            if "median_ms" in ort and "median_ms" in eager:
                what = f"{threads} thread(s)" if threads else "default threads"
                lines.append(f"- {size}, {what}: ONNX Runtime CPU is "
                             f"**{eager['median_ms'] / ort['median_ms']:.2f}x** as fast as "
                             f"PyTorch eager on the CPU (median latency ratio).")
        by = {r["label"]: r["result"] for r in results if r["size"] == size}
        gpu32 = by.get("torch CUDA fp32 eager", {})
        best = by.get("torch CUDA fp16 channels-last + CUDA graphs", {})
        if "median_ms" in gpu32 and "median_ms" in best:
            lines.append(f"- {size}: torch fp16 + channels-last + CUDA graphs is "
                         f"**{gpu32['median_ms'] / best['median_ms']:.2f}x** faster than torch "
                         f"fp32 eager on the GPU.")
    lines += _cpu_speedups(results, acc)
    if acc:
        lines += _accuracy_lines(acc)
    return "\n".join(lines) + "\n"


def _cpu_lines(info: dict[str, Any]) -> list[str]:
    """The CPU features the lower precisions depend on (from lscpu), and OpenVINO's view."""
    feats = info.get("cpu_features")
    if not feats:
        return []
    have = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in feats.items())
    caps = info.get("openvino_cpu_capabilities")
    ov = (f"; OpenVINO {info.get('openvino')} reports {', '.join(caps)}" if caps else "")
    return [f"CPU features (lscpu): {have}{ov}.", ""]


def _base(label: str) -> str:
    return label.split(",")[0]


def _cpu_speedups(results: list[dict[str, Any]], acc: dict[str, Any] | None) -> list[str]:
    """Each CPU row's median-latency ratio to ONNX Runtime FP32 of the same size and thread
    setting (timed interleaved, so the ratio holds under load), and the 1-thread goal."""
    within = (acc or {}).get("within_default_limits", {})
    lines = []
    for size in dict.fromkeys(r["size"] for r in results):
        for threads in dict.fromkeys(r.get("threads", 0) for r in results if r["size"] == size):
            rows = {_base(r["label"]): r["result"] for r in results if r["size"] == size
                    and r.get("threads", 0) == threads and "CPU" in r["label"]
                    and "median_ms" in r["result"]}
            ref = rows.get("onnxruntime CPU fp32")
            if not ref or len(rows) < 3:
                continue
            ratios = {k: ref["median_ms"] / v["median_ms"] for k, v in rows.items()
                      if k != "onnxruntime CPU fp32" and not k.startswith("torch")}
            if not ratios:
                continue
            what = f"{threads} thread{'s' * (threads > 1)}" if threads else "default threads"
            shown = ", ".join(f"{k} **{v:.2f}x**" for k, v in ratios.items())
            lines.append(f"- {size}, {what}: speed-up over ONNX Runtime CPU fp32 (median "
                         f"latency ratio, timed side by side): {shown}.")
            if threads == 1:
                ok = {k: v for k, v in ratios.items() if within.get(k, k.endswith("fp32"))}
                if ok:
                    best = max(ok, key=ok.get)
                    verdict = "met" if ok[best] >= 2.5 else "**not met**"
                    lines.append(f"  Goal (best CPU row within the accuracy limits >= 2.5x "
                                 f"ONNX Runtime fp32 on one thread): {best} at {ok[best]:.2f}x "
                                 f"- {verdict}.")
    return lines


def _accuracy_lines(acc: dict[str, Any]) -> list[str]:
    """Accuracy of each lower precision on the trained model vs ONNX Runtime FP32."""
    fp32 = acc["fp32"]
    lines = [
        "",
        f"Accuracy on a trained model (`{Path(acc['checkpoint']).name}`, the tiny pipeline) on "
        f"{acc['frames']} {acc['split']} frames of its dataset, vs ONNX Runtime fp32 "
        f"(mIoU {fp32.get('segmentation', {}).get('miou', float('nan')):.2f}, depth abs err "
        f"{fp32.get('depth', {}).get('abs_err', float('nan')):.4f} m); INT8 calibrated on "
        f"{acc['calibration']['frames']} {acc['calibration']['split']} frames. Limits: "
        "-1 mIoU point, +2 % depth abs error.",
        "",
        "| variant | seg agreement with fp32 | depth mean rel. diff | mIoU change (points) | "
        "depth abs err change | within limits |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, agree in acc["agreement"].items():
        delta = acc["delta"][label]
        miou, depth = delta["miou_drop_points"], delta["depth_abs_err_increase_pct"]
        lines.append(
            f"| {label} | {_pct(agree['segmentation_pct'], 2)} | "
            f"{_pct(agree['depth_mean_rel_diff_pct'], 3)} | "
            f"{'-' if miou is None else f'{0.0 - miou:+.2f}'} | "
            f"{'-' if depth is None else f'{depth:+.2f} %'} | "
            f"{'yes' if acc['within_default_limits'][label] else '**no**'} |")
    return lines


def _pct(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f} %"


def write_doc(table: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else "# Benchmarks\n"
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    from mbmt_ros.io import atomic_write_text

    atomic_write_text(DOC, text)


#: The CPU-precision figures also shown in docs/deployment.md (section 8), between these.
DEPLOY_DOC = REPO / "docs" / "deployment.md"
CPU_BEGIN, CPU_END = "<!-- cpu-precisions:begin -->", "<!-- cpu-precisions:end -->"


def cpu_summary(results: list[dict[str, Any]], info: dict[str, Any],
                acc: dict[str, Any] | None) -> str:
    """The CPU features, the CPU speed-ups over ONNX Runtime FP32 and the accuracy table: the
    part of the benchmark docs/deployment.md repeats (same JSON, same functions)."""
    lines = [f"From `benchmarks/backends.py` ({info.get('measured_utc', '?')}, {info['cpu']}, "
             f"{info['cpu_count']} logical CPUs, shared and loaded: only the side-by-side "
             "ratios are meaningful; full table in [benchmarks.md](benchmarks.md)).", "",
             *_cpu_lines(info), *_cpu_speedups(results, acc)]
    if acc:
        lines += _accuracy_lines(acc)
    return "\n".join(lines) + "\n"


def write_deploy_doc(summary: str) -> None:
    """Replace the block between the cpu-precisions markers of docs/deployment.md (left
    alone when the markers are missing)."""
    text = DEPLOY_DOC.read_text(encoding="utf-8") if DEPLOY_DOC.is_file() else ""
    if CPU_BEGIN not in text or CPU_END not in text:
        return
    head, rest = text.split(CPU_BEGIN, 1)
    from mbmt_ros.io import atomic_write_text

    atomic_write_text(DEPLOY_DOC, head + f"{CPU_BEGIN}\n{summary}{CPU_END}"
                      + rest.split(CPU_END, 1)[1])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", nargs="+", default=["288x384", "480x640"])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="CPU intra-op threads for the CPU backends; several values measure "
                             "each (default 0: each library's own default, the physical "
                             "cores)")
    parser.add_argument("--tiny", action="store_true", help="tiny model (smoke test)")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--work", help="folder for bundles (default: a temporary folder)")
    parser.add_argument("--reuse-bundles", action="store_true",
                        help="reuse bundles already exported into --work")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "backends.json"))
    parser.add_argument("--int8-frames", type=int, default=8,
                        help="calibration frames for the timing bundles' INT8 graphs (0: no "
                             "INT8 rows)")
    parser.add_argument("--accuracy-ckpt", metavar="CKPT",
                        help="a trained checkpoint (e.g. a tiny pipeline stage folder) whose "
                             "lower-precision accuracy is measured on --accuracy-data")
    parser.add_argument("--accuracy-data", metavar="DIR",
                        help="the dataset --accuracy-ckpt was trained on (train + val split)")
    parser.add_argument("--accuracy-frames", type=int, default=32,
                        help="calibration frames for --accuracy-ckpt (default 32)")
    parser.add_argument("--from-json", action="store_true",
                        help="measure nothing: regenerate the docs table from --json")
    return parser


def _publish(results: list[dict], info: dict, params: int, acc: dict | None,
             write_docs: bool) -> None:
    """Print the table and (unless ``--no-docs``) write it into the docs."""
    table = markdown(results, info, params, acc)
    print(table)
    if write_docs:
        write_doc(table)
        write_deploy_doc(cpu_summary(results, info, acc))


def _measure_bundle(bundle: Path, size: tuple[int, int], work: Path, specs: list[dict],
                    args: argparse.Namespace) -> list[dict]:
    """Every variant on one bundle (one input size), per thread setting, each in workers."""
    from mbmt_ros.runtime import open_predictor

    h, w = size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    np.save(work / "image.npy", image)
    with open_predictor(bundle, backend="onnxruntime", precision="fp32", device="cpu") as ref:
        np.savez(work / "reference.npz", **ref.predict(image))
    common = {"bundle": str(bundle), "image": str(work / "image.npy"),
              "reference": str(work / "reference.npz")}
    results = []
    for n, threads in enumerate(args.threads):
        group = []
        for spec in specs:
            if spec["device"] != "cpu" and n > 0:
                continue  # GPU variants once, with the first thread setting
            label = spec["label"] + (f", {threads} thread{'s' * (threads > 1)}"
                                     if threads and spec["device"] == "cpu" else "")
            group.append({**spec, **common, "label": label, "threads": threads})
        timed = run_worker("timing", {"image": common["image"], "specs": group,
                                      "iters": args.iters, "warmup": args.warmup})
        for job in group:
            result = {**run_worker("probe", job),
                      **timed.get(job["label"], {"error": timed.get("error", "?")})}
            print(f"{h}x{w} {job['label']}: {json.dumps(result)}", flush=True)
            results.append({"size": f"{h}x{w}", "label": job["label"],
                            "threads": threads if job["device"] == "cpu" else 0,
                            "result": result})
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.probe or args.timing:
        job = probe if args.probe else timing
        print(json.dumps(job(json.loads(args.probe or args.timing))))
        return 0
    if args.from_json:
        raw = json.loads(Path(args.json).read_text())
        _publish(raw["results"], raw["machine"], raw["params"], raw.get("accuracy"),
                 not args.no_docs)
        return 0

    import torch

    from mbmt_ros.models import build_model
    from mbmt_ros.runtime import backend_availability
    from mbmt_ros.runtime.registry import BACKENDS

    info = machine()
    info["measured_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cuda = torch.cuda.is_available()
    avail = backend_availability("cuda")
    openvino = BACKENDS["openvino"].availability("cpu") is None
    bf16 = "BF16" in info.get("openvino_cpu_capabilities", [])
    specs = variants(cuda, avail["onnxruntime"] is None, BACKENDS["tensorrt"].availability(
        "cuda") is None, openvino=openvino, bf16=bf16, int8=args.int8_frames > 0)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    cfg = TINY if args.tiny else MBMT_PAPER
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        bundles = export_bundles(cfg, sizes, work, fp16=cuda, reuse=args.reuse_bundles)
        quantize_s = (quantize_bundles(bundles, work, args.int8_frames, args.reuse_bundles)
                      if args.int8_frames > 0 else {})
        acc = None
        if args.accuracy_ckpt and args.accuracy_data and openvino:
            acc = accuracy(args.accuracy_ckpt, args.accuracy_data, work, bf16,
                           args.accuracy_frames)
            print(json.dumps(acc["delta"]), flush=True)
        results = [row for size, bundle in bundles.items()
                   for row in _measure_bundle(bundle, size, work, specs, args)]
        params = sum(p.numel() for p in build_model(cfg, load_weights=False).parameters())
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": info, "config": cfg, "params": params,
                                           "iters": args.iters, "warmup": args.warmup,
                                           "int8_calibration_frames": args.int8_frames,
                                           "quantize_s": quantize_s, "results": results,
                                           "accuracy": acc}, indent=2) + "\n")
    _publish(results, info, params, acc, not args.no_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
