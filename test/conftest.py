"""Shared pytest set-up: marker handling, paths to the repository's shared sample data, and
skipping what needs the training stack where it is not installed (a robot).

Without torch (``importlib.util.find_spec("torch") is None``) a test module, or a test or
fixture, that fails with ``ModuleNotFoundError`` for one of :data:`TRAINING_STACK` is skipped
with that reason instead of erroring, so ``pytest`` on a robot collects cleanly and runs the
runtime tests (test/infra/test_packaging.py checks this in an environment without torch).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
#: Top-level modules of the training stack (the ``train`` extra) a robot does not have.
TRAINING_STACK = frozenset({"torch", "torchvision", "timm", "lightning", "pytorch_lightning",
                            "torchmetrics", "safetensors", "onnxscript", "tensorboard"})
TORCH_MISSING = importlib.util.find_spec("torch") is None


def _missing_training_module(exc: BaseException | None) -> str | None:
    """The training-stack module whose absence caused ``exc`` (through its causes), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in TRAINING_STACK:
            return exc.name
        exc = exc.__cause__ or exc.__context__
    return None


def _skip_reason(module: str) -> str:
    return f"needs {module} (the training stack: pip install -e .[train]), not installed here"


class _TrainingOptionalModule(pytest.Module):
    """A test module that is skipped, not an error, when it imports the missing training stack."""

    def _getobj(self):
        try:
            return super()._getobj()
        except self.CollectError as exc:
            missing = _missing_training_module(exc)
            if missing is None:
                raise
            pytest.skip(f"{self.path.name} {_skip_reason(missing)}", allow_module_level=True)


if TORCH_MISSING:
    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
        if module_path.name == "__init__.py":
            return None
        return _TrainingOptionalModule.from_parent(parent, path=module_path)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(item: pytest.Item):
        try:
            return (yield)
        except ModuleNotFoundError as exc:
            missing = _missing_training_module(exc)
            if missing is None:
                raise
            pytest.skip(_skip_reason(missing))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(item: pytest.Item):
        try:
            return (yield)
        except ModuleNotFoundError as exc:
            missing = _missing_training_module(exc)
            if missing is None:
                raise
            pytest.skip(_skip_reason(missing))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    isolated = os.environ.get("MBMT_NETNS") == "1"
    skip_ros = pytest.mark.skip(
        reason="ROS tests run only inside an isolated network namespace: use scripts/test"
    )
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    cuda = None
    for item in items:
        if item.get_closest_marker("ros") is not None and not isolated:
            item.add_marker(skip_ros)
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                cuda = _cuda_available()
            if not cuda:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real NYU samples of ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA
