"""OpenVINO backend: CPUs (x86 and ARM) and Intel GPUs, for robots without an NVIDIA GPU.

Devices: ``cpu``, ``gpu`` (an Intel GPU) or ``auto`` (the GPU when OpenVINO sees one, else the
CPU); ``cuda`` is not an OpenVINO device and runs on the CPU - a fallback, which the
registry's policy refuses unless ``allow_fallback`` (:mod:`mbmt_ros.runtime.delivery`). Precisions: ``fp32``; ``bf16`` where the CPU has it (AVX-512 BF16 or AMX,
read from OpenVINO's ``OPTIMIZATION_CAPABILITIES``; elsewhere fp32 runs); ``fp16`` on a GPU;
``int8`` runs the bundle's ``model_int8.onnx`` (``mbmt-train quantize``; the rest of the graph
in fp32, as measured there; on the CPU without the quantize-dequantize pairs on convolution
outputs that no INT8 operation reads, see :func:`drop_conv_output_requantization`); ``auto`` =
int8 when the bundle has it and the CPU has integer dot products (VNNI / AMX / ARM dot
product), else bf16 / fp16 where the hardware has it, else fp32. The
predictor's ``.precision`` / ``.device`` report what the compiled model actually runs
(OpenVINO's own view of it), never the request.

Compiled models are cached by OpenVINO (``CACHE_DIR``) in ``<engine cache>/openvino`` - the
bundle's ``engines/`` folder, or the per-user cache for read-only bundles - so a restart
skips compilation, one folder per graph file. OpenVINO keys its cache by model, device,
version and settings; when a compile with the cache fails, this model's folder (only) is
deleted and the model compiled again, never trusted. The shape is fixed
to the bundle's input size and ``batch`` (default 1) images, which OpenVINO runs faster than
a dynamic batch; the shared :class:`BundlePredictor` splits larger batches.
"""
from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.runtime.bundle import INPUT_NAME, Bundle
from mbmt_ros.runtime.engine_cache import cache_dir
from mbmt_ros.runtime.errors import BackendError, BackendNotInstalledError
from mbmt_ros.runtime.predictor import BundlePredictor

__all__ = ["availability", "open", "cpu_capabilities", "resolve_precision",
           "drop_conv_output_requantization", "cpu_has_int8_dot_product", "model_cache_dir"]

_log = logging.getLogger(__name__)
_INSTALL = "OpenVINO is not installed: `pip install openvino` (or mbmt_ros[openvino])"
#: Our precision name -> OpenVINO's inference precision hint.
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
#: OpenVINO element type name (as the compiled model reports it) -> our precision name.
_REPORTED = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendNotInstalledError(_INSTALL) from exc
    return openvino


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    """One OpenVINO ``Core`` per process (creating one loads the device plugins)."""
    return _ov().Core()


def _gpu_visible() -> bool:
    return any(d.split(".")[0] == "GPU" for d in _core().available_devices)


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. FP32, BF16, INT8, FP16)."""
    return tuple(str(c) for c in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def availability(device: str) -> str | None:
    try:
        _ov()
    except BackendNotInstalledError:
        return "openvino is not installed (pip install openvino)"
    if device == "cuda":
        return "OpenVINO does not run on NVIDIA CUDA GPUs (use device cpu, gpu or auto)"
    if device == "gpu" and not _gpu_visible():
        return f"OpenVINO sees no Intel GPU (devices: {', '.join(_core().available_devices)})"
    return None


def _device(requested: str, notes: list[str]) -> str:
    """OpenVINO device name for ``requested``; a device OpenVINO lacks here runs on the CPU,
    with the reason in ``notes`` (the registry's fallback policy decides what that means)."""
    if requested in ("gpu", "auto") and _gpu_visible():
        return "GPU"
    if requested in ("gpu", "cuda"):
        notes.append(f"device {requested}: {availability(requested)}; the CPU runs it")
    return "CPU"


#: /proc/cpuinfo flags of integer dot-product instructions (x86 VNNI / AMX, ARM dot product).
_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_has_int8_dot_product(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has integer dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX-INT8,
    ARMv8.2 dot product), where OpenVINO's INT8 kernels pay off and cannot overflow the way
    the AVX2 path can (OpenVINO's documented 8-bit weight saturation on non-VNNI CPUs)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return False
    flags = set(cpuinfo.replace("\t", " ").split())
    return any(flag in flags for flag in _INT8_FLAGS)


def resolve_precision(requested: str, ov_device: str, has_int8: bool,
                      notes: list[str] | None = None) -> str:
    """The precision to try for ``requested`` on ``ov_device`` (``CPU``/``GPU``) given the
    bundle and the hardware: ``auto`` -> int8 (the bundle has the graph and, on the CPU, the
    CPU has integer dot products) > bf16 (CPU) / fp16 (GPU) > fp32; an unavailable one ->
    fp32, with the reason appended to ``notes``."""
    notes = notes if notes is not None else []
    caps = cpu_capabilities() if ov_device == "CPU" else ("FP32", "FP16", "INT8")
    if requested == "auto":
        if has_int8 and (ov_device != "CPU" or cpu_has_int8_dot_product()):
            return "int8"
        half = "bf16" if ov_device == "CPU" else "fp16"
        return half if half.upper() in caps else "fp32"
    if requested == "int8" and not has_int8:
        notes.append("int8: the bundle has no model_int8.onnx (make one with "
                     "`mbmt-train quantize`)")
        return "fp32"
    if requested in ("bf16", "fp16") and requested.upper() not in caps:
        notes.append(f"{requested}: the {ov_device} lacks it (capabilities {list(caps)})")
        return "fp32"
    return requested


class _OvRunner:
    """Runs the compiled model with one infer request (the predictor serialises calls)."""

    def __init__(self, compiled: Any, bundle: Bundle, batch: int) -> None:
        self._request = compiled.create_infer_request()
        self._outputs = list(bundle.output_names)
        self._ports = {name: compiled.output(name) for name in self._outputs}
        self.max_batch: int | None = batch
        self._batch = batch
        self._compiled = compiled

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        count = len(images)
        if count < self._batch:  # static shape: pad the last, partial batch
            pad = np.zeros((self._batch - count, *images.shape[1:]), images.dtype)
            images = np.concatenate([images, pad])
        self._request.infer({INPUT_NAME: np.ascontiguousarray(images)})
        # copies: the request reuses its output buffers on the next call
        return {name: np.array(self._request.get_tensor(port).data[:count])
                for name, port in self._ports.items()}

    def close(self) -> None:
        self._request = None
        self._compiled = None


def _config(precision: str, ov_device: str, num_threads: int | None,
            cache: Path | None) -> dict[str, Any]:
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                              # int8: the non-quantised rest of the graph in fp32, as measured
                              "INFERENCE_PRECISION_HINT": _HINTS.get(precision, "f32")}
    if ov_device == "CPU" and num_threads:
        config["INFERENCE_NUM_THREADS"] = int(num_threads)
    if cache is not None:
        config["CACHE_DIR"] = str(cache)
    return config


def _compile(model: Any, ov_device: str, config: dict[str, Any]) -> Any:
    """Compile; when that fails with the cache set, drop only *this model's* cache folder
    (:func:`model_cache_dir`: one per graph file), never the whole cache, and compile again."""
    try:
        return _core().compile_model(model, ov_device, config)
    except RuntimeError as exc:
        cache = config.get("CACHE_DIR")
        if cache is None:
            raise
        _log.warning("openvino: compiling with the cache %s failed (%s); clearing this "
                     "model's cache entries and compiling again", cache,
                     str(exc).splitlines()[0] if str(exc) else exc)
        shutil.rmtree(cache, ignore_errors=True)
        Path(cache).mkdir(parents=True, exist_ok=True)
        return _core().compile_model(model, ov_device, config)


def model_cache_dir(root: Path, bundle: Bundle, path: Path) -> Path:
    """This graph's own OpenVINO cache folder under ``root``: ``<file stem>-<sha256 prefix>``,
    so clearing it after a failed compile leaves other models' compiled blobs alone."""
    digest = str(bundle.meta["files"].get(path.name, {}).get("sha256", ""))[:16] or "unlisted"
    return root / f"{path.stem}-{digest}"


def open(bundle: Bundle, precision: str = "fp32", device: str = "cpu",  # noqa: A001
         **options: Any) -> BundlePredictor:
    """An OpenVINO predictor; options: ``num_threads`` (CPU inference threads, default:
    OpenVINO's choice), ``batch`` (images per inference, default 1), ``engine_cache_dir``
    (the cache folder; ``openvino/<model>-<hash>/`` is used inside it), ``model_cache``
    (False: no cache). ``.notes`` say why what runs differs from the request."""
    ov = _ov()
    notes: list[str] = []
    ov_device = _device(device, notes)
    chosen = resolve_precision(precision, ov_device, bundle.int8_model_path is not None, notes)
    path = bundle.int8_model_path if chosen == "int8" else bundle.model_path
    assert path is not None
    batch = int(options.get("batch") or 1)
    cache = (model_cache_dir(cache_dir(bundle, options.get("engine_cache_dir")) / "openvino",
                             bundle, path) if options.get("model_cache", True) else None)
    if cache is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # an unwritable override: run, just without the cache
            _log.warning("openvino: cannot create the model cache %s (%s); compiling without "
                         "it", cache, exc)
            cache = None
    try:
        model = _core().read_model(str(path))
        _check_io(model, bundle, path)
        if chosen == "int8" and ov_device == "CPU":
            dropped = drop_conv_output_requantization(model)
            if dropped == 0:
                _log.warning("openvino: no convolution-output quantize-dequantize pair matched "
                             "the pattern in %s (OpenVINO %s): INT8 runs, but without the "
                             "fused-activation speed-up (docs/deployment.md section 8)",
                             path.name, ov.__version__)
            else:
                _log.debug("openvino: dropped %d convolution output requantizations", dropped)
        model.reshape({INPUT_NAME: ov.PartialShape([batch, *bundle.input_size, 3])})
        compiled = _compile(model, ov_device, _config(chosen, ov_device,
                                                      options.get("num_threads"), cache))
    except BackendError:
        raise
    except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable / bad models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"OpenVINO cannot load {path} on {ov_device}: {first}; the file may "
                           f"be corrupt - re-run `mbmt-train export`") from exc
    used = _ran_precision(compiled, chosen)
    if used != chosen:
        notes.append(f"the compiled model runs {used}, not {chosen}")
    ran_on = "gpu" if ov_device == "GPU" else "cpu"
    _log.info("openvino: %s on %s, %s, %s inference threads, cache %s", path.name, ov_device,
              used, _property(compiled, "INFERENCE_NUM_THREADS"), cache)
    return BundlePredictor(bundle, _OvRunner(compiled, bundle, batch), backend="openvino",
                           precision=used, device=ran_on, provider=f"OpenVINO {ov_device}",
                           model_file=path.name,
                           providers=(f"OpenVINO {ov.__version__} {ov_device}",),
                           notes=tuple(notes))


#: OpenVINO operations that run in INT8 when their (activation) input is quantized.
_INT8_OPS = frozenset({"Convolution", "GroupConvolution", "ConvolutionBackpropData",
                       "GroupConvolutionBackpropData", "MatMul"})
_CONV_OPS = frozenset({"Convolution", "GroupConvolution"})


def drop_conv_output_requantization(model: Any) -> int:
    """Remove from ``model`` (an ``openvino.Model`` read from a QDQ graph) the quantize-
    dequantize pairs on convolution outputs that no INT8 operation reads; returns how many.

    ONNX Runtime's static QDQ quantization also quantizes each convolution's output: ONNX
    Runtime needs that pair to fuse the convolution into its integer ``QLinearConv``. OpenVINO's
    CPU plugin instead fuses the bias, the activation that follows (swish, leaky ReLU) and the
    next operation's quantization into the INT8 convolution as post-ops; the pair in between
    blocks that, and the activation runs as a separate element-wise pass on a re-quantized
    tensor. Without it the activation runs in fp32 inside the convolution, and the tensor is
    quantized where the next convolution reads it (that pair is kept) - the placement NNCF
    uses. Measured on the paper's MBMT-Net (AVX-512 VNNI CPU, 1 thread): about 1.2x faster, and
    closer to FP32 (fewer rounding steps). The ONNX file, and ONNX Runtime's run of it, are
    unchanged.
    """
    dropped = 0
    for fq in model.get_ordered_ops():
        if fq.get_type_name() != "FakeQuantize" or not _conv_output(fq.input_value(0).get_node()):
            continue
        end = _dequantized(fq)
        if end is None or any(t.get_node().get_type_name() in _INT8_OPS
                              for t in end.get_target_inputs()):
            continue
        end.replace(fq.input_value(0))
        dropped += 1
    return dropped


def _conv_output(node: Any) -> bool:
    """``node`` is a convolution, or one plus a per-channel addend (its bias). Dropping a
    quantization is valid anywhere (it only skips a rounding step); this picks where it pays."""
    if node.get_type_name() in _CONV_OPS:
        return True
    if node.get_type_name() != "Add":
        return False
    for conv, other in ((0, 1), (1, 0)):
        shape = node.input_value(other).get_partial_shape()
        if (node.input_value(conv).get_node().get_type_name() in _CONV_OPS
                and shape.is_static and len(shape) > 1
                and all(d.get_length() == 1 for i, d in enumerate(shape) if i != 1)):
            return True
    return False


def _constant(node: Any) -> bool:
    """A constant, possibly converted (OpenVINO's form of a QDQ zero point or scale)."""
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _dequantized(fq: Any) -> Any:
    """The output of the dequantization that reads ``fq`` alone (Convert..., [Subtract zero
    point], Multiply scale, each by a constant), or None when the pattern differs."""
    out = fq.output(0)
    while True:
        targets = list(out.get_target_inputs())
        if len(targets) != 1:
            return None
        node, index = targets[0].get_node(), targets[0].get_index()
        kind = node.get_type_name()
        if kind in ("Subtract", "Multiply"):
            if index != 0 or not _constant(node.input_value(1).get_node()):
                return None
        elif kind != "Convert":
            return None
        out = node.output(0)
        if kind == "Multiply":
            return out


def _property(compiled: Any, name: str) -> Any:
    """A property of the compiled model (what OpenVINO actually uses), None if unsupported."""
    try:
        return compiled.get_property(name)
    except RuntimeError:
        return None


def _ran_precision(compiled: Any, chosen: str) -> str:
    """What the compiled model runs: int8 for the INT8 graph, else its inference precision."""
    if chosen == "int8":
        return "int8"
    hint = _property(compiled, "INFERENCE_PRECISION_HINT")
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return _REPORTED.get(name, chosen)


def _check_io(model: Any, bundle: Bundle, path: Path) -> None:
    inputs = [sorted(i.get_names()) for i in model.inputs]
    outputs = [sorted(o.get_names()) for o in model.outputs]
    expected = list(bundle.output_names)
    if (len(inputs) != 1 or INPUT_NAME not in inputs[0] or len(outputs) != len(expected)
            or any(name not in names for name, names in zip(expected, outputs, strict=True))):
        raise BackendError(f"{path} has inputs {inputs} and outputs {outputs}, but meta.json "
                           f"promises [{INPUT_NAME!r}] and {list(bundle.output_names)}; the "
                           f"bundle is inconsistent - re-run `mbmt-train export`")
