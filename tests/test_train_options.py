"""Training options that change the data path: disk cache, flip/colour aug, bf16, accumulation."""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.network.files import load_lora_file
from lorakit.training.loop import train
from tests.test_train_support import fast_config, make_concept


def test_disk_cache_with_flips_in_bf16(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    data = make_concept(tmp_path / "data", count=3)
    out = tmp_path / "out"
    config = fast_config(
        tiny_sd15_dir,
        data,
        out,
        dataset={"repeats": 2, "flip_aug": True},
        training={"epochs": 1, "cache_latents": "disk", "mixed_precision": "bf16"},
    )
    train(config)
    # Both orientations of every image are cached once.
    assert len(list((out / "cache" / "latents").glob("*.safetensors"))) == 6
    _, meta = load_lora_file(out / "tiny.safetensors")
    assert meta["ss_mixed_precision"] == "bf16" and meta["ss_flip_aug"] == "True"


def test_colour_aug_and_gradient_accumulation(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    data = make_concept(tmp_path / "data", count=2)
    out = tmp_path / "out"
    config = fast_config(
        tiny_sd15_dir,
        data,
        out,
        dataset={"repeats": 2, "color_aug": True, "shuffle_caption": True},
        training={"epochs": 2, "batch_size": 1, "grad_accum": 2},
    )
    train(config)
    summary = json.loads((out / "summary.json").read_text())
    # 2 images × 2 repeats = 4 batches per epoch = 2 optimizer steps with grad_accum 2.
    assert [e["step"] for e in summary["epochs"]] == [2, 4]
    assert not (out / "cache").exists()
