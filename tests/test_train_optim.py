"""Every optimizer and every LR schedule runs real training steps on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lorakit.network.files import load_lora_file
from lorakit.training.loop import train
from tests.test_train_support import fast_config, make_concept

CASES = [
    ("adamw", {}, "constant_with_warmup", 1e-3),
    ("adamw8bit", {}, "linear", 1e-3),
    (
        "adafactor",
        {"relative_step": True, "scale_parameter": True, "warmup_init": True},
        "constant",
        0.0,
    ),
    ("adafactor", {}, "constant", 1e-3),
    ("prodigy", {"d_coef": 2.0}, "cosine_with_restarts", 1.0),
    ("dadaptadam", {"decouple": True}, "polynomial", 1.0),
    ("lion", {}, "cosine", 1e-4),
]


@pytest.mark.parametrize(("name", "args", "schedule", "lr"), CASES)
def test_optimizer_and_schedule_train(
    tiny_sd15_dir: Path, tmp_path: Path, name: str, args: dict, schedule: str, lr: float
) -> None:
    data = make_concept(tmp_path / "data", count=2)
    config = fast_config(
        tiny_sd15_dir,
        data,
        tmp_path / "out",
        optimizer={"name": name, "args": args, "unet_lr": lr or 1e-3},
        scheduler={"name": schedule, "warmup_steps": 1, "num_cycles": 2},
        training={"max_train_steps": 3, "epochs": 1},
        saving={"save_every_n_epochs": None, "save_state": False, "save_precision": "fp32"},
        validation={"enabled": False},
        dataset={"repeats": 3},
    )
    result = train(config)
    assert result.steps == 3
    state, _ = load_lora_file(tmp_path / "out" / "tiny.safetensors")
    ups = [t.float() for k, t in state.items() if "lora_up" in k]
    assert all(math.isfinite(float(t.abs().max())) for t in ups)
    assert any(float(t.abs().max()) > 0 for t in ups), "no LoRA weight moved"
