"""The GPU memory estimate: its weight terms come from the real architectures (meta device,
no weights), each setting moves it the way it moves a run, and `--dry-run` prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.models import ModelFamily, empty_base_model
from lorakit.training.config import TrainConfig, config_from_dict
from lorakit.training.vram import (
    GIB,
    estimate,
    flux_counts,
    flux_estimate,
    flux_table,
    swapped_blocks,
)
from tests.test_train_support import make_concept


def _config(family: str, **sections: dict[str, Any]) -> TrainConfig:
    data: dict[str, Any] = {"model": {"path": "/absent.safetensors", "family": family}}
    data["network"] = {"rank": 16, "alpha": 8.0}
    return config_from_dict({**data, **sections})


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sdxl_weights_are_its_parameter_counts_times_the_dtype() -> None:
    config = _config("sdxl", training={"mixed_precision": "bf16"}, dataset={"resolution": 1024})
    base = empty_base_model(ModelFamily.SDXL)
    unet, vae = _params(base.unet), _params(base.vae)
    encoders = sum(_params(te) for te in base.text_encoders)
    assert round(unet / 1e9, 3) == 2.567  # → 5.13 GB of bf16 UNet weights
    weights = estimate(config, "sdxl").term("weights")
    assert weights.bytes == 2 * (unet + encoders) + 4 * vae  # the VAE runs in fp32


def test_flux_dev_weights_in_bf16_fp8_and_with_block_swap() -> None:
    counts = flux_counts("dev")
    assert round(counts.transformer / 1e9, 1) == 11.9
    assert (counts.double_blocks, counts.single_blocks) == (19, 38)
    bf16 = flux_estimate("dev", weights="bf16").term("weights").bytes
    fp8 = flux_estimate("dev", weights="fp8").term("weights").bytes
    assert (bf16, fp8) == (2 * counts.transformer, counts.transformer)  # 23.8 / 11.9 GB
    swapped = flux_estimate("dev", weights="fp8", blocks_to_swap=16).term("weights").bytes
    on_cpu = 8 * counts.double_block + 16 * counts.single_block
    assert swapped == counts.transformer - on_cpu + counts.double_block


def test_block_swap_counts_as_sd_scripts_does() -> None:
    counts = flux_counts("dev")
    assert swapped_blocks(16, counts) == (8, 16)
    assert swapped_blocks(35, counts) == (17, 36)
    with pytest.raises(LorakitError, match="at most 35"):
        swapped_blocks(36, counts)


def test_flux_table_has_the_three_rows_and_they_shrink() -> None:
    lines = flux_table("dev", resolution=1024, batch_size=1, rank=16)
    assert "FLUX.1 dev 1024 px, batch 1, rank 16" in lines[0]
    labels = [line.split(":")[0].strip() for line in lines[1:]]
    assert labels == ["bf16", "fp8", "fp8 + block swap 16"]
    totals = [
        flux_estimate("dev", weights=w, blocks_to_swap=n).total_bytes
        for w, n in (("bf16", 0), ("fp8", 0), ("fp8", 16))
    ]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 3


def test_each_setting_moves_the_estimate_the_way_it_moves_a_run() -> None:
    def total(label: str, **sections: dict[str, Any]) -> int:
        return estimate(_config("sd15", **sections), "sd15").term(label).bytes

    assert total("activations", training={"gradient_checkpointing": True}) < total("activations")
    assert total("activations", training={"batch_size": 2}) > total("activations")
    assert total("activations", training={"mixed_precision": "no"}) > total("activations")
    assert total("activations", dataset={"resolution": 768}) > total("activations")
    eight_bit = total("LoRA/optimizer", optimizer={"name": "adamw8bit"})
    assert eight_bit < total("LoRA/optimizer", optimizer={"name": "adamw"})
    assert total("LoRA/optimizer", network={"rank": 128, "alpha": 64.0}) > eight_bit
    frozen_te = total("LoRA/optimizer", optimizer={"text_encoder_lr": 0.0})
    assert frozen_te < eight_bit
    assert total("weights", training={"mixed_precision": "no"}) > total("weights")


def test_the_summary_adds_up_and_names_every_term() -> None:
    result = estimate(_config("sd15", dataset={"resolution": 512}), "sd15")
    assert result.total_bytes == sum(term.bytes for term in result.terms)
    first = result.lines()[0]
    assert first.startswith(f"VRAM estimate (on a GPU): ~{result.total_bytes / GIB:.1f} GiB = ")
    for label in ("weights", "LoRA/optimizer", "activations", "CUDA"):
        assert f"{label} " in first


def test_the_dry_run_prints_the_estimate_of_the_models_own_architecture(
    tiny_sd15_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A diffusers folder is counted from its own configs; this machine has no GPU, the
    estimate is still for one (fp16 weights, as `training.mixed_precision` asks)."""
    data = make_concept(tmp_path / "data", count=2)
    config = tmp_path / "run.toml"
    config.write_text(
        f'[model]\npath = "{tiny_sd15_dir}"\n[dataset]\npath = "{data}"\n'
        f'[saving]\noutput_dir = "{tmp_path / "out"}"\n',
        encoding="utf-8",
    )
    assert main(["train", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    block = [line for line in out if line.startswith(("VRAM estimate", "  "))]
    assert block[0].startswith("VRAM estimate (on a GPU): ~")
    base = empty_base_model(ModelFamily.SD15, tiny_sd15_dir)
    unet = f"UNet {_params(base.unet) / 1e6:,.1f} M"
    assert any(
        line.startswith("  weights ") and unet in line and "(fp16)" in line for line in block
    )
    assert any(line.startswith("  assumes ") for line in block)


def test_a_flux_config_is_estimated_as_flux() -> None:
    training = {"mixed_precision": "bf16", "gradient_checkpointing": True}
    config = _config("sd15", dataset={"resolution": 1024}, training=training)
    from_config = estimate(config, "flux1")
    direct = flux_estimate("dev", resolution=1024, rank=16, weights="bf16", optimizer="adamw8bit")
    assert from_config.terms == direct.terms
