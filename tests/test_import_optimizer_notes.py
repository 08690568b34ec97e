"""Adafactor and the `adafactor` scheduler, in a TOML or an import: the run says what the
optimizer will really do before it starts, and the optimizer does just that (real
transformers Adafactor and schedules, stepped on a real parameter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorakit.cli.main import main
from lorakit.training.config import config_from_dict
from lorakit.training.optim import make_optimizer, make_scheduler, optimizer_notes
from tests.test_train_support import make_concept


def _lrs_after(settings: dict, steps: int = 3, lr: float = 1e-4) -> list[float]:
    """The LRs the schedule reports after `steps` optimizer steps on one parameter."""
    config = config_from_dict(settings)
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 8))
    optimizer = make_optimizer(config, [{"params": [weight], "lr": lr, "name": "unet"}])
    scheduler = make_scheduler(config, optimizer, total_steps=10)
    for _ in range(steps):
        (weight**2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return scheduler.get_last_lr()


def test_adafactor_scheduler_without_relative_step_is_a_constant_lr_and_says_so() -> None:
    settings = {
        "optimizer": {"name": "adafactor", "unet_lr": 1e-4},
        "scheduler": {"name": "adafactor", "warmup_steps": 5},
    }
    assert _lrs_after(settings) == [1e-4]
    notes = optimizer_notes(config_from_dict(settings))
    assert notes == [
        "scheduler adafactor only reports Adafactor's relative step and relative_step is "
        "off: the LR stays constant at optimizer.unet_lr / text_encoder_lr",
        "scheduler.warmup_steps 5 not used: scheduler adafactor has no warmup",
    ]


def test_relative_step_ignores_the_configured_lrs_and_says_so() -> None:
    settings = {
        "optimizer": {"name": "adafactor", "unet_lr": 1.0, "args": {"relative_step": True}},
        "scheduler": {"name": "cosine", "warmup_ratio": 0.1},
    }
    (reported,) = _lrs_after(settings, lr=1.0)
    assert 0 < reported <= 1e-2  # 1/sqrt(step) capped at 1e-2, not the configured 1.0
    notes = optimizer_notes(config_from_dict(settings))
    assert notes[0].startswith(
        "Adafactor with relative_step=True ignores optimizer.unet_lr and text_encoder_lr"
    )
    assert notes[1] == (
        "scheduler cosine, scheduler.warmup_ratio 0.1 not used: Adafactor's relative step "
        "is the schedule"
    )


def test_warmup_ratio_warms_up_over_that_share_of_the_steps() -> None:
    settings = {
        "optimizer": {"name": "adamw"},
        "scheduler": {"name": "linear", "warmup_ratio": 0.2},
    }
    assert config_from_dict(settings).with_warmup_steps(10).scheduler.warmup_steps == 2
    assert _lrs_after(settings, steps=1) == [pytest.approx(0.5e-4)]  # step 1 of 2
    assert _lrs_after(settings, steps=2) == [pytest.approx(1e-4)]
    assert optimizer_notes(config_from_dict(settings)) == []


def test_the_dry_run_of_a_toml_prints_the_notes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_concept(tmp_path / "data", count=2)
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[model]\npath = "/models/sd15.safetensors"\nfamily = "sd15"\n'
        f'[dataset]\npath = "{data}"\n'
        '[optimizer]\nname = "adafactor"\nunet_lr = 1.0\nargs = { relative_step = true }\n'
        '[scheduler]\nname = "adafactor"\n',
        encoding="utf-8",
    )
    assert main(["train", str(toml), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Adafactor with relative_step=True ignores optimizer.unet_lr" in out
