"""`lorakit train` on the tiny FLUX.1, given as users have it (a BFL transformer file with
separate clip_l / t5xxl / ae files): the loss falls, the file has kohya's FLUX.1 names and
sd-scripts' flux1 metadata and loads in diffusers' FluxPipeline with the outputs lorakit
trained, a stopped and resumed run ends with the very same tensors, and bad input (a
missing T5 file, FLUX settings on an SD model) is one line each."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import FluxPipeline
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file

from lorakit.cli.main import main
from lorakit.inference.pick import FLUX_NOTE, MAX_BLEED
from lorakit.inference.run import load_summary
from lorakit.inference.signals import SIGNALS, measure_epochs
from lorakit.models.flux.flow import FlowConfig, encode_prompts, predict_velocity
from lorakit.network.files import load_lora_file
from lorakit.network.flux_train import FluxLoRANetwork
from lorakit.training.config import (
    FluxSection,
    TrainConfig,
    config_from_dict,
    merge,
    save_config,
)
from lorakit.training.loop import train
from tests.helpers.flux import load_written_files, tiny_flux_pipeline, write_flux_files
from tests.test_train_support import fast_config, make_concept

EPOCHS = 4


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny FLUX.1 dev as BFL + encoder files, its config folder, and a dataset."""
    root = tmp_path_factory.mktemp("flux")
    pipe = tiny_flux_pipeline("dev")
    pipe.save_pretrained(root / "folder")  # the configs of its (tiny) architecture
    files = write_flux_files(pipe, root / "files")
    return {**files, "folder": root / "folder", "data": make_concept(root / "data", count=3)}


def _config(files: dict[str, Path], out: Path, **sections: dict[str, Any]) -> TrainConfig:
    model = {key: str(files[key]) for key in ("clip_l", "t5xxl", "ae")}
    overrides = merge(
        {
            "model": {**model, "config": str(files["folder"])},
            "dataset": {"repeats": 2, "trigger": "sks"},
            "optimizer": {"unet_lr": 2e-2},
            "training": {"epochs": EPOCHS},
            "saving": {"save_precision": "fp32"},
        },
        sections,
    )
    return _fast(files["transformer"], files["data"], out, overrides)


def _fast(model: Path, data: Path, out: Path, overrides: dict[str, Any]) -> TrainConfig:
    """`fast_config` with `overrides` (its `model` argument takes the path only)."""
    base = fast_config(model, data, out).to_dict()
    return config_from_dict(merge(base, overrides), "test config")


def _toml(config: TrainConfig, path: Path) -> Path:
    save_config(config, path)
    return path


@pytest.fixture(scope="module")
def full(flux: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, through the command line."""
    out = tmp_path_factory.mktemp("full") / "out"
    assert main(["train", str(_toml(_config(flux, out), out.parent / "run.toml"))]) == 0
    return out


def test_loss_falls_and_the_file_is_a_kohya_flux1_lora(full: Path) -> None:
    summary = json.loads((full / "summary.json").read_text(encoding="utf-8"))
    assert summary["family"] == "flux1"
    epochs = summary["epochs"]
    train_losses = [e["train_loss"] for e in epochs]
    val_losses = [e["val_loss"] for e in epochs]
    # Measured: train 1.429 → 1.165 (0.82), validation (fixed σ and noise) 1.333 → 1.159.
    assert train_losses[-1] < 0.9 * train_losses[0], train_losses
    assert val_losses[-1] < 0.95 * val_losses[0], val_losses
    state, metadata = load_lora_file(full / "tiny.safetensors")
    for name in (
        "double_blocks_0_img_attn_qkv",
        "double_blocks_1_txt_mlp_0",
        "single_blocks_1_linear1",
    ):
        assert f"lora_unet_{name}.lora_down.weight" in state
    assert not any(key.startswith("lora_te") for key in state)  # text_encoder_lr 0
    assert metadata["ss_base_model_version"] == "flux1"
    assert metadata["modelspec.architecture"] == "flux-1-dev/lora"
    assert metadata["ss_network_module"] == "networks.lora_flux"
    sd_only = (
        "ss_clip_skip",
        "ss_noise_offset",
        "ss_v_parameterization",
        "modelspec.encoder_layer",
    )
    assert not set(sd_only) & set(metadata)
    flow = {k: metadata[k] for k in ("ss_model_prediction_type", "ss_timestep_sampling")}
    assert flow == {"ss_model_prediction_type": "raw", "ss_timestep_sampling": "shift"}
    assert (metadata["ss_discrete_flow_shift"], metadata["ss_guidance_scale"]) == ("3.0", "1.0")
    assert (metadata["ss_epoch"], metadata["ss_steps"]) == (str(EPOCHS), str(3 * EPOCHS))
    assert metadata["ss_sd_model_name"] == "transformer.safetensors"


def _velocity(transformer: torch.nn.Module, model, latents: torch.Tensor) -> torch.Tensor:
    sequence, pooled = encode_prompts(model, ["sks disc"])
    sigmas = torch.tensor([0.6])
    with torch.no_grad():
        return predict_velocity(transformer, latents, sigmas, sequence, pooled)


def test_the_trained_file_loads_in_diffusers_flux_pipeline(
    full: Path, flux: dict[str, Path], tmp_path: Path
) -> None:
    """`lora convert --to diffusers`, then FluxPipeline.load_lora_weights on the same base:
    every layer adapted and the transformer's output that of lorakit's own network."""
    converted = tmp_path / "diffusers.safetensors"
    args = ["lora", "convert", str(full / "tiny.safetensors"), str(converted), "--to", "diffusers"]
    assert main(args) == 0
    model = load_written_files(flux)
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    base = _velocity(model.transformer, model, latents)
    network = FluxLoRANetwork.from_state_dict(model, load_lora_file(full / "tiny.safetensors")[0])
    ours = _velocity(model.transformer, model, latents)
    pipe: FluxPipeline = tiny_flux_pipeline("dev")  # the same seed: the same base weights
    pipe.load_lora_weights(str(converted))
    adapted = sum(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules())
    assert adapted == sum(len(site.targets) for site in network.sites)
    theirs = _velocity(pipe.transformer, model, latents)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert (ours - base).abs().max() > 1e-2  # the trained LoRA changes the output


def test_a_stopped_and_resumed_run_ends_with_the_same_lora(
    full: Path, flux: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = _config(flux, out)
    train(config, stop_after_epoch=1)
    assert not (out / "tiny.safetensors").exists()
    result = train(config, resume=out / "state")
    assert (result.steps, result.epochs_done) == (3 * EPOCHS, EPOCHS)
    want, got = (
        load_lora_file(full / "tiny.safetensors")[0],
        load_lora_file(out / "tiny.safetensors")[0],
    )
    assert want.keys() == got.keys()
    assert all(torch.equal(want[key], got[key]) for key in want)


def test_continuing_from_a_file_and_training_clip_l(
    full: Path, flux: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`network.weights` starts from the trained file (a diffusers-layout copy of it here);
    a text-encoder rate adds CLIP-L's kohya modules (`lora_te1_`)."""
    converted = tmp_path / "diffusers.safetensors"
    args = ["lora", "convert", str(full / "tiny.safetensors"), str(converted), "--to", "diffusers"]
    assert main(args) == 0
    sections = {
        "network": {"weights": str(converted)},
        "optimizer": {"text_encoder_lr": 1e-3},
        "training": {"epochs": 1},
    }
    train(_config(flux, tmp_path / "out", **sections))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    first = json.loads((full / "summary.json").read_text(encoding="utf-8"))["epochs"]
    # Continued: below the fresh run's first epoch, about where it ended (1.159).
    assert summary["epochs"][0]["val_loss"] < first[1]["val_loss"]
    state, _ = load_lora_file(tmp_path / "out" / "tiny.safetensors")
    assert any(key.startswith("lora_te1_text_model_encoder_layers_0_") for key in state)
    sd_lora = tmp_path / "sd.safetensors"
    save_file({"lora_unet_down_blocks_0_x.alpha": torch.tensor(1.0)}, sd_lora)
    sections["network"]["weights"] = str(sd_lora)
    toml = _toml(_config(flux, tmp_path / "out2", **sections), tmp_path / "run.toml")
    assert "not a FLUX.1 LoRA" in _one_line_error(["train", str(toml)], capsys)


def test_schnell_trains_with_gradient_checkpointing_and_refuses_guidance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """schnell (no guidance input) from BFL + encoder files, with the transformer's
    gradient checkpointing on: the LoRA still learns (lora_up leaves zero) and the file
    names schnell; a dev-only `flux.guidance` is one line."""
    pipe = tiny_flux_pipeline("schnell")
    pipe.save_pretrained(tmp_path / "folder")
    flux = {
        **write_flux_files(pipe, tmp_path / "files"),
        "folder": tmp_path / "folder",
        "data": make_concept(tmp_path / "data", count=2),
    }
    sections = {"training": {"epochs": 1, "gradient_checkpointing": True}}
    train(_config(flux, tmp_path / "out", **sections))
    state, metadata = load_lora_file(tmp_path / "out" / "tiny.safetensors")
    assert metadata["modelspec.architecture"] == "flux-1-schnell/lora"
    ups = [value for key, value in state.items() if key.endswith("lora_up.weight")]
    assert all(up.abs().max() > 0 for up in ups)
    config = _config(flux, tmp_path / "out2", flux={"guidance": 3.5})
    err = _one_line_error(["train", str(_toml(config, tmp_path / "run.toml"))], capsys)
    assert "schnell" in err and "flux.guidance" in err


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_missing_t5_file_is_one_line_naming_the_key(
    flux: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(flux, tmp_path / "out")
    config.model.t5xxl = None
    err = _one_line_error(["train", str(_toml(config, tmp_path / "run.toml"))], capsys)
    assert str(flux["transformer"]) in err and "model.t5xxl" in err and "T5-XXL" in err
    config.model.t5xxl = str(tmp_path / "gone.safetensors")
    err = _one_line_error(["train", str(_toml(config, tmp_path / "run.toml"))], capsys)
    assert "model.t5xxl" in err and "gone.safetensors" in err and "no such file" in err


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"model": {"t5xxl": "t5xxl.safetensors"}}, "model.t5xxl"),
        ({"flux": {"guidance": 3.5}}, "[flux]"),
        ({"model": {"family": "flux1"}}, "model.family = 'flux1'"),
    ],
)
def test_an_sd_model_with_flux_settings_is_one_line(
    tiny_sd15_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sections: dict[str, Any],
    expected: str,
) -> None:
    data = make_concept(tmp_path / "data", count=1)
    config = _fast(tiny_sd15_dir, data, tmp_path / "out", sections)
    err = _one_line_error(["train", str(_toml(config, tmp_path / "run.toml"))], capsys)
    assert str(tiny_sd15_dir) in err and expected in err


def test_flux_dry_run_prints_the_plan_and_the_memory_table(
    flux: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _toml(_config(flux, tmp_path / "out"), tmp_path / "run.toml")
    capsys.readouterr()
    assert main(["train", str(toml), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "family: flux1 (from the file: FLUX.1 dev)" in out
    assert "plan: total steps" in out or "= total steps:" in out
    table = out[out.index("VRAM estimate (on a GPU), FLUX.1 dev") :].splitlines()
    rows = {line.split(":")[0].strip(): line for line in table[1:4]}
    assert list(rows) == ["bf16", "fp8", "fp8 + block swap 16"]
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


def test_flux_sd_only_settings_are_one_line(
    flux: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _toml(_config(flux, tmp_path / "out"), tmp_path / "run.toml")
    err = _one_line_error(["train", str(toml), "--set", "training.min_snr_gamma=5"], capsys)
    assert "training.min_snr_gamma" in err
    err = _one_line_error(["train", str(toml), "--set", "dataset.bucket_step=8"], capsys)
    assert "multiple of 16" in err
    err = _one_line_error(["train", str(toml), "--set", 'model.dtype="fp16"'], capsys)
    assert "overflows in fp16" in err and "bf16" in err


def test_pick_measures_the_signals_of_a_flux_run(full: Path) -> None:
    assert main(["pick", str(full), "--device", "cpu"]) == 0
    report = json.loads((full / "summary.json").read_text(encoding="utf-8"))["pick"]
    assert [s["epoch"] for s in report["signals"]] == list(range(1, EPOCHS + 1))
    for figures in report["signals"]:
        assert all(math.isfinite(figures[name]) for name in SIGNALS), figures
    assert report["decided_by"] in SIGNALS and report["max_bleed"] == MAX_BLEED
    assert report["advice"][0].startswith(f"best epoch {report['best_epoch']}: ")
    assert report["advice"][-1] == FLUX_NOTE


def test_flux_signals_of_a_lora_that_changes_nothing_are_zero(full: Path, tmp_path: Path) -> None:
    trained = full / "tiny.safetensors"
    state, metadata = load_lora_file(trained)
    nothing = {
        k: torch.zeros_like(v) if k.endswith(".lora_up.weight") else v for k, v in state.items()
    }
    save_file(nothing, tmp_path / "nothing.safetensors", metadata)
    files = [(0, tmp_path / "nothing.safetensors"), (EPOCHS, trained)]
    measured = measure_epochs(full, load_summary(full), files, "cpu").per_epoch
    # Zero lora_up: pictures and predictions are the base's, so no change either way.
    assert measured[0] == pytest.approx({"fidelity": 0.0, "bleed": 0.0}, abs=1e-6)
    assert all(math.isfinite(measured[EPOCHS][name]) for name in SIGNALS)
    assert abs(measured[EPOCHS]["fidelity"]) > 1e-3 and measured[EPOCHS]["bleed"] > 1e-3


def test_flux_section_defaults_are_flow_configs() -> None:
    flux, flow = FluxSection(), FlowConfig()
    assert (flux.timestep_sampling, flux.flow_shift, flux.sigmoid_scale, flux.guidance) == (
        flow.sampling,
        flow.flow_shift,
        flow.sigmoid_scale,
        flow.guidance,
    )
