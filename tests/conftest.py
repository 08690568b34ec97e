"""Shared fixtures: tiny diffusers models written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One thread per process, inherited by the CLI subprocesses tests start: tiny models gain
# nothing from more, and on a 2-core machine extra threads turn 0.1 s forward passes into
# seconds of contention.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from tests.helpers.tiny import save_tiny


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sd15_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny("sd15", tmp_path_factory.mktemp("tiny") / "sd15")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny("sdxl", tmp_path_factory.mktemp("tiny") / "sdxl")
