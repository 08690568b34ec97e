"""Presets by LoRA type: the numbers the guides tell people to work out by hand.

A preset turns "a likeness LoRA from 32 photos" into repeats, epochs, steps, rank, alpha and
learning rates, and says for each value which guide rule chose it, so `lorakit train
--dry-run` can show the plan before anything loads. The rules:

- total image views ≈ 100 per image, kept inside the step range of the LoRA type
  (guide 003: "100 steps per image" and its training scenarios);
- ~400 views per epoch, i.e. repeats = 400 / images (guide 000), which sets the epoch count,
  kept within 5–10 epochs (guide 001);
- repeats = steps / (images × epochs) for that epoch count (guide 001);
- rank from the type's range, the low end when the dataset is smaller than guide 003
  recommends (it overfits sooner: "decrease if overfitting occurs"), alpha = rank / 2
  (guide 001: "half or less of the Network Rank");
- learning rate 1e-4 (guide 003 "first attempt"), 5e-5 for a small likeness dataset
  (guide 003: likeness 0.00005–0.0001), 1.0 for self-adjusting optimizers (guide 003
  Prodigy, guide 001 DAdaptAdam);
- by family: the text-encoder LR is half the U-Net LR for SD1.5 (lorakit's default ratio)
  and a tenth for SDXL (guide 000's CivitAI SDXL settings), and the resolution is the
  family's native size (guide 003: "match your base model");
- FLUX.1 only (`FLUX_SETTINGS`): what sd-scripts' FLUX.1 guide (docs/flux_train_network.md)
  trains with: bf16, gradient checkpointing, cached text-encoder outputs, and its
  "recommended settings" `--timestep_sampling shift --discrete_flow_shift 3.1582`. Its
  example's `--learning_rate 1e-4` with AdamW8bit is guide 003's first-attempt rate, so the
  LR rule is shared. No preset sets an SD-only key (min-SNR, noise offset, clip skip), which
  a FLUX.1 run refuses.

Values the user set in the config (or an import) are kept; the reason line says so.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.dataset.plan import (
    DEFAULT_VIEWS_PER_EPOCH,
    repeats_for,
    repeats_for_steps,
    total_steps,
)
from lorakit.dataset.scan import DatasetScan
from lorakit.errors import LorakitError
from lorakit.families import FLUX1, NATIVE_SIDE
from lorakit.training.config import FluxSection, TrainConfig

STEPS_PER_IMAGE = 100
EPOCH_RANGE = (5, 10)
ADAPTIVE_OPTIMIZERS = {"prodigy", "dadaptadam"}


@dataclass(frozen=True)
class TypeRule:
    """What guide 003 says about one LoRA type."""

    min_images: int
    recommended_images: int
    steps: tuple[int, int]
    ranks: tuple[int, int]
    """(small dataset, recommended-size dataset)."""
    learning_rates: tuple[float, float]
    """(small dataset, recommended-size dataset)."""
    steps_source: str
    lr_source: str


_FIRST_LR = "guide 003: 0.0001 for a first attempt"
PRESETS: dict[str, TypeRule] = {
    "style": TypeRule(
        10, 20, (1500, 3000), (16, 32), (1e-4, 1e-4), "guide 003's style scenario", _FIRST_LR
    ),
    "character": TypeRule(
        15, 30, (2000, 4000), (32, 64), (1e-4, 1e-4), "guide 003's character scenario", _FIRST_LR
    ),
    "likeness": TypeRule(
        20,
        40,
        (3000, 5000),
        (32, 64),
        (5e-5, 1e-4),
        "guide 003's likeness scenario",
        "guide 003: 0.00005–0.0001 for a likeness, the low end below 40 images",
    ),
    "object": TypeRule(
        10,
        20,
        (1000, 5000),
        (32, 32),
        (1e-4, 1e-4),
        "guide 003's step table for 10–50 images",
        _FIRST_LR,
    ),
}

# Text-encoder LR as a fraction of the U-Net LR, per family.
TE_LR_RATIO = {
    "sd15": (0.5, "half the U-Net LR, lorakit's SD1.5 default ratio (1e-4 / 5e-5)"),
    "sdxl": (0.1, "a tenth of the U-Net LR, as guide 000's CivitAI SDXL settings (4e-4 / 4e-5)"),
    "tiny": (0.5, "half the U-Net LR, as for SD1.5 (the tiny model has its layout)"),
    "flux1": (0.0, "CLIP-L not trained: sd-scripts' FLUX.1 README trains the transformer only"),
}

# FLUX.1 settings and their source; the timestep sampling is chosen first, the shift only
# applies to "shift" sampling. `flux.guidance` is left alone: its default is already the
# README's 1.0, and a schnell model refuses it when set.
_SD_SCRIPTS_FLUX = "sd-scripts' FLUX.1 guide"  # kohya-ss/sd-scripts docs/flux_train_network.md
FLUX_SETTINGS: tuple[tuple[str, Any, str], ...] = (
    (
        "training.mixed_precision",
        "bf16",
        "FLUX.1 overflows in fp16 (a FLUX.1 run refuses it); sd-scripts' FLUX.1 README "
        "command trains with --mixed_precision bf16",
    ),
    ("training.gradient_checkpointing", True, f"{_SD_SCRIPTS_FLUX}: --gradient_checkpointing"),
    (
        "training.cache_text_encoder",
        "memory",
        f"{_SD_SCRIPTS_FLUX}: --cache_text_encoder_outputs (T5-XXL stays out of the steps)",
    ),
    (
        "flux.timestep_sampling",
        "shift",
        f"recommended settings of {_SD_SCRIPTS_FLUX}: --timestep_sampling shift",
    ),
)
FLUX_SHIFT = (
    "flux.flow_shift",
    3.1582,
    f"recommended settings of {_SD_SCRIPTS_FLUX}: --discrete_flow_shift 3.1582",
)


def _section(config: TrainConfig, name: str) -> Any:
    """A config section; `[flux]`, the only optional one, is its defaults when absent."""
    section = getattr(config, name)
    return FluxSection() if section is None and name == "flux" else section


class _Choices:
    """Collects preset values and reasons; the user's explicit settings win."""

    def __init__(self, config: TrainConfig, lora_type: str) -> None:
        self.config = config
        self.lora_type = lora_type
        self.updates: dict[str, dict[str, Any]] = {}
        self.reasons: list[str] = []

    def user_value(self, dotted: str) -> Any:
        section_name, key = dotted.split(".")
        section = _section(self.config, section_name)
        return getattr(section, key) if key in section.model_fields_set else None

    def choose(self, dotted: str, value: Any, why: str) -> Any:
        user = self.user_value(dotted)
        if user is not None:
            self.reasons.append(
                f"{dotted} = {_fmt(user)}: kept from your config "
                f"(the {self.lora_type} preset would pick {_fmt(value)}: {why})"
            )
            return user
        section_name, key = dotted.split(".")
        self.updates.setdefault(section_name, {})[key] = value
        self.reasons.append(f"{dotted} = {_fmt(value)}: {why}")
        return value

    def build(self) -> TrainConfig:
        sections = {
            name: _section(self.config, name).model_copy(update=values)
            for name, values in self.updates.items()
        }
        return self.config.model_copy(update=sections)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _rule(lora_type: str) -> TypeRule:
    if lora_type in PRESETS:
        return PRESETS[lora_type]
    names = ", ".join(sorted(PRESETS))
    close = difflib.get_close_matches(lora_type, PRESETS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise LorakitError(f"--preset {lora_type!r} is not a preset; {hint}choose one of {names}")


def _family(config: TrainConfig) -> tuple[str, str]:
    """The model family and where it came from; guessing SD1.5 is said out loud."""
    if config.model.family:
        return config.model.family, "from model.family"
    if config.model.path and Path(config.model.path).exists():
        from lorakit.models import detect_family  # loads diffusers: only when needed

        return detect_family(config.model.path).value, f"detected from {config.model.path}"
    return "sd15", "assumed: set model.family or model.path to be sure"


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def _length(choices: _Choices, rule: TypeRule, images: int, folder_repeats: int | None) -> None:
    """Steps target → epochs → repeats, each from its guide rule."""
    target = _clamp(STEPS_PER_IMAGE * images, rule.steps)
    choices.reasons.append(
        f"target ≈ {target} image views: {STEPS_PER_IMAGE} per image × {images} images, kept "
        f"within {rule.steps[0]}–{rule.steps[1]} ({rule.steps_source})"
    )
    user_repeats = choices.user_value("dataset.repeats") or folder_repeats
    if user_repeats:
        per_epoch = images * user_repeats
        pace = f"your {user_repeats} repeats give {per_epoch} views per epoch"
    else:
        per_epoch = images * repeats_for(images)
        pace = (
            f"~{DEFAULT_VIEWS_PER_EPOCH} views per epoch (guide 000: repeats = 400 / images "
            f"= {repeats_for(images)}) gives {per_epoch}"
        )
    epochs = choices.choose(
        "training.epochs",
        _clamp(round(target / per_epoch), EPOCH_RANGE),
        f"{pace}; {target} / {per_epoch} kept within {EPOCH_RANGE[0]}–{EPOCH_RANGE[1]} epochs "
        "(guide 001)",
    )
    if folder_repeats and not choices.user_value("dataset.repeats"):
        choices.reasons.append(f"repeats = {folder_repeats}: kept from the N_ folder names")
        repeats = folder_repeats
    else:
        repeats = choices.choose(
            "dataset.repeats",
            repeats_for_steps(target, images, epochs),
            f"steps / (images × epochs) = {target} / ({images} × {epochs}) (guide 001)",
        )
    batch = choices.config.training.batch_size
    steps = total_steps(images, repeats, epochs, batch)
    choices.reasons.append(
        f"steps = {images} × {repeats} × {epochs} / batch {batch} = {steps} "
        "batches (follows from repeats and epochs)"
    )


def _network(choices: _Choices, rule: TypeRule, images: int) -> None:
    small = images < rule.recommended_images
    low, high = rule.ranks
    if low == high:
        why = f"guide 003: start with rank {low}"
    else:
        size = "below" if small else "at or above"
        why = (
            f"{choices.lora_type} range {low}–{high} (guide 003), the "
            f"{'low' if small else 'high'} end: {images} images is {size} the recommended "
            f"{rule.recommended_images} and fewer images overfit sooner"
        )
    rank = choices.choose("network.rank", low if small else high, why)
    choices.choose("network.alpha", rank / 2, "half the rank (guide 001: half or less)")


def _learning_rates(choices: _Choices, rule: TypeRule, images: int, family: str) -> None:
    optimizer = choices.config.optimizer.name
    if optimizer in ADAPTIVE_OPTIMIZERS:
        why = f"{optimizer} sets its own step size; its LR is a multiplier of 1 (guides 001, 003)"
        choices.choose("optimizer.unet_lr", 1.0, why)
        # A family whose text encoder does not train (FLUX.1) keeps it frozen.
        frozen = not TE_LR_RATIO[family][0]
        te_why = TE_LR_RATIO[family][1] if frozen else why
        choices.choose("optimizer.text_encoder_lr", 0.0 if frozen else 1.0, te_why)
        return
    small = images < rule.recommended_images
    unet = choices.choose(
        "optimizer.unet_lr",
        rule.learning_rates[0] if small else rule.learning_rates[1],
        rule.lr_source,
    )
    ratio, why = TE_LR_RATIO[family]
    choices.choose("optimizer.text_encoder_lr", float(f"{unet * ratio:.3g}"), why)


def apply_preset(
    config: TrainConfig,
    lora_type: str,
    image_count: int,
    folder_repeats: int | None = None,
) -> tuple[TrainConfig, list[str]]:
    """Fill repeats, epochs, rank, alpha, LRs and resolution for a LoRA type and dataset size.

    `folder_repeats` is the N of kohya `N_name` folders when the dataset has them: like a
    value set in the config, it is kept and the epochs are fitted around it.
    Returns the new config and one reason line per derived value.
    """
    rule = _rule(lora_type)
    if image_count < 1:
        raise LorakitError("the dataset has no images; add images before choosing a preset")
    choices = _Choices(config, lora_type)
    family, family_source = _family(config)
    choices.reasons.append(f"family {family}: {family_source}")
    if image_count < rule.min_images:
        choices.reasons.append(
            f"warning: {image_count} images is below guide 003's minimum of "
            f"{rule.min_images} for a {lora_type} LoRA"
        )
    _length(choices, rule, image_count, folder_repeats)
    _network(choices, rule, image_count)
    _learning_rates(choices, rule, image_count, family)
    choices.choose(
        "dataset.resolution",
        NATIVE_SIDE[family],
        f"native size of {family} (guide 003: match your base model, 512 or 1024)",
    )
    if family == FLUX1.value:
        _flux_settings(choices)
    return choices.build(), choices.reasons


def _flux_settings(choices: _Choices) -> None:
    """FLUX_SETTINGS, and the flow shift when the sampling is "shift"."""
    sampling = None
    for dotted, value, why in FLUX_SETTINGS:
        chosen = choices.choose(dotted, value, why)
        sampling = chosen if dotted == "flux.timestep_sampling" else sampling
    if sampling == "shift":
        choices.choose(*FLUX_SHIFT)


def dataset_counts(scan: DatasetScan) -> tuple[int, int | None]:
    """Image count and the repeats its `N_name` folders carry (None for a flat folder).

    Folders with different repeats give their average, so that images × repeats still
    counts the image views of one epoch.
    """
    images = len(scan.records)
    if scan.layout != "kohya" or not images:
        return images, None
    return images, max(1, round(sum(r.repeats for r in scan.records) / images))
