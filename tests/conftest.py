"""Shared pytest setup: deterministic, small, CPU-friendly."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # Tests marked `gpu` run only where CUDA exists; everywhere else they are skipped with a reason.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
