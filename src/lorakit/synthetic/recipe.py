"""The LoRA settings `make demo` and `bench/quality.py` use on the tiny model.

One place, so the benchmark judges exactly what the demo ships, on subjects the settings
were not tuned on. They are a real lorakit config (every key is a TrainConfig key); only
the sizes differ from a photo LoRA: 64 px, a small rank, and the higher learning rate
that a 6-million-parameter UNet takes.

Caption dropout (10 %) trains the LoRA's empty-prompt branch too, which classifier-free
guidance subtracts: on the held-out house it kept bleed at 0–4 % over all eight epochs
(up to 21 % without) and raised the bare-trigger fidelity from 0.62 to 0.75; a text encoder
LR of 1e-3 (was 5e-4) ties the trigger word faster. Measured by `bench/quality.py`, figures
in docs/tiny-model.md.

Regularization images (`reg`: scenes of the base model's own world, prior preservation as
the guides use class images) keep the subject out of prompts without the trigger: on the
held-out flower (`bench/quality.py --reg 48`), bleed over the eight epochs fell from
0.12–0.46 to 0.00–0.08 (seeds 0–2), at twice the steps per epoch. They are not the
default: `lorakit pick`'s bleed signal reads a LoRA trained on them as bleeding (see
docs/tiny-model.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorakit.models.components import TINY_BASE_DIR

SIDE = 64
EPOCHS = 8
REPEATS = 10


def concept_settings(
    run: Path,
    out: Path,
    name: str,
    trigger: str,
    *,
    epochs: int = EPOCHS,
    reg: Path | None = None,
) -> dict[str, Any]:
    """A training config (as nested dicts) for the concept folder `run`, output in `out`,
    with the regularization images in `reg` when given."""
    settings: dict[str, Any] = {
        "model": {"path": str(TINY_BASE_DIR)},
        "dataset": {
            "path": str(run),
            "resolution": SIDE,
            "bucket_min": SIDE,
            "bucket_max": 2 * SIDE,
            "repeats": REPEATS,
            "trigger": trigger,
            "caption_dropout": 0.1,
        },
        "network": {"rank": 8, "alpha": 8.0, "conv_rank": 8, "conv_alpha": 8.0},
        "optimizer": {"name": "adamw", "unet_lr": 2e-3, "text_encoder_lr": 1e-3},
        "scheduler": {"name": "cosine", "warmup_steps": 10},
        "training": {
            "epochs": epochs,
            "batch_size": 4,
            "mixed_precision": "no",
            "min_snr_gamma": 5.0,
        },
        "saving": {"output_dir": str(out), "name": name},
        "validation": {"enabled": True, "split": 0.2, "timesteps": 4},
    }
    if reg is not None:
        settings["dataset"]["reg_path"] = str(reg)
    return settings
