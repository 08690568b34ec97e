"""Presets by LoRA type: the guides' numbers for a given image count and family."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.dataset.scan import scan_dataset
from lorakit.errors import LorakitError
from lorakit.training.config import TrainConfig, config_from_dict
from lorakit.training.presets import PRESETS, apply_preset, dataset_counts
from tests.helpers.flux import tiny_flux_pipeline, write_flux_files
from tests.test_train_support import make_concept


def _preset(lora_type: str, images: int, **sections: dict) -> tuple[TrainConfig, list[str]]:
    return apply_preset(config_from_dict(sections), lora_type, images)


def _views(config: TrainConfig, images: int) -> int:
    assert config.dataset.repeats is not None
    return images * config.dataset.repeats * config.training.epochs


# Expected values worked out by hand from the guides' rules:
#   target views = clamp(100 × images, type's step range)            (guide 003)
#   epochs = clamp(round(target / (images × round(400 / images))), 5, 10)  (guides 000, 001)
#   repeats = round(target / (images × epochs))                      (guide 001)
@pytest.mark.parametrize(
    ("lora_type", "images", "epochs", "repeats", "rank", "unet_lr"),
    [
        # 32 portraits: 400/32 → 12 repeats (guide 000); 3200 / 384 → 8 epochs; 3200/256 → 12.
        # Below the 40 images guide 003 recommends for a likeness: rank 32, LR 5e-5.
        ("likeness", 32, 8, 12, 32, 5e-5),
        # Guide 002's 42 images: 400/42 → 10 repeats; target 4200 capped at 4000 → 10 epochs.
        ("character", 42, 10, 10, 64, 1e-4),
        # 20 style images: target 2000; 400/20 = 20 repeats → 400 per epoch → 5 epochs.
        ("style", 20, 5, 20, 32, 1e-4),
        # 5 style images: target raised to 1500; 400 per epoch → 4 epochs, raised to 5;
        # 1500 / (5 × 5) = 60 repeats. Below the recommended 20: rank 16.
        ("style", 5, 5, 60, 16, 1e-4),
        # 200 object images: target capped at 5000; 400/200 = 2 → 12.5 epochs, capped at 10;
        # 5000 / 2000 = 2.5 → 2 repeats.
        ("object", 200, 10, 2, 32, 1e-4),
    ],
)
def test_presets_give_the_documented_numbers(
    lora_type: str, images: int, epochs: int, repeats: int, rank: int, unet_lr: float
) -> None:
    config, reasons = _preset(lora_type, images, model={"family": "sd15"})
    assert config.training.epochs == epochs
    assert config.dataset.repeats == repeats
    assert config.network.rank == rank
    assert config.network.alpha == rank / 2  # guide 001: half the rank
    assert config.optimizer.unet_lr == unet_lr
    assert config.optimizer.text_encoder_lr == pytest.approx(unet_lr / 2)  # SD1.5 ratio
    assert config.dataset.resolution == 512
    assert any(line.startswith(f"steps = {images} × {repeats} × {epochs}") for line in reasons)
    assert all("\n" not in line for line in reasons)


@pytest.mark.parametrize("lora_type", sorted(PRESETS))
@pytest.mark.parametrize("images", [3, 12, 25, 40, 75, 150])
def test_every_preset_stays_within_the_guides_ranges(lora_type: str, images: int) -> None:
    rule = PRESETS[lora_type]
    config, reasons = _preset(lora_type, images, model={"family": "sd15"})
    assert 5 <= config.training.epochs <= 10  # guide 001
    target = min(max(100 * images, rule.steps[0]), rule.steps[1])
    # repeats are whole numbers: the views land within half a repeat of the target
    assert abs(_views(config, images) - target) <= images * config.training.epochs / 2 + 1e-9
    assert config.network.rank in rule.ranks
    assert sum("guide" in line for line in reasons) >= 6
    assert config_from_dict(config.to_dict()) == config
    below_minimum = any(line.startswith("warning:") for line in reasons)
    assert below_minimum == (images < rule.min_images)


def test_sdxl_family_uses_its_native_size_and_a_tenth_for_the_text_encoder() -> None:
    config, _ = _preset("character", 42, model={"family": "sdxl"})
    assert config.dataset.resolution == 1024
    assert config.optimizer.text_encoder_lr == pytest.approx(config.optimizer.unet_lr / 10)


def test_family_is_detected_from_the_model_folder(tiny_sdxl_dir: Path) -> None:
    config, reasons = _preset("style", 20, model={"path": str(tiny_sdxl_dir)})
    assert config.dataset.resolution == 1024
    assert reasons[0].startswith("family sdxl: detected")


def test_values_set_by_the_user_are_kept_and_the_rest_follows_them() -> None:
    config, reasons = _preset(
        "likeness", 32, network={"rank": 96}, training={"epochs": 10}, model={"family": "sd15"}
    )
    assert config.network.rank == 96
    assert config.network.alpha == 48  # derived from the user's rank
    assert config.training.epochs == 10
    assert config.dataset.repeats == 10  # 3200 / (32 × 10), guide 001
    kept = [line for line in reasons if "kept from your config" in line]
    assert [line.split(" = ")[0] for line in kept] == ["training.epochs", "network.rank"]


def test_folder_repeats_are_kept_and_epochs_fitted_around_them() -> None:
    config, reasons = apply_preset(
        config_from_dict({"model": {"family": "sd15"}}), "character", 42, folder_repeats=5
    )
    assert config.dataset.repeats is None  # the N_ folders keep deciding
    # target 4000 / (42 × 5 = 210 per epoch) = 19 epochs, capped at 10 (guide 001)
    assert config.training.epochs == 10
    assert "repeats = 5: kept from the N_ folder names" in reasons


def test_adaptive_optimizers_get_a_learning_rate_of_one() -> None:
    config, _ = _preset("style", 30, optimizer={"name": "prodigy"}, model={"family": "sd15"})
    assert config.optimizer.unet_lr == config.optimizer.text_encoder_lr == 1.0


def test_unknown_preset_and_empty_dataset_are_one_line_errors() -> None:
    with pytest.raises(LorakitError, match="did you mean 'likeness'"):
        _preset("likness", 20)
    with pytest.raises(LorakitError, match="no images"):
        _preset("style", 0)


def test_dataset_counts_read_the_kohya_folders(tmp_path: Path) -> None:
    for folder, count in (("10_sks person", 3), ("20_sks closeup", 1)):
        (tmp_path / "img" / folder).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8)).save(tmp_path / "img" / folder / f"{i}.png")
    assert dataset_counts(scan_dataset(tmp_path / "img")) == (4, 12)  # (30 + 20) / 4 views
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(flat / f"{i}.png")
    assert dataset_counts(scan_dataset(flat)) == (3, None)


def test_flux1_gets_sd_scripts_settings_and_no_sd_only_key() -> None:
    config, reasons = _preset("character", 30, model={"family": "flux1"})
    # Guide 003's character rule, as for SD: 30 images is the recommended size.
    assert (config.network.rank, config.optimizer.unet_lr) == (64, 1e-4)
    assert config.optimizer.text_encoder_lr == 0.0  # the transformer only (sd-scripts)
    assert config.dataset.resolution == 1024
    t, flux = config.training, config.flux
    assert (t.mixed_precision, t.gradient_checkpointing, t.cache_text_encoder) == (
        "bf16",
        True,
        "memory",
    )
    assert flux is not None
    assert (flux.timestep_sampling, flux.flow_shift) == ("shift", 3.1582)
    assert "guidance" not in flux.model_fields_set  # a schnell model refuses it when set
    assert not {"min_snr_gamma", "noise_offset", "clip_skip", "prediction"} & t.model_fields_set
    assert any("--discrete_flow_shift 3.1582" in line for line in reasons)
    assert config_from_dict(config.to_dict()) == config


def test_flux1_keeps_the_users_sampling_and_a_frozen_clip_with_prodigy() -> None:
    config, reasons = _preset(
        "style",
        20,
        model={"family": "flux1"},
        flux={"timestep_sampling": "sigmoid"},
        optimizer={"name": "prodigy"},
    )
    assert config.flux is not None
    assert config.flux.timestep_sampling == "sigmoid"
    assert "flow_shift" not in config.flux.model_fields_set  # only "shift" uses it
    assert (config.optimizer.unet_lr, config.optimizer.text_encoder_lr) == (1.0, 0.0)
    assert any(line.startswith("flux.timestep_sampling = sigmoid: kept") for line in reasons)


def test_sd_presets_set_no_flux_section() -> None:
    config, _ = _preset("likeness", 32, model={"family": "sdxl"})
    assert config.flux is None and config.training.mixed_precision == "fp16"


def test_train_preset_dry_run_on_a_flux_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tiny_flux_pipeline("dev")
    pipe.save_pretrained(tmp_path / "folder")  # the configs of its (tiny) architecture
    files = write_flux_files(pipe, tmp_path / "files")
    data = make_concept(tmp_path / "data", count=3)
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[model]\npath = "{files["transformer"]}"\nclip_l = "{files["clip_l"]}"\n'
        f't5xxl = "{files["t5xxl"]}"\nae = "{files["ae"]}"\nconfig = "{tmp_path / "folder"}"\n'
        f'[dataset]\npath = "{data}"\n[saving]\noutput_dir = "{tmp_path / "out"}"\n',
        encoding="utf-8",
    )
    # Without the preset the default fp16 is refused for FLUX.1; the preset picks bf16.
    assert main(["train", str(toml), "--preset", "character", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "family flux1: detected" in out
    assert "training.mixed_precision = bf16" in out and "flux.flow_shift = 3.1582" in out
    assert "VRAM estimate (on a GPU), FLUX.1 dev" in out
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"
