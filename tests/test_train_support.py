"""Shared builders for the trainer tests: a tiny synthetic concept and a fast config.

The concept is a few 64 px images of a red disc on a blue ground at varying positions,
captioned "sks disc", which the tiny models learn within a few dozen steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from lorakit.training.config import TrainConfig, config_from_dict, merge


def make_concept(folder: Path, count: int = 4, size: int = 64, caption: str = "sks disc") -> Path:
    """`count` PNG images with same-stem `.txt` captions in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", (size, size), (30, 60, 200))
        draw = ImageDraw.Draw(image)
        x = 8 + (i * 9) % (size - 40)
        draw.ellipse((x, 12, x + 32, 44), fill=(220, 30, 30))
        image.save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(caption, encoding="utf-8")
    return folder


def fast_config(model: Path, data: Path, out: Path, **sections: dict[str, Any]) -> TrainConfig:
    """A config that trains the tiny models in a second or two on CPU."""
    base: dict[str, Any] = {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "resolution": 64, "bucket_min": 64, "bucket_max": 128},
        "network": {"rank": 4, "alpha": 4.0},
        "optimizer": {"name": "adamw", "unet_lr": 1e-3, "text_encoder_lr": 0.0},
        "scheduler": {"name": "constant"},
        "training": {
            "epochs": 2,
            "batch_size": 2,
            "mixed_precision": "no",
            "seed": 7,
            "log_every_n_steps": 2,
        },
        "saving": {"output_dir": str(out), "name": "tiny"},
        "validation": {"timesteps": 2},
    }
    return config_from_dict(merge(base, sections), "test config")


def concept_run(
    tmp_path: Path, model: Path, count: int = 2, **sections: dict[str, Any]
) -> tuple[TrainConfig, Path]:
    """`count` concept images in `tmp_path/data` and a fast config writing to `tmp_path/out`."""
    data = make_concept(tmp_path / "data", count=count)
    out = tmp_path / "out"
    return fast_config(model, data, out, **sections), out
