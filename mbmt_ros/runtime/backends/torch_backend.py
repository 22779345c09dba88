"""PyTorch backend: rebuilds the model from ``weights.safetensors`` and runs the bundle graph.

CPU: FP32 eager. CUDA: FP16 (``precision="fp16"``) and channels-last by default, plus the
options ``cuda_graphs=True`` (capture one CUDA graph per batch size and replay it - removes
the per-layer launch overhead that dominates batch-1 latency) and ``compile=True`` or a
``torch.compile`` mode string. This is the only module of the runtime that imports torch.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np

from mbmt_ros.runtime.bundle import Bundle
from mbmt_ros.runtime.errors import BackendError, BackendNotInstalledError
from mbmt_ros.runtime.predictor import BundlePredictor

__all__ = ["availability", "open", "TorchRunner", "load_bundle_model"]

_log = logging.getLogger(__name__)
_INSTALL = ("PyTorch is not installed: `pip install torch timm safetensors` (see "
            "https://pytorch.org for the CUDA build of your platform)")


def availability(device: str) -> str | None:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("timm") is None:
        return "torch / timm are not installed (pip install torch timm safetensors)"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "this torch build sees no CUDA GPU"
    return None


def load_bundle_model(bundle: Bundle) -> Any:
    """The bundle's network as an ``nn.Module`` (eval mode, CPU, FP32)."""
    try:
        from mbmt_ros.models import load_model
    except ImportError as exc:
        raise BackendNotInstalledError(_INSTALL) from exc
    model = load_model(bundle.weights_path)
    if isinstance(model, tuple):  # (model, metadata)
        model = model[0]
    return model.eval()


class TorchRunner:
    """Runs :class:`~mbmt_ros.runtime.torch_graph.BundleGraph` on one device."""

    max_batch: int | None = None

    def __init__(self, bundle: Bundle, device: str, precision: str, channels_last: bool = True,
                 cuda_graphs: bool = False, compile: bool | str = False) -> None:  # noqa: A002
        import torch

        from mbmt_ros.runtime.torch_graph import BundleGraph

        self._torch = torch
        self.device = torch.device(device)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        model = load_bundle_model(bundle).to(self.device, dtype)
        if channels_last and self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.graph = BundleGraph(model, bundle.tasks, dtype=dtype).to(self.device).eval()
        self._forward = self.graph
        if compile:
            mode = compile if isinstance(compile, str) else None
            self._forward = torch.compile(self.graph, mode=mode, dynamic=False)
        self._names = bundle.output_names
        self._use_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[int, tuple[Any, Any, tuple[Any, ...]]] = {}
        self._pinned: dict[int, Any] = {}

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            if self.device.type == "cpu":
                outputs = self._forward(torch.from_numpy(images))
            else:
                host = self._pinned.get(len(images))
                if host is None:
                    host = self._pinned[len(images)] = torch.empty(
                        images.shape, dtype=torch.uint8).pin_memory()
                host.numpy()[...] = images
                if self._use_graphs:
                    outputs = self._replay(host)
                else:
                    outputs = self._forward(host.to(self.device, non_blocking=True))
            return {name: out.cpu().numpy() for name, out in zip(self._names, outputs,
                                                                 strict=True)}

    def _replay(self, host: Any) -> tuple[Any, ...]:
        torch = self._torch
        entry = self._graphs.get(host.shape[0])
        if entry is None:
            static_in = host.to(self.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (cuDNN autotuning) outside the capture
                for _ in range(3):
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            entry = self._graphs[host.shape[0]] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        static_in.copy_(host, non_blocking=True)
        graph.replay()
        return static_out

    def close(self) -> None:
        self._graphs.clear()
        self._pinned.clear()
        self.graph = None
        self._forward = None


def open(bundle: Bundle, precision: str = "fp32", device: str = "cpu",  # noqa: A001
         **options: Any) -> BundlePredictor:
    """A torch predictor; options: ``channels_last`` (default True, CUDA only),
    ``cuda_graphs`` (default False), ``compile`` (False, True or a torch.compile mode),
    ``num_threads`` (CPU intra-op threads)."""
    if importlib.util.find_spec("torch") is None:
        raise BackendNotInstalledError(_INSTALL)
    import torch

    notes: list[str] = []
    if device == "cuda" and not torch.cuda.is_available():
        notes.append("CUDA unavailable: this torch build sees no CUDA GPU")
        device = "cpu"
    if device == "cpu" and precision != "fp32":
        notes.append(f"{precision}: the torch backend runs only fp32 on the CPU")
        precision = "fp32"
    if precision == "int8":
        raise BackendError("the torch backend has no int8 mode; use --precision fp16 or fp32, "
                           "or the tensorrt backend")
    if options.get("num_threads"):
        torch.set_num_threads(int(options["num_threads"]))
    runner = TorchRunner(bundle, device, precision,
                         channels_last=options.get("channels_last", True),
                         cuda_graphs=bool(options.get("cuda_graphs", False)),
                         compile=options.get("compile", False))
    _log.info("torch: %s on %s, %s%s", bundle.weights_path, device, precision,
              " + CUDA graphs" if runner._use_graphs else "")
    return BundlePredictor(bundle, runner, backend="torch", precision=precision, device=device,
                           provider=f"torch {torch.__version__} {device}",
                           model_file=bundle.weights_path.name, notes=tuple(notes))
