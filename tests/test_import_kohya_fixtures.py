"""Every kohya_ss GUI config in tests/fixtures/kohya_ss imports with the values sd-scripts
would train with (LoRA, LoCon, LoHa, LoKr), or is refused when lorakit cannot train its
network type.

The expectations are worked out by hand from the GUI's rules (kohya_ss v24: defaults for
missing keys, blank and zero fields, the learning-rate rule, seed 0 = random) and from
sd-scripts' (alpha 0 = rank, Adafactor's relative_step=True default, each optimizer's own
weight decay), not read back from the importer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.training.config import config_from_dict
from lorakit.training.import_kohya import import_kohya
from lorakit.training.optim import optimizer_notes

FIXTURES = Path(__file__).parent / "fixtures" / "kohya_ss"
ADAFACTOR_RELATIVE = {"scale_parameter": True, "relative_step": True, "warmup_init": False}
HF_ID = "pretrained_model_name_or_path runwayml/stable-diffusion-v1-5 is a Hugging Face id"
NO_UPSCALE = "bucket_no_upscale: lorakit scales every image to its bucket"
EMPTY_CAPTION_EXT = "caption_extension is empty (kohya then reads .caption files)"


@dataclass(frozen=True)
class Expected:
    rank: int
    alpha: float
    conv: tuple[int, float] | None
    lrs: tuple[float, float]  # U-Net, text encoder
    optimizer: str
    weight_decay: float
    args: dict
    scheduler: str
    warmup_steps: int
    seed: int | None  # None: kohya's random seed, drawn by the import
    resolution: int
    epochs: int
    notes: list[str]  # each import note starts with one of these, in this order
    optimizer_notes: list[str] = field(default_factory=list)
    kind: str = "lora"  # network.type


EXPECTED = {
    "SDXL - LoRA adafactor v1.0.json": Expected(
        rank=128,
        alpha=128.0,
        conv=None,
        lrs=(1.0, 1.0),
        optimizer="adafactor",
        weight_decay=0.0,
        args=ADAFACTOR_RELATIVE,
        scheduler="adafactor",
        warmup_steps=0,
        seed=None,
        resolution=1024,
        epochs=30,
        notes=[
            "additional_parameters --log_prefix: logging or speed options",
            "Adafactor without relative_step: sd-scripts' relative_step=True kept",
            "seed blank is a random seed in kohya_ss: drew ",
            "adaptive_noise_scale = 0.00357 is not supported",
            "scale_weight_norms = 1 is not supported",
        ],
        optimizer_notes=["Adafactor with relative_step=True ignores optimizer.unet_lr"],
    ),
    "SDXL-Standard-Adafactor.json": Expected(
        rank=64,
        alpha=64.0,
        conv=None,  # conv_dim 64 is not passed for a Standard LoRA
        lrs=(0.001, 0.0),
        optimizer="adamw8bit",
        weight_decay=0.01,
        args={},
        scheduler="constant",
        warmup_steps=0,
        seed=None,
        resolution=1024,
        epochs=4,
        notes=[
            "pretrained_model_name_or_path stabilityai/stable-diffusion-xl-base-1.0 is a "
            "Hugging Face id",
            "caption_extension: captions from folder names are not supported",
            "text_encoder_lr 0: only the U-Net trains",
            "seed 0 is a random seed in kohya_ss: drew ",
        ],
    ),
    "locon-Adafactor.json": Expected(
        rank=16,
        alpha=8.0,
        conv=(16, 8.0),
        lrs=(0.0001, 0.0001),
        optimizer="adafactor",
        weight_decay=0.0,
        args={"scale_parameter": False, "relative_step": False, "warmup_init": False},
        scheduler="constant",
        warmup_steps=0,
        seed=1234,
        resolution=512,
        epochs=8,
        notes=[
            "network arg module_dropout=0.1 is not supported",
            "network arg rank_dropout=0.1 is not supported",
            HF_ID,
            NO_UPSCALE,
            EMPTY_CAPTION_EXT,
            "adaptive_noise_scale = 0.005 is not supported",
            "noise_offset_random_strength = True is not supported",
            "ip_noise_gamma = 0.1 is not supported",
            "ip_noise_gamma_random_strength = True is not supported",
            "scale_weight_norms = 1 is not supported",
        ],
    ),
    "locon-AdamW8bit-toml.json": Expected(
        rank=8,
        alpha=1.0,
        conv=None,  # LoRA_type Standard despite the file name
        lrs=(0.0005, 0.0005),  # unet_lr and text_encoder_lr 0: both at learning_rate
        optimizer="adamw8bit",
        weight_decay=0.01,
        args={},
        scheduler="constant",
        warmup_steps=0,
        seed=1234,
        resolution=512,
        epochs=1,
        notes=[HF_ID, NO_UPSCALE, EMPTY_CAPTION_EXT, "dataset_config = './test/config/"],
    ),
    "locon-AdamW8bit.json": Expected(
        rank=16,
        alpha=8.0,
        conv=(16, 8.0),
        lrs=(0.0001, 0.0001),
        optimizer="adamw8bit",
        weight_decay=0.01,
        args={},
        scheduler="constant",
        warmup_steps=0,
        seed=1234,
        resolution=512,
        epochs=8,
        notes=[
            "network arg module_dropout=0.1 is not supported",
            "network arg rank_dropout=0.1 is not supported",
            HF_ID,
            NO_UPSCALE,
            EMPTY_CAPTION_EXT,
            "adaptive_noise_scale = 0.005 is not supported",
            "noise_offset_random_strength = True is not supported",
            "debiased_estimation_loss = True is not supported",
            "ip_noise_gamma = 0.1 is not supported",
            "ip_noise_gamma_random_strength = True is not supported",
            "scale_weight_norms = 1 is not supported",
        ],
    ),
    "sd15 - EDG_LoraOptiSettings.json": Expected(
        rank=64,
        alpha=64.0,
        conv=None,
        lrs=(0.0001, 5e-05),  # saved as the strings "0.0001" and "5e-05"
        optimizer="adamw8bit",
        weight_decay=0.01,
        args={},
        scheduler="constant",
        warmup_steps=0,
        seed=1234,
        resolution=576,  # "512,650": the largest 64-step square within its pixel area
        epochs=1,
        notes=["max_resolution 512,650 is not square: lorakit trains at 576"],
    ),
}
EXPECTED["loha-sd15.json"] = Expected(
    kind="loha",
    rank=32,
    alpha=16.0,
    conv=(8, 4.0),  # LyCORIS' conv_dim / conv_alpha: LoHa on the 3×3 convolutions too
    lrs=(0.0001, 0.0001),
    optimizer="adamw",
    weight_decay=0.01,  # sd-scripts' AdamW (torch's default)
    args={},
    scheduler="cosine",
    warmup_steps=0,
    seed=None,
    resolution=512,
    epochs=2,
    notes=[
        "LoRA_type LyCORIS/LoHa: trained as lorakit's LoHa",
        "bucket_reso_steps 1 is not a multiple of 8",
        NO_UPSCALE,
        "caption_extension: captions from folder names are not supported",
        "seed blank is a random seed in kohya_ss: drew ",
        "noise_offset_type Multires (multi-resolution noise) is not supported",
        "scale_weight_norms = 1 is not supported",
    ],
)


def _assert_notes(notes: list[str], starts: list[str]) -> None:
    assert len(notes) == len(starts), notes
    for note, start in zip(notes, starts, strict=True):
        assert note.startswith(start), (note, start)


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in FIXTURES.glob("*.json"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_imports_with_the_values_sd_scripts_would_use(name: str) -> None:
    want = EXPECTED[name]
    result = import_kohya(FIXTURES / name)
    config = config_from_dict(result.overrides)
    net, opt, sched = config.network, config.optimizer, config.scheduler
    assert (net.type, net.rank, net.alpha) == (want.kind, want.rank, want.alpha)
    conv = (net.conv_rank, net.conv_alpha) if net.conv_rank else None
    assert conv == want.conv
    assert (opt.unet_lr, opt.text_encoder_lr) == want.lrs
    assert (opt.name, opt.weight_decay, opt.args) == (want.optimizer, want.weight_decay, want.args)
    assert (sched.name, sched.warmup_steps, sched.warmup_ratio) == (
        want.scheduler,
        want.warmup_steps,
        0.0,
    )
    assert config.dataset.resolution == want.resolution
    assert config.training.epochs == want.epochs
    _assert_notes(result.notes, want.notes)
    _assert_notes(optimizer_notes(config), want.optimizer_notes)
    if want.seed is not None:
        assert config.training.seed == want.seed
    else:
        drawn = re.search(r"drew (\d+)", " ".join(result.notes))
        assert drawn is not None and int(drawn.group(1)) == config.training.seed
        assert 0 <= config.training.seed < 2**31


def test_a_random_seed_is_drawn_anew_for_each_import() -> None:
    path = FIXTURES / "SDXL-Standard-Adafactor.json"
    seeds = {import_kohya(path).overrides["training"]["seed"] for _ in range(3)}
    assert len(seeds) == 3


def _variant(tmp_path: Path, **changes: object) -> Path:
    """The LoHa fixture as the GUI would save it with `changes` made."""
    data = json.loads((FIXTURES / "loha-sd15.json").read_text(encoding="utf-8"))
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps(data | changes), encoding="utf-8")
    return path


def test_a_full_matrix_lokr_config_imports_as_lokr_with_its_factor(tmp_path: Path) -> None:
    # kohya_ss' LoKr preset: network_dim 100000 asks LyCORIS for full Kronecker factors.
    path = _variant(tmp_path, LoRA_type="LyCORIS/LoKr", network_dim=100000, factor=8)
    net = config_from_dict(import_kohya(path).overrides).network
    assert (net.type, net.rank, net.factor, net.conv_rank) == ("lokr", 100000, 8, 8)


@pytest.mark.parametrize("lora_type", ["LyCORIS/LoCon", "LoCon"])
def test_dora_wd_on_a_locon_trains_dora(lora_type: str, tmp_path: Path) -> None:
    path = _variant(tmp_path, LoRA_type=lora_type, dora_wd=True)
    net = config_from_dict(import_kohya(path).overrides).network
    assert (net.type, net.conv_rank, net.conv_alpha) == ("dora", 8, 4.0)


def test_dora_wd_on_loha_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, dora_wd=True)
    with pytest.raises(LorakitError, match="dora_wd with LyCORIS algo loha"):
        import_kohya(path)


def test_an_unsupported_lokr_option_is_a_note(tmp_path: Path) -> None:
    path = _variant(tmp_path, LoRA_type="LyCORIS/LoKr", decompose_both=True)
    notes = import_kohya(path).notes
    assert any(n.startswith("network arg decompose_both=True is not supported") for n in notes)
