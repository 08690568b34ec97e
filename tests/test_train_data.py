"""Batches, captions, regularization balance and the objective's math."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from PIL import Image

from lorakit.models.configs import CONFIG_ROOT
from lorakit.training.config import config_from_dict
from lorakit.training.data import (
    BucketBatchSampler,
    build_items,
    load_pixels,
    loss_weights,
    process_caption,
)
from lorakit.training.objective import Objective
from tests.test_train_support import make_concept


def _wide(folder: Path, count: int) -> None:
    for i in range(count):
        Image.new("RGB", (128, 64), (i * 40, 0, 0)).save(folder / f"wide{i}.png")


def _config(data: Path, **dataset):
    return config_from_dict(
        {
            "model": {"path": "m"},
            "dataset": {"path": str(data), "bucket_min": 64, "bucket_max": 256, **dataset},
            "training": {"batch_size": 2, "seed": 3},
        }
    )


def test_batches_share_a_bucket_and_cover_every_repeat(tmp_path: Path) -> None:
    data = make_concept(tmp_path / "img" / "3_sks", count=3)
    _wide(data, 2)
    config = _config(tmp_path / "img")
    items = build_items(config, 64)
    assert {it.repeats for it in items.train} == {3}
    batches = BucketBatchSampler(items, config).epoch_batches(1)
    for batch in batches:
        assert len({items.train[k.index].bucket for k in batch}) == 1
    counts = Counter(k.index for batch in batches for k in batch)
    assert counts == {i: 3 for i in range(5)}
    assert batches == BucketBatchSampler(items, config).epoch_batches(1)
    assert batches != BucketBatchSampler(items, config).epoch_batches(2)


def test_processes_split_an_epoch_evenly(tmp_path: Path) -> None:
    config = _config(make_concept(tmp_path / "d", count=3), repeats=3)
    items = build_items(config, 64)
    ranks = [BucketBatchSampler(items, config, rank=r, world=2).epoch_batches(1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    assert ranks[0] != ranks[1]


def test_regularization_images_are_balanced_and_weighted(tmp_path: Path) -> None:
    data = make_concept(tmp_path / "d", count=2)
    reg = make_concept(tmp_path / "reg", count=3, caption="disc")
    config = _config(data, repeats=3, reg_path=str(reg), prior_loss_weight=0.5)
    items = build_items(config, 64)
    keys = [k for b in BucketBatchSampler(items, config).epoch_batches(1) for k in b]
    reg_draws = sum(items.all[k.index].is_reg for k in keys)
    assert reg_draws == 6 and len(keys) == 12
    chosen = [items.all[k.index] for k in keys[:4]]
    expected = [0.5 if it.is_reg else 1.0 for it in chosen]
    assert loss_weights(chosen, config.dataset.prior_loss_weight).tolist() == expected


def test_shuffle_caption_keeps_the_first_tokens(tmp_path: Path) -> None:
    config = _config(tmp_path, shuffle_caption=True, keep_tokens=1)
    caption = "sks, a, b, c, d, e, f"
    shuffled = {process_caption(caption, seed, config) for seed in range(20)}
    assert len(shuffled) > 1
    assert all(s.startswith("sks, ") for s in shuffled)
    assert all(sorted(s.split(", ")) == sorted(caption.split(", ")) for s in shuffled)
    dropped = _config(tmp_path, caption_dropout=1.0)
    assert process_caption(caption, 1, dropped) == ""


def _objective(prediction: str, gamma: float | None = None) -> Objective:
    import json

    schedule = json.loads(
        (CONFIG_ROOT / "sd15" / "scheduler" / "scheduler_config.json").read_text()
    )
    return Objective(schedule, prediction, torch.device("cpu"), min_snr_gamma=gamma)


def test_v_prediction_target_and_min_snr_weights() -> None:
    eps, v = _objective("epsilon", 5.0), _objective("v_prediction", 5.0)
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    assert torch.equal(eps.target(latents, noise, t), noise)
    a, s = v.sqrt_acp[t].view(-1, 1, 1, 1), v.sqrt_one_minus_acp[t].view(-1, 1, 1, 1)
    assert torch.allclose(v.target(latents, noise, t), a * noise - s * latents)
    snr = eps.snr[t]
    assert torch.allclose(eps.snr_weights(t), torch.clamp(snr, max=5.0) / snr)
    assert eps.snr_weights(t)[0] < 1.0 and eps.snr_weights(t)[1] == 1.0
    assert torch.allclose(v.snr_weights(t), torch.clamp(snr, max=5.0) / (snr + 1))


def test_validation_holds_out_a_split_or_uses_every_image(tmp_path: Path) -> None:
    data = make_concept(tmp_path / "d", count=4)
    held = build_items(
        config_from_dict({"dataset": {"path": str(data)}, "validation": {"split": 0.5}}), 64
    )
    assert len(held.train) == len(held.validation) == 2
    assert not {it.path for it in held.train} & {it.path for it in held.validation}
    every = build_items(config_from_dict({"dataset": {"path": str(data)}}), 64)
    assert [it.path for it in every.validation] == [it.path for it in every.train]
    assert len(every.train) == 4


def test_exif_rotated_photo_trains_upright(tmp_path: Path) -> None:
    """A phone photo stored 128×64 with EXIF "rotate 90°" is a 64×128 portrait: its bucket
    and its pixels both follow the upright image, as `lorakit dataset prep` would see it."""
    data = tmp_path / "img"
    data.mkdir()
    stored = Image.new("RGB", (128, 64), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 64, 64))  # the left half of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    stored.save(data / "phone.jpg", exif=exif, quality=95)
    (item,) = build_items(_config(data), 128).train
    assert (item.width, item.height) == (64, 128)
    assert item.bucket.height > item.bucket.width
    pixels = load_pixels(item, flip=False)
    assert pixels.shape[1:] == (item.bucket.height, item.bucket.width)
    # Rotated clockwise, the stored left half becomes the top half of the portrait.
    top, bottom = pixels[:, : pixels.shape[1] // 2], pixels[:, pixels.shape[1] // 2 :]
    assert top.mean() > 0.8 and bottom.mean() < -0.8
