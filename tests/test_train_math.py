"""The step's math against the reference semantics of sd-scripts and diffusers.

Conditioning (clip_skip, SDXL's two encoders and pooled output), SDXL crop coordinates of
flipped images, the noise offset, per-sample loss weights and the LR schedules' shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lorakit.dataset.buckets import Bucket, ResizeCrop
from lorakit.models import load_base_model
from lorakit.models.configs import CONFIG_ROOT
from lorakit.training.config import config_from_dict
from lorakit.training.data import TrainItem, time_ids
from lorakit.training.objective import Objective
from lorakit.training.optim import make_scheduler
from lorakit.training.text import encode

CAPTIONS = ["sks disc, red, blue ground", ""]


def _ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def test_sd15_clip_skip_takes_an_earlier_layer_through_the_final_norm(tiny_sd15_dir: Path) -> None:
    base = load_base_model(tiny_sd15_dir)
    encoder = base.text_encoders[0]
    reference = encoder(_ids(base.tokenizers[0], CAPTIONS), output_hidden_states=True)
    final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    last, pooled = encode(base, CAPTIONS, 1, torch.device("cpu"))
    skipped, _ = encode(base, CAPTIONS, 2, torch.device("cpu"))
    assert pooled is None
    assert torch.allclose(last, reference.last_hidden_state, atol=1e-6)
    assert torch.allclose(skipped, final_norm(reference.hidden_states[-2]), atol=1e-6)
    assert not torch.allclose(last, skipped)
    # Caption dropout's empty caption is a real, different conditioning.
    assert not torch.allclose(last[0], last[1])


@torch.no_grad()
def test_sdxl_uses_penultimate_states_of_both_encoders_and_te2_pooled(tiny_sdxl_dir: Path) -> None:
    base = load_base_model(tiny_sdxl_dir)
    outputs = [
        encoder(_ids(tokenizer, CAPTIONS), output_hidden_states=True)
        for encoder, tokenizer in zip(base.text_encoders, base.tokenizers, strict=True)
    ]
    hidden, pooled = encode(base, CAPTIONS, 1, torch.device("cpu"))
    expected = torch.cat([out.hidden_states[-2] for out in outputs], dim=-1)
    assert torch.allclose(hidden, expected, atol=1e-6)
    assert pooled is not None
    assert torch.allclose(pooled, outputs[1].text_embeds, atol=1e-6)
    # clip_skip 2 on SDXL steps one layer further back on both encoders.
    deeper, _ = encode(base, CAPTIONS, 2, torch.device("cpu"))
    expected = torch.cat([out.hidden_states[-3] for out in outputs], dim=-1)
    assert torch.allclose(deeper, expected, atol=1e-6)


def test_sdxl_crop_coordinates_follow_a_flip() -> None:
    """The crop of a flipped image starts where the mirrored crop does, in pixels."""
    crop = ResizeCrop(resized_width=100, resized_height=64, left=10, top=0)
    item = TrainItem(Path("x.png"), "", 1, 200, 128, Bucket(64, 64), crop)
    plain, flipped = time_ids(item).tolist(), time_ids(item, flip=True).tolist()
    assert plain == [128, 200, 0, 10, 64, 64]
    row = np.arange(crop.resized_width)
    left = int(flipped[3])
    assert np.array_equal(row[::-1][left : left + 64], row[10:74][::-1])
    assert flipped[:3] == plain[:3] and flipped[4:] == plain[4:]


def _objective(prediction: str = "epsilon", **kwargs) -> Objective:
    schedule = json.loads(
        (CONFIG_ROOT / "sd15" / "scheduler" / "scheduler_config.json").read_text()
    )
    return Objective(schedule, prediction, torch.device("cpu"), **kwargs)


def test_noise_offset_adds_one_constant_per_image_and_channel() -> None:
    latents = torch.zeros(3, 4, 8, 8)
    plain = _objective().sample_noise(latents, torch.Generator().manual_seed(5))
    offset = _objective(noise_offset=0.1).sample_noise(latents, torch.Generator().manual_seed(5))
    shift = offset - plain
    assert float(shift.std(dim=(2, 3)).max()) < 1e-6
    per_channel = shift[:, :, 0, 0]
    assert float(per_channel.abs().min()) > 0
    assert float(per_channel.abs().max()) < 0.1 * 6


def test_timesteps_cover_the_whole_schedule() -> None:
    objective = _objective()
    t = objective.sample_timesteps(20_000, torch.device("cpu"))
    assert objective.num_timesteps == 1000
    assert int(t.min()) == 0 and int(t.max()) == 999


def test_prior_loss_weight_scales_each_sample() -> None:
    objective = _objective()
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 700])
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    weighted = objective.loss(pred, target, t, torch.tensor([1.0, 0.25]))
    assert torch.allclose(weighted, (mse[0] + 0.25 * mse[1]) / 2)
    assert torch.allclose(objective.loss(pred, target, t), mse.mean())


def _lrs(scheduler: dict, steps: int, **optimizer) -> list[float]:
    config = config_from_dict({"scheduler": scheduler, "optimizer": optimizer})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    schedule = make_scheduler(config, opt, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(schedule.get_last_lr()[0])
        opt.step()
        schedule.step()
    return lrs


def test_schedules_take_warmup_cycles_and_power() -> None:
    warm = _lrs({"name": "constant_with_warmup", "warmup_steps": 2}, 6)
    assert warm[:3] == pytest.approx([0.0, 0.5, 1.0]) and warm[-1] == pytest.approx(1.0)
    restarts = _lrs({"name": "cosine_with_restarts", "num_cycles": 2}, 10)
    assert restarts[4] < 0.2 and restarts[5] == pytest.approx(1.0)
    single = _lrs({"name": "cosine_with_restarts", "num_cycles": 1}, 10)
    assert single[5] == pytest.approx(0.5)
    square = _lrs({"name": "polynomial", "power": 2.0}, 10)
    assert square[5] == pytest.approx(0.25, abs=1e-6)
    linear = _lrs({"name": "linear"}, 10)
    assert linear[5] == pytest.approx(0.5)


def test_adafactor_relative_step_brings_its_own_schedule() -> None:
    config = config_from_dict({"optimizer": {"name": "adafactor", "args": {"relative_step": True}}})
    from lorakit.training.optim import make_optimizer

    param = torch.nn.Parameter(torch.zeros(4, 4))
    optimizer = make_optimizer(config, [{"params": [param], "lr": 1.0, "name": "unet"}])
    schedule = make_scheduler(config, optimizer, 10)
    param.grad = torch.ones(4, 4)
    optimizer.step()
    schedule.step()
    lr = schedule.get_last_lr()[0]
    # Adafactor's relative step: min(1e-2, 1/sqrt(step)), not the configured 1.0.
    assert 0 < lr <= 1e-2
