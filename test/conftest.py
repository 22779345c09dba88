"""Shared pytest set-up: marker handling and paths to the repository's shared sample data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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
