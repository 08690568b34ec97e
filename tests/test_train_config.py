"""The typed config, its TOML round trip, `--set` overrides and the `lorakit train` CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.training.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from tests.test_train_support import make_concept


def test_defaults_follow_the_guides() -> None:
    config = TrainConfig()
    assert config.dataset.caption_ext == ".txt"
    assert (config.network.rank, config.network.alpha) == (32, 16.0)
    assert config.optimizer.unet_lr == 1e-4
    assert config.saving.save_every_n_epochs == 1


def test_unknown_key_names_the_closest_valid_one(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[optimizer]\nunet_lrr = 1e-4\n")
    with pytest.raises(LorakitError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "did you mean 'optimizer.unet_lr'?" in message
    path.write_text("[trainning]\nepochs = 3\n")
    with pytest.raises(LorakitError, match="did you mean 'training'"):
        load_config(path)


def test_bad_value_is_one_line() -> None:
    with pytest.raises(LorakitError, match=r"training\.epochs") as err:
        config_from_dict({"training": {"epochs": "many"}}, "x.toml")
    assert "\n" not in str(err.value)


def test_set_values_parse_as_toml_literals() -> None:
    data = apply_overrides(
        {},
        [
            "optimizer.name=Prodigy",
            "optimizer.text_encoder_lr=[1e-4, 5e-5]",
            "optimizer.args={d_coef = 2.0, decouple = true}",
            "training.epochs=4",
            "dataset.flip_aug=true",
        ],
    )
    config = config_from_dict(data)
    assert config.optimizer.name == "prodigy"
    assert config.text_encoder_lrs(2) == [1e-4, 5e-5]
    assert config.text_encoder_lrs(1) == [1e-4]
    assert config.optimizer.args == {"d_coef": 2.0, "decouple": True}
    assert config.training.epochs == 4 and config.dataset.flip_aug is True


def test_toml_round_trip(tmp_path: Path) -> None:
    config = config_from_dict(
        {
            "model": {"path": "m"},
            "training": {"min_snr_gamma": 5.0},
            "dataset": {"path": ["a", "b"]},
        }
    )
    save_config(config, tmp_path / "out.toml")
    assert load_config(tmp_path / "out.toml") == config


def test_three_text_encoder_rates_are_rejected() -> None:
    with pytest.raises(LorakitError, match="text_encoder_lr"):
        config_from_dict({"optimizer": {"text_encoder_lr": [1e-4, 1e-4, 1e-4]}})


def _write(tmp_path: Path, model: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(
        f'[model]\npath = "{model}"\n[dataset]\npath = "{data}"\n{extra}', encoding="utf-8"
    )
    return path


def _dry_run(tmp_path: Path, model: Path, *args: str, images: int = 4) -> int:
    """`lorakit train run.toml --dry-run ARGS` over a fresh concept folder; the exit code."""
    data = make_concept(tmp_path / "data", count=images)
    return main(["train", str(_write(tmp_path, model, data)), "--dry-run", *args])


def _configs_only(tiny_sd15_dir: Path, tmp_path: Path) -> Path:
    """The model folder's JSON configs without any weights: loading the model would fail."""
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_sd15_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return folder


def test_cli_dry_run_prints_the_plan_before_anything_loads(
    tiny_sd15_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _configs_only(tiny_sd15_dir, tmp_path)
    code = _dry_run(
        tmp_path, model, "--set", "dataset.repeats=10", "--set", "training.epochs=3",
        "--set", "training.batch_size=2", "--set", "saving.save_every_n_epochs=2",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "4 images × 10 repeats (from dataset.repeats) = 40 image views per epoch" in out
    assert "batches per epoch: 20 (batch 2, 1 bucket(s))" in out
    assert "20 steps × 3 epochs (training.epochs) = total steps: 60" in out
    assert "LoRA files after epochs: 2;" in out
    assert "samples after epochs: none" in out
    assert not (tmp_path / "output").exists()


def test_cli_preset_explains_its_choices(
    tiny_sd15_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _configs_only(tiny_sd15_dir, tmp_path)
    assert _dry_run(tmp_path, model, "--preset", "style") == 0
    out = capsys.readouterr().out
    assert "network.rank = " in out and "guide 003" in out
    assert "total steps: " in out


def test_cli_unknown_key_exits_2(
    tiny_sd15_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _dry_run(tmp_path, tiny_sd15_dir, "--set", "network.rnak=8", images=2) == 2
    err = capsys.readouterr().err
    assert "did you mean 'network.rank'" in err and "Traceback" not in err


def test_captions_come_from_txt_unless_caption_ext_says_otherwise(tmp_path: Path) -> None:
    from lorakit.training.data import build_items

    data = make_concept(tmp_path / "data", count=2, caption="from txt")
    for image in data.glob("*.png"):
        image.with_suffix(".caption").write_text("from caption", encoding="utf-8")
    base = {"model": {"path": "m"}, "dataset": {"path": str(data)}}
    default = build_items(config_from_dict(base), 64)
    assert {it.caption for it in default.train} == {"from txt"}
    other = build_items(load_config(None, ["dataset.caption_ext=caption"], base), 64)
    assert {it.caption for it in other.train} == {"from caption"}


def test_cli_caption_ext_reaches_the_config(tmp_path: Path) -> None:
    from lorakit.cli.main import build_parser
    from lorakit.cli.train import build_config

    path = _write(tmp_path, tmp_path / "model", tmp_path / "data")
    default, _ = build_config(build_parser().parse_args(["train", str(path)]))
    assert default.dataset.caption_ext == ".txt"
    args = build_parser().parse_args(["train", str(path), "--caption-ext", "caption"])
    config, _ = build_config(args)
    assert config.dataset.caption_ext == ".caption"
