"""A full-size SD1.5 single file (random fp16 weights, the released key layout), end to end.

Loading streams the file tensor by tensor, so the peak resident memory of a bf16 load stays
within 1.25× the weights' bf16 size (it was 2×: the whole file, then a converted copy); a
`--dry-run` on the `.ckpt` reads only its header (it read all 2 GB). Then the file trains
for two steps at 64 px through `lorakit train`, and `lorakit lora verify` accepts the LoRA.

Each measurement runs in a fresh subprocess and reads its own peak, `VmHWM` of
/proc/self/status. Not `ru_maxrss`: Linux carries that across fork and exec, so a child of
this pytest process (which just wrote 2 GB) would report the parent's peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorakit.training.config import save_config
from tests.helpers.ldm import write_random_ldm
from tests.test_train_support import concept_run

pytestmark = pytest.mark.slow

MAX_LOAD_RATIO = 1.25
MAX_DRY_RUN_RSS = 1_000_000_000

PEAK = """
def peak():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
"""

# Prints the load's peak RSS above what the imports already took, and the weights' size.
LOAD = (
    PEAK
    + """
import json, sys, torch
from lorakit.models import load_base_model

before = peak()
base = load_base_model(sys.argv[1], dtype=torch.bfloat16)
tensors = [t for m in (base.unet, base.vae, *base.text_encoders) for t in m.state_dict().values()]
print(json.dumps({
    "load": peak() - before,
    "weights": sum(t.numel() * t.element_size() for t in tensors),
    "dtypes": sorted({str(t.dtype) for t in tensors}),
}))
"""
)

# Runs the lorakit command line in this process and prints its exit code and peak RSS.
CLI_PEAK = (
    PEAK
    + """
import json, sys
from lorakit.cli.main import main

code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak": peak()}))
"""
)


def _python(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lorakit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lorakit", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def sd15_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_ldm(tmp_path_factory.mktemp("full") / "sd15.safetensors", "sd15")


@pytest.fixture(scope="module")
def sd15_ckpt(sd15_file: Path) -> Path:
    path = sd15_file.with_suffix(".ckpt")
    torch.save({"state_dict": load_file(sd15_file)}, path)
    return path


@pytest.mark.parametrize("which", ["safetensors", "ckpt"])
def test_full_size_bf16_load_peaks_within_a_quarter_over_the_weights(
    which: str, sd15_file: Path, sd15_ckpt: Path
) -> None:
    path = sd15_file if which == "safetensors" else sd15_ckpt
    result = _python(LOAD, str(path))
    assert result["dtypes"] == ["torch.bfloat16"]
    assert result["weights"] == 2 * 1_066_235_307  # SD1.5's UNet, VAE and CLIP-L
    assert result["load"] <= MAX_LOAD_RATIO * result["weights"], result


def test_ckpt_dry_run_reads_only_the_header(sd15_ckpt: Path, tmp_path: Path) -> None:
    assert sd15_ckpt.stat().st_size > 2 * MAX_DRY_RUN_RSS
    config, out = concept_run(tmp_path, sd15_ckpt)
    save_config(config, tmp_path / "run.toml")
    result = _python(CLI_PEAK, "train", str(tmp_path / "run.toml"), "--dry-run")
    assert result["code"] == 0
    assert result["peak"] < MAX_DRY_RUN_RSS, result
    assert not out.exists()


def test_full_size_file_trains_and_its_lora_verifies(sd15_file: Path, tmp_path: Path) -> None:
    # fp32: CPUs without bf16 units run a full UNet step twice as fast in it.
    config, out = concept_run(
        tmp_path,
        sd15_file,
        training={"max_train_steps": 2, "batch_size": 1, "mixed_precision": "no"},
        optimizer={"text_encoder_lr": 1e-4},
        validation={"enabled": False},
        saving={"name": "full", "save_state": False},
    )
    save_config(config, tmp_path / "run.toml")
    trained = _lorakit("train", str(tmp_path / "run.toml"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    lora = out / "full.safetensors"
    verified = _lorakit("lora", "verify", str(lora))
    assert verified.returncode == 0, verified.stdout + verified.stderr
