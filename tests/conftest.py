"""Shared fixtures: tiny diffusers models written once per test session."""

from __future__ import annotations

from pathlib import Path

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
