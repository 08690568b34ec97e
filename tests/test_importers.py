"""kohya_ss GUI JSON and CivitAI JSON import into TrainConfig overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.dataset.plan import repeats_for, total_steps
from lorakit.dataset.scan import scan_dataset
from lorakit.errors import LorakitError
from lorakit.training.config import TrainConfig, config_from_dict
from lorakit.training.import_civitai import import_civitai
from lorakit.training.import_kohya import import_kohya
from lorakit.training.presets import apply_preset, dataset_counts
from tests.test_train_support import make_concept

KOHYA_FIXTURES = Path(__file__).parent / "fixtures" / "kohya_ss"

# Guide 000's CivitAI SDXL settings, as printed in the guide (remark included).
GUIDE_000_CIVITAI = """{ "unetLR": 0.0004,
 "clipSkip": 1,
 "loraType": "lora",
 "keepTokens": 0,
 "networkDim": 32,
 "numRepeats": 12,
 "resolution": 1024,
 "lrScheduler": "cosine",
 "minSnrGamma": 5,
 "targetSteps": 3072, --> This changes dynamically depending on other values
 "enableBucket": true,
 "networkAlpha": 16,
 "optimizerArgs": "weight_decay=0.1",
 "optimizerType": "AdamW8Bit",
 "textEncoderLR": 0.00004,
 "maxTrainEpochs": 16,
 "shuffleCaption": false,
 "trainBatchSize": 2,
 "flipAugmentation": false,
 "lrSchedulerNumCycles": 3 }
"""

GUIDE_002_SAMPLE = (
    "1girl, CharacterAI, braided hair, black hair, dark skin, photo, realistic, 8K, HDR "
    "--w 512--h 512--s 35  --n Anime, Cartoon, Fake, child, underage, teen, Drawing, "
    "Illustration, 3D render"
)


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def _config(overrides: dict) -> TrainConfig:
    return TrainConfig.model_validate(overrides)


def _one_line_error(excinfo: pytest.ExceptionInfo[LorakitError], path: Path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_locon_adafactor_fixture_maps_conv_rank_optimizer_args_and_samples() -> None:
    result = import_kohya(KOHYA_FIXTURES / "locon-Adafactor.json")
    config = _config(result.overrides)
    assert (config.network.conv_rank, config.network.conv_alpha) == (16, 8.0)
    assert config.optimizer.args == {
        "scale_parameter": False,
        "relative_step": False,
        "warmup_init": False,
    }
    assert config.training.seed == 1234  # saved as the string "1234"
    assert config.training.epochs == 8
    assert config.dataset.caption_ext == ".txt"  # kohya's blank field would read .caption
    assert result.sample_prompts == "a painting of a gas mask , by darius kawasaki"
    assert (config.sampling.every_n_steps, config.sampling.every_n_epochs) == (25, None)
    assert any(note.startswith("network arg rank_dropout") for note in result.notes)
    assert any("runwayml/stable-diffusion-v1-5 is a Hugging Face id" in n for n in result.notes)
    assert any("caption_extension" in note for note in result.notes)


def test_sdxl_fixture_trains_the_unet_only_and_keeps_its_step_cap() -> None:
    config = _config(import_kohya(KOHYA_FIXTURES / "SDXL-Standard-Adafactor.json").overrides)
    assert config.model.family == "sdxl"
    assert config.optimizer.unet_lr == 0.001
    assert config.optimizer.text_encoder_lr == 0.0  # kohya: text_encoder_lr 0 → U-Net only
    assert config.training.cache_text_encoder == "memory"
    assert config.training.max_train_steps == 1600
    assert config.training.cache_latents == "disk"
    assert config.training.min_snr_gamma == 10.0
    assert config.network.conv_rank is None  # "Standard" ignores its conv_dim 64


def test_partial_presets_import_and_say_what_was_not_carried_over(tmp_path: Path) -> None:
    odd_step = {"LoRA_type": "Standard", "network_dim": 8, "bucket_reso_steps": 1}
    result = import_kohya(_write_json(tmp_path / "step.json", odd_step))
    assert _config(result.overrides).dataset.bucket_step == 64
    assert any("bucket_reso_steps 1" in note for note in result.notes)
    edg = import_kohya(KOHYA_FIXTURES / "sd15 - EDG_LoraOptiSettings.json")
    config = _config(edg.overrides)
    assert config.optimizer.text_encoder_lr == 5e-5  # saved as "5e-05"
    assert config.dataset.resolution == 576  # "512,650" has the pixel area of 576²
    assert any("512,650" in note for note in edg.notes)
    toml_based = import_kohya(KOHYA_FIXTURES / "locon-AdamW8bit-toml.json")
    toml_config = _config(toml_based.overrides)
    assert toml_config.optimizer.unet_lr == toml_config.optimizer.text_encoder_lr == 0.0005
    assert any(note.startswith("dataset_config") for note in toml_based.notes)


def _guide_002_dataset(root: Path, images: int = 42) -> Path:
    """img/10_CharacterAI/ with 42 captioned images, as guide 002 lays it out."""
    folder = root / "img" / "10_CharacterAI"
    folder.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (16, 20), (i * 5, 80, 120)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("1girl, CharacterAI, braided hair, 3D render")
    return root / "img"


def _guide_002_kohya_json(img: Path, out: Path) -> dict:
    """Guide 002's settings written the way the kohya_ss GUI saves them."""
    return {
        "LoRA_type": "Standard",
        "pretrained_model_name_or_path": "/models/v1-5-pruned-emaonly.safetensors",
        "v2": False,
        "v_parameterization": False,
        "sdxl": False,
        "train_data_dir": str(img),
        "reg_data_dir": "",
        "output_dir": str(out),
        "output_name": "CharacterAI-1-A",
        "caption_extension": ".txt",
        "max_resolution": "768,768",
        "enable_bucket": True,
        "network_dim": 96,
        "network_alpha": 72,
        "conv_dim": 1,
        "conv_alpha": 1,
        "optimizer": "Adafactor",
        "optimizer_args": "",
        "lr_scheduler": "adafactor",
        "learning_rate": 0.0001,
        "unet_lr": 0.0001,
        "text_encoder_lr": 5e-05,
        "lr_warmup": 0,
        "train_batch_size": 1,
        "epoch": 8,
        "max_train_epochs": "",
        "max_train_steps": "",
        "save_every_n_epochs": 1,
        "mixed_precision": "fp16",
        "save_precision": "fp16",
        "seed": "",
        "cache_latents": False,
        "cache_latents_to_disk": False,
        "flip_aug": True,
        "color_aug": True,
        "shuffle_caption": False,
        "keep_tokens": "0",
        "clip_skip": 1,
        "sample_every_n_epochs": 1,
        "sample_every_n_steps": 0,
        "sample_prompts": GUIDE_002_SAMPLE,
        "xformers": "xformers",
    }


def test_guide_002_kohya_json_imports_and_repeats_come_from_the_folder(tmp_path: Path) -> None:
    img = _guide_002_dataset(tmp_path)
    path = _write_json(tmp_path / "CharacterAI.json", _guide_002_kohya_json(img, tmp_path / "o"))
    result = import_kohya(path)
    config = _config(result.overrides)
    assert (config.network.rank, config.network.alpha) == (96, 72.0)
    assert config.network.conv_rank is None
    assert (config.optimizer.name, config.scheduler.name) == ("adafactor", "adafactor")
    # sd-scripts' Adafactor default: its own step size, so "learning rates don't matter"
    assert config.optimizer.args == {
        "relative_step": True,
        "scale_parameter": True,
        "warmup_init": False,
    }
    assert config.dataset.resolution == 768
    assert (config.dataset.flip_aug, config.dataset.color_aug) == (True, True)
    assert config.dataset.shuffle_caption is False
    assert config.training.epochs == 8
    assert config.training.batch_size == 1
    assert config.training.cache_latents == "none"
    assert config.saving.name == "CharacterAI-1-A"
    assert result.sample_prompts == GUIDE_002_SAMPLE
    assert not any("Hugging Face" in note for note in result.notes)  # a local file name
    assert config.sampling.every_n_epochs == 1
    # kohya keeps repeats in the folder name: the import leaves dataset.repeats unset and
    # the scan of dataset.path reads 10 from "10_CharacterAI".
    assert config.dataset.repeats is None
    scan = scan_dataset(config.dataset_paths()[0], config.dataset.caption_ext)
    images, repeats = dataset_counts(scan)
    assert (images, repeats) == (42, 10)
    assert total_steps(images, repeats, config.training.epochs) == 10 * 42 * 8  # 3360
    # A preset over the imported config keeps the guide's choices.
    preset, _ = apply_preset(config, "character", images, folder_repeats=repeats)
    assert (preset.network.rank, preset.network.alpha, preset.training.epochs) == (96, 72.0, 8)
    assert preset.dataset.repeats is None


def test_guide_002_kohya_json_plans_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = _guide_002_dataset(tmp_path)
    out = tmp_path / "o"
    path = _write_json(tmp_path / "CharacterAI.json", _guide_002_kohya_json(img, out))
    assert main(["train", "--from-kohya", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "42 images × 10 repeats (from the N_name folder names)" in printed
    assert "420 steps × 8 epochs (training.epochs) = total steps: 3360" in printed
    assert "samples after epochs: 1, 2, 3, 4, 5, 6, 7, 8" in printed
    assert not out.exists(), "a dry run must not write anything"


def test_guide_000_civitai_json_imports_into_the_expected_config(tmp_path: Path) -> None:
    path = tmp_path / "civitai.json"
    path.write_text(GUIDE_000_CIVITAI, encoding="utf-8")
    result = import_civitai(path)
    config = _config(result.overrides)
    assert (config.optimizer.unet_lr, config.optimizer.text_encoder_lr) == (0.0004, 0.00004)
    assert config.optimizer.name == "adamw8bit"
    assert config.optimizer.weight_decay == 0.1
    assert config.optimizer.args == {}
    assert (config.network.rank, config.network.alpha) == (32, 16.0)
    assert config.dataset.repeats == 12
    assert config.dataset.resolution == 1024
    assert config.dataset.enable_buckets is True
    assert (config.dataset.flip_aug, config.dataset.shuffle_caption) == (False, False)
    assert config.dataset.keep_tokens == 0
    assert (config.scheduler.name, config.scheduler.num_cycles) == ("cosine", 3)
    assert config.training.min_snr_gamma == 5.0
    assert (config.training.epochs, config.training.batch_size) == (16, 2)
    assert config.training.clip_skip == 1
    assert any("targetSteps 3072" in note for note in result.notes)
    # The guide's numbers agree: 400 / 32 images = 12 repeats; 32 × 12 × 16 / batch 2 = 3072.
    assert repeats_for(32) == config.dataset.repeats
    assert total_steps(32, 12, 16, batch_size=2) == 3072


def test_guide_000_civitai_json_plans_its_target_steps_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "civitai.json"
    path.write_text(GUIDE_000_CIVITAI, encoding="utf-8")
    data = make_concept(tmp_path / "data", count=32)
    sets = [
        'model.path="/models/sdxl.safetensors"',
        'model.family="sdxl"',
        f'dataset.path="{data}"',
        f'saving.output_dir="{tmp_path / "out"}"',
    ]
    argv = ["train", "--from-civitai", str(path), "--dry-run"]
    assert main([*argv, *(arg for item in sets for arg in ("--set", item))]) == 0
    printed = capsys.readouterr().out
    # Guide 000: 32 images × 12 repeats × 16 epochs / batch 2 = CivitAI's targetSteps 3072.
    assert "32 images × 12 repeats (from dataset.repeats)" in printed
    assert "192 steps × 16 epochs (training.epochs) = total steps: 3072" in printed
    assert "targetSteps 3072" in printed


def test_kohya_learning_rate_fallbacks(tmp_path: Path) -> None:
    both_blank = {"network_dim": 8, "learning_rate": 3e-4, "unet_lr": "", "text_encoder_lr": 0}
    config = _config(import_kohya(_write_json(tmp_path / "a.json", both_blank)).overrides)
    assert config.optimizer.unet_lr == config.optimizer.text_encoder_lr == 3e-4
    te_only = {"network_dim": 8, "learning_rate": 3e-4, "unet_lr": 0, "text_encoder_lr": 5e-5}
    config = _config(import_kohya(_write_json(tmp_path / "b.json", te_only)).overrides)
    assert (config.optimizer.unet_lr, config.optimizer.text_encoder_lr) == (0.0, 5e-5)


def test_dadaptadam_arguments_of_guide_001(tmp_path: Path) -> None:
    data = {
        "network_dim": 128,
        "network_alpha": 64,
        "optimizer": "DAdaptAdam",
        "optimizer_args": '"decouple=True" "weight_decay=0.01" "betas=0.9,0.999"',
        "lr_scheduler": "cosine_with_restarts",
        "lr_scheduler_num_cycles": "3",
    }
    config = _config(import_kohya(_write_json(tmp_path / "d.json", data)).overrides)
    assert config.optimizer.name == "dadaptadam"
    assert config.optimizer.args == {"decouple": True, "betas": [0.9, 0.999]}
    assert config.optimizer.weight_decay == 0.01
    assert (config.scheduler.name, config.scheduler.num_cycles) == ("cosine_with_restarts", 3)


def test_warmup_percent_and_unsupported_choices_are_explained(tmp_path: Path) -> None:
    with_steps = {"network_dim": 8, "lr_warmup": 10, "max_train_steps": 1000}
    result = import_kohya(_write_json(tmp_path / "w.json", with_steps))
    assert _config(result.overrides).scheduler.warmup_steps == 100
    odd = {
        "network_dim": 8,
        "lr_warmup": 5,
        "optimizer": "PagedAdamW8bit",
        "lr_scheduler": "piecewise_constant",
        "v2": True,
        "my_own_key": 1,
    }
    result = import_kohya(_write_json(tmp_path / "o.json", odd))
    config = _config(result.overrides)
    assert config.optimizer.name == "adamw8bit"
    assert config.scheduler.name == TrainConfig().scheduler.name
    assert config.scheduler.warmup_ratio == 0.05  # 5 % of the steps the plan counts
    notes = " | ".join(result.notes)
    for expected in ("PagedAdamW8bit", "piecewise_constant", "SD 2.x", "my_own_key"):
        assert expected in notes


def test_an_optimizer_lorakit_lacks_is_refused(tmp_path: Path) -> None:
    """Training SGDNesterov's config with another optimizer at its LR would diverge."""
    path = _write_json(tmp_path / "sgd.json", {"network_dim": 8, "optimizer": "SGDNesterov"})
    with pytest.raises(LorakitError) as excinfo:
        import_kohya(path)
    assert "optimizer SGDNesterov is not supported" in _one_line_error(excinfo, path)


def test_malformed_json_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"network_dim": 32, "optimizer": }', encoding="utf-8")
    with pytest.raises(LorakitError) as excinfo:
        import_kohya(path)
    assert "line 1" in _one_line_error(excinfo, path)
    with pytest.raises(LorakitError) as excinfo:
        import_civitai(path)
    _one_line_error(excinfo, path)


@pytest.mark.parametrize(
    ("content", "importer", "expected"),
    [
        (GUIDE_000_CIVITAI, import_kohya, "--from-civitai"),
        ('{"network_dim": 8, "LoRA_type": "Standard"}', import_civitai, "--from-kohya"),
        ("[1, 2, 3]", import_kohya, "JSON object"),
        ('{"network_dim": "wide"}', import_kohya, "'network_dim' must be a number"),
        ('{"network_dim": 8, "network_dropout": 1.5}', import_kohya, "network.dropout"),
        ('{"networkDim": 8, "resolution": "big"}', import_civitai, "'resolution'"),
    ],
)
def test_wrong_files_and_values_are_one_line_errors(
    tmp_path: Path, content: str, importer, expected: str
) -> None:
    path = tmp_path / "settings.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LorakitError) as excinfo:
        importer(path)
    assert expected in _one_line_error(excinfo, path)


def test_missing_file_and_folder_are_one_line_errors(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.json", tmp_path):
        with pytest.raises(LorakitError) as excinfo:
            import_kohya(path)
        _one_line_error(excinfo, path)


def test_overrides_merge_under_a_toml_config(tmp_path: Path) -> None:
    """The CLI merges imported overrides under the TOML and --set values."""
    from lorakit.training.config import load_config

    path = tmp_path / "civitai.json"
    path.write_text(GUIDE_000_CIVITAI, encoding="utf-8")
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\npath = "/models/sdxl.safetensors"\n[network]\nrank = 64\n')
    config = load_config(toml, ["training.epochs=4"], base=import_civitai(path).overrides)
    assert config.network.rank == 64  # the TOML wins over the import
    assert config.network.alpha == 16.0  # the import fills what the TOML leaves out
    assert config.training.epochs == 4  # --set wins over both
    assert config_from_dict(config.to_dict()) == config
