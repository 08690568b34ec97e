"""Third-party libraries stay quiet and bitsandbytes loads only for the 8-bit optimizers.

diffusers, transformers and peft import bitsandbytes whenever it is installed (over a
second, and a `kernels` warning on every command on AVX512-BF16 CPUs). Each check runs a
real command in a fresh interpreter, since this test session has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_RUN = """
import json, sys, types
from lorakit.cli.main import main
code = main(sys.argv[1:])
loaded = sorted(name for name, module in sys.modules.items()
                if isinstance(module, types.ModuleType) and name.split(".")[0] in {names})
print(json.dumps({{"code": code, "loaded": loaded}}))
"""


def _run(names: set[str], *argv: str) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", _RUN.format(names=repr(names)), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_generate_loads_models_without_bitsandbytes_or_noise(
    tiny_sd15_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "images"
    argv = ["generate", "--model", str(tiny_sd15_dir), "a photo", "--steps", "1"]
    report, stderr = _run({"bitsandbytes", "diffusers"}, *argv, "--seed", "1", "--out", str(out))
    assert report["code"] == 0
    assert "diffusers" in report["loaded"]  # the probe sees what the command really imported
    assert not [name for name in report["loaded"] if name.startswith("bitsandbytes")]
    assert list(out.glob("*.png"))
    for noise in ("bitsandbytes", "kernels-community", "[transformers]", "torchvision", "it/s]"):
        assert noise not in stderr


def test_8bit_optimizer_still_gets_bitsandbytes() -> None:
    code = """
import torch
from lorakit import thirdparty
thirdparty.configure()
import diffusers.models  # the import that used to pull bitsandbytes in
from lorakit.training.optim import OPTIMIZERS
param = torch.nn.Parameter(torch.ones(64, 64))
optimizer = OPTIMIZERS["adamw8bit"]([{"params": [param]}], 1e-2, {})
param.sum().backward()
optimizer.step()
print(type(optimizer).__module__, float(param.detach().mean()))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    module, mean = result.stdout.split()
    assert module.startswith("bitsandbytes")
    assert float(mean) < 1.0


@pytest.mark.parametrize("argv", [("png-info", "missing.png"), ("--version",)])
def test_light_commands_import_no_model_library(argv: tuple[str, ...], tmp_path: Path) -> None:
    code = _RUN.format(names=repr({"torch", "diffusers", "transformers"}))
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path
    )
    if argv == ("--version",):
        assert result.returncode == 0 and "lorakit" in result.stdout
        return
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 2 and report["loaded"] == []
