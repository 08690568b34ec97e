"""kohya_ss / CivitAI imports read values the way sd-scripts does: alpha 0 is the rank,
LyCORIS network types are refused, `additional_parameters` and optimizer arguments are
parsed as sd-scripts parses them, a Windows output_dir, a warmup percentage and a random
seed are resolved instead of dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.training.config import TrainConfig, config_from_dict, load_config, save_config
from lorakit.training.import_civitai import import_civitai
from lorakit.training.import_kohya import import_kohya
from tests.test_train_support import make_concept


def _kohya(tmp_path: Path, name: str = "kohya.json", **settings) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"LoRA_type": "Standard", **settings}), encoding="utf-8")
    return path


def _imported(path: Path) -> tuple[TrainConfig, list[str]]:
    result = import_kohya(path)
    return config_from_dict(result.overrides), result.notes


def _dataset(root: Path, images: int = 42, repeats: int = 10) -> Path:
    folder = root / "img" / f"{repeats}_subject"
    folder.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (16, 20), (i * 5, 80, 120)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("subject, photo", encoding="utf-8")
    return root / "img"


def _dry_run(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["train", "--from-kohya", str(path), "--dry-run"]
    model = ["--set", 'model.path="/models/v1-5.safetensors"', "--set", 'model.family="sd15"']
    assert main([*argv, *model]) == 0
    return capsys.readouterr().out


# ----- item 9: alpha 0 is the rank -----


def test_network_alpha_zero_is_the_rank_as_in_sd_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _kohya(tmp_path, network_dim=96, network_alpha=0, train_data_dir=str(_dataset(tmp_path)))
    config, notes = _imported(path)
    assert (config.network.rank, config.network.alpha) == (96, 96.0)
    assert any("network_alpha 0: sd-scripts uses alpha = rank (96)" in n for n in notes)
    assert "network: rank 96, alpha 96.0" in _dry_run(path, capsys)
    civitai = tmp_path / "civitai.json"
    civitai.write_text(json.dumps({"networkDim": 64, "networkAlpha": 0}), encoding="utf-8")
    assert config_from_dict(import_civitai(civitai).overrides).network.alpha == 64.0


def test_conv_alpha_zero_is_the_conv_rank_and_missing_is_one(tmp_path: Path) -> None:
    locon = _kohya(tmp_path, LoRA_type="Kohya LoCon", network_dim=32, conv_dim=8, conv_alpha=0)
    config, _ = _imported(locon)
    assert (config.network.conv_rank, config.network.conv_alpha) == (8, 8.0)
    # --network_args without conv_alpha: sd-scripts' networks.lora uses 1
    args = _kohya(
        tmp_path, "args.json", network_dim=32, additional_parameters="--network_args conv_dim=4"
    )
    config, _ = _imported(args)
    assert (config.network.conv_rank, config.network.conv_alpha) == (4, 1.0)
    no_conv = _kohya(tmp_path, "none.json", LoRA_type="Kohya LoCon", network_dim=32, conv_dim=0)
    assert _imported(no_conv)[0].network.conv_rank is None


# ----- item 10: network types lorakit does not train are refused -----


@pytest.mark.parametrize(
    "lora_type",
    [
        "LyCORIS/iA3",
        "LyCORIS/DyLoRA",
        "LyCORIS/GLoRA",
        "LyCORIS/Diag-OFT",
        "LyCORIS/BOFT",
        "LyCORIS/Native Fine-Tuning",
        "Kohya DyLoRA",
        "LoRA-FA",
        "Flux1",
    ],
)
def test_lycoris_and_other_network_types_are_refused(tmp_path: Path, lora_type: str) -> None:
    path = _kohya(tmp_path, LoRA_type=lora_type, network_dim=100000, network_alpha=1)
    with pytest.raises(LorakitError) as excinfo:
        import_kohya(path)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{path}: LoRA_type {lora_type} ")
    assert "Standard (LoRA), Kohya LoCon, LyCORIS/LoCon" in message
    assert "LyCORIS/LoHa or LyCORIS/LoKr" in message


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("--network_module lycoris.kohya --network_args algo=ia3", "algo=ia3"),
        ("--network_module networks.dylora", "--network_module networks.dylora"),
    ],
)
def test_additional_parameters_that_change_the_network_type_are_refused(
    tmp_path: Path, options: str, named: str
) -> None:
    path = _kohya(tmp_path, network_dim=16, additional_parameters=options)
    with pytest.raises(LorakitError) as excinfo:
        import_kohya(path)
    assert named in str(excinfo.value)


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_network_args_algo_picks_the_lycoris_type(tmp_path: Path, algo: str) -> None:
    options = f"--network_module lycoris.kohya --network_args algo={algo} conv_dim=4"
    path = _kohya(tmp_path, network_dim=16, additional_parameters=options)
    config, _ = _imported(path)
    assert (config.network.type, config.network.rank, config.network.conv_rank) == (algo, 16, 4)


def test_lycoris_locon_trains_as_lorakits_locon(tmp_path: Path) -> None:
    path = _kohya(tmp_path, LoRA_type="LyCORIS/LoCon", network_dim=16, conv_dim=8, conv_alpha=4)
    config, notes = _imported(path)
    assert (config.network.conv_rank, config.network.conv_alpha) == (8, 4.0)
    assert any(n.startswith("LoRA_type LyCORIS/LoCon: trained as lorakit's LoCon") for n in notes)


def test_civitai_lycoris_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "civitai.json"
    path.write_text(json.dumps({"networkDim": 32, "loraType": "lycoris"}), encoding="utf-8")
    with pytest.raises(LorakitError, match="loraType lycoris is not supported"):
        import_civitai(path)


# ----- item 11: additional_parameters, optimizer arguments, paths, warmup, seed -----


def test_a_t5clrs_prodigy_config_keeps_the_arguments_in_additional_parameters(
    tmp_path: Path,
) -> None:
    options = (
        '--optimizer_args "decouple=True" "weight_decay=0.01" "d_coef=0.8" '
        '"use_bias_correction=True" "safeguard_warmup=True" "betas=0.9,0.99" '
        "--max_grad_norm=0 --noise_offset 0.03 --min_snr_gamma 5 --scale_weight_norms 1 "
        "--network_args conv_dim=4 conv_alpha=2 --log_with tensorboard --zero_terminal_snr"
    )
    path = _kohya(
        tmp_path,
        network_dim=32,
        network_alpha=16,
        optimizer="Prodigy",
        optimizer_args="decouple=False",  # replaced by the command line's list
        learning_rate=1,
        unet_lr=1,
        text_encoder_lr=1,
        additional_parameters=options,
    )
    config, notes = _imported(path)
    opt = config.optimizer
    assert opt.name == "prodigy"
    assert opt.args == {
        "decouple": True,
        "d_coef": 0.8,
        "use_bias_correction": True,
        "safeguard_warmup": True,
        "betas": [0.9, 0.99],
    }
    assert (opt.weight_decay, opt.max_grad_norm) == (0.01, 0.0)
    assert (config.training.noise_offset, config.training.min_snr_gamma) == (0.03, 5.0)
    assert (config.network.conv_rank, config.network.conv_alpha) == (4, 2.0)
    text = " | ".join(notes)
    assert "--optimizer_args, --max_grad_norm, --noise_offset, --min_snr_gamma" in text
    assert "--log_with: logging or speed options" in text
    assert "--zero_terminal_snr: not supported by lorakit" in text
    assert "scale_weight_norms = '1' is not supported" in text


def test_gui_optimizer_args_are_python_literals_as_sd_scripts_reads_them(tmp_path: Path) -> None:
    args = 'betas=(0.9,0.999) eps=1e-8 "decouple=True" foreach=false mode=fast d0=None'
    path = _kohya(tmp_path, network_dim=8, optimizer="AdamW", optimizer_args=args)
    config, notes = _imported(path)
    assert config.optimizer.args == {
        "betas": [0.9, 0.999],
        "eps": 1e-08,
        "decouple": True,
        "foreach": False,
        "mode": "fast",
    }
    assert any("d0=None: left to the optimizer's default" in n for n in notes)
    # the TOML config.toml keeps them as they are
    save_config(config, tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml").optimizer.args == config.optimizer.args


def test_each_optimizer_keeps_its_own_weight_decay(tmp_path: Path) -> None:
    """lorakit's 0.01 default would add decay to optimizers sd-scripts runs without."""
    for name, decay in (("Adafactor", 0.0), ("Prodigy", 0.0), ("AdamW", 0.01)):
        path = _kohya(tmp_path, f"{name}.json", network_dim=8, optimizer=name)
        assert _imported(path)[0].optimizer.weight_decay == decay


def test_additional_parameters_override_lrs_and_freeze_parts(tmp_path: Path) -> None:
    options = "--text_encoder_lr 1e-5 2e-5 --unet_lr=3e-4 --lr_warmup_steps 50"
    path = _kohya(tmp_path, network_dim=8, sdxl=True, additional_parameters=options)
    config, _ = _imported(path)
    assert (config.optimizer.unet_lr, config.optimizer.text_encoder_lr) == (3e-4, [1e-5, 2e-5])
    assert config.scheduler.warmup_steps == 50
    unet_only = _kohya(
        tmp_path, "u.json", network_dim=8, additional_parameters="--network_train_unet_only"
    )
    assert _imported(unet_only)[0].optimizer.text_encoder_lr == 0.0


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({"sdxl": True, "sdxl_cache_text_encoder_outputs": True}, "memory"),
        ({"sdxl": True, "sdxl_cache_text_encoder_outputs": False}, "none"),
        ({"additional_parameters": "--cache_text_encoder_outputs_to_disk"}, "disk"),
        (
            {
                "sdxl": True,
                "sdxl_cache_text_encoder_outputs": False,
                "additional_parameters": "--cache_text_encoder_outputs_to_disk",
            },
            "disk",  # sd-scripts: to_disk turns the cache on
        ),
        ({"flux1_cache_text_encoder_outputs_to_disk": True}, "disk"),
        ({"flux1_cache_text_encoder_outputs_to_disk": False}, "memory"),
    ],
)
def test_text_encoder_caching_to_disk_imports_as_the_disk_cache(
    tmp_path: Path, settings: dict[str, object], mode: str
) -> None:
    config, notes = _imported(_kohya(tmp_path, network_dim=8, **settings))
    assert config.training.cache_text_encoder == mode
    dropped = [n for n in notes if "cache_text_encoder" in n and ("unknown" in n or "not " in n)]
    assert not dropped, notes  # read, not named as ignored


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("d_coef=2", "must start with an --option"),
        ("--noise_offset 0.1 0.2", "--noise_offset takes one value"),
        ('--optimizer_args "d_coef=2', "cannot be split"),
        ("--optimizer_args d_coef", "item 'd_coef' is not name=value"),
    ],
)
def test_malformed_additional_parameters_are_one_line_errors(
    tmp_path: Path, options: str, message: str
) -> None:
    path = _kohya(tmp_path, network_dim=8, additional_parameters=options)
    with pytest.raises(LorakitError) as excinfo:
        import_kohya(path)
    text = str(excinfo.value)
    assert "\n" not in text and str(path) in text and message in text


def test_a_windows_output_dir_becomes_a_folder_next_to_the_file(tmp_path: Path) -> None:
    path = _kohya(tmp_path, network_dim=8, output_dir="d:\\lycoris\\sdxl")
    config, notes = _imported(path)
    assert config.saving.output_dir == str(tmp_path / "sdxl")
    assert any(
        f"output_dir d:\\lycoris\\sdxl is a Windows path: writing to {tmp_path / 'sdxl'}" in n
        for n in notes
    )


def test_warmup_percent_becomes_steps_of_the_planned_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kohya_ss: warmup steps = round(% × total steps / 100); 42 × 10 × 8 = 3360 steps."""
    img = _dataset(tmp_path)
    path = _kohya(
        tmp_path,
        network_dim=8,
        train_data_dir=str(img),
        optimizer="AdamW",
        lr_scheduler="cosine",
        lr_warmup=10,
        epoch=8,
        seed=7,
    )
    assert _imported(path)[0].scheduler.warmup_ratio == 0.1
    out = _dry_run(path, capsys)
    assert "total steps: 3360" in out
    assert "scheduler: cosine, warmup 336 steps" in out


def test_warmup_that_sd_scripts_refuses_is_dropped_and_said(tmp_path: Path) -> None:
    constant = _kohya(tmp_path, network_dim=8, lr_scheduler="constant", lr_warmup=10)
    config, notes = _imported(constant)
    assert (config.scheduler.warmup_steps, config.scheduler.warmup_ratio) == (0, 0.0)
    assert any(n.startswith("LR warmup not used: constant has no warmup") for n in notes)


def test_a_random_seed_is_drawn_printed_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _kohya(tmp_path, network_dim=8, seed="", train_data_dir=str(_dataset(tmp_path, 2)))
    out = _dry_run(path, capsys)
    drawn = re.search(r"seed blank is a random seed in kohya_ss: drew (\d+)", out)
    assert drawn is not None
    assert f"seed: {drawn.group(1)}" in out.splitlines()
    config, _ = _imported(path)
    save_config(config, tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml").training.seed == config.training.seed
    assert config.training.seed != 42


def test_command_line_sample_prompts_name_a_file_and_multires_noise_is_named(
    tmp_path: Path,
) -> None:
    options = "--sample_prompts prompts.txt --sample_every_n_epochs 2 --multires_noise_iterations 6"
    path = _kohya(tmp_path, network_dim=8, noise_offset=0.05, additional_parameters=options)
    result = import_kohya(path)
    config = config_from_dict(result.overrides)
    assert (config.sampling.prompts, config.sampling.every_n_epochs) == ("prompts.txt", 2)
    assert result.sample_prompts is None
    assert config.training.noise_offset == 0.0  # sd-scripts trains multires noise instead
    assert any(n.startswith("noise_offset_type Multires") for n in result.notes)


def test_cycles_follow_the_gui_blank_missing_and_command_line(tmp_path: Path) -> None:
    """A blank "LR # cycles" box loads as 1; a missing one is the epoch count."""
    common = {"network_dim": 8, "lr_scheduler": "cosine_with_restarts", "epoch": 6}
    blank = _kohya(tmp_path, "blank.json", lr_scheduler_num_cycles="", **common)
    missing = _kohya(tmp_path, "missing.json", **common)
    option = _kohya(
        tmp_path, "option.json", additional_parameters="--lr_scheduler_num_cycles 3", **common
    )
    cycles = [_imported(path)[0].scheduler.num_cycles for path in (blank, missing, option)]
    assert cycles == [1, 6, 3]


def test_an_imported_run_records_its_drawn_seed_and_warmup_steps(
    tmp_path: Path, tiny_sd15_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real training run from a kohya_ss config: config.toml holds the seed the import
    drew and the warmup steps of 10 % of the planned 8 steps, so the run can be repeated."""
    data = make_concept(tmp_path / "img" / "4_disc", count=2, caption="sks disc")
    path = _kohya(
        tmp_path,
        pretrained_model_name_or_path=str(tiny_sd15_dir),
        train_data_dir=str(data.parent),
        output_dir=str(tmp_path / "out"),
        output_name="disc",
        caption_extension=".txt",
        max_resolution="64,64",
        min_bucket_reso=64,
        max_bucket_reso=128,
        network_dim=4,
        network_alpha=0,
        optimizer="AdamW",
        lr_scheduler="linear",
        lr_warmup=10,
        epoch=1,
        mixed_precision="no",
        seed="",
    )
    assert main(["train", "--from-kohya", str(path)]) == 0
    out = capsys.readouterr().out
    drawn = int(re.search(r"drew (\d+)", out).group(1))
    recorded = load_config(tmp_path / "out" / "config.toml")
    assert recorded.training.seed == drawn
    assert (recorded.scheduler.warmup_steps, recorded.scheduler.warmup_ratio) == (1, 0.0)
    assert (recorded.network.rank, recorded.network.alpha) == (4, 4.0)
