"""Inpainting, pix2pix, SD2.x and SDXL refiner checkpoints: named in one line, from the header.

The files are tiny (detection reads only names and the shape of the UNet's first conv), but
carry the keys of the real ones. Each is refused the same way by `detect_family` (what
`lorakit train --dry-run` runs) and by `load_base_model`, before any weight is read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.models import detect_family, load_base_model
from lorakit.training.config import save_config
from tests.test_train_support import concept_run

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
VAE = "first_stage_model.decoder.conv_out.bias"
SD15_TE = "cond_stage_model.transformer.text_model.final_layer_norm.bias"
SDXL_TE1 = "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias"
OPEN_CLIP_G = "conditioner.embedders.1.model.ln_final.bias"
SD2_TE = "cond_stage_model.model.ln_final.bias"
REFINER_TE = "conditioner.embedders.0.model.ln_final.bias"
SUPPORTED = "lorakit trains LoRAs on text-to-image SD1.5 and SDXL base models"


def _tensors(conv_in_channels: int, *text_keys: str) -> dict[str, torch.Tensor]:
    shapes = {CONV_IN: (4, conv_in_channels, 3, 3), VAE: (3,)}
    shapes.update({key: (8,) for key in text_keys})
    return {key: torch.zeros(shape) for key, shape in shapes.items()}


VARIANTS = {
    "sd15-inpainting": (
        _tensors(9, SD15_TE),
        "an SD1.5 inpainting checkpoint (9-channel conv_in, 4 for text-to-image); "
        f"{SUPPORTED}: use the base model it was made from",
    ),
    "sdxl-inpainting": (
        _tensors(9, SDXL_TE1, OPEN_CLIP_G),
        "an SDXL inpainting checkpoint (9-channel conv_in, 4 for text-to-image); "
        f"{SUPPORTED}: use the base model it was made from",
    ),
    "sd15-pix2pix": (
        _tensors(8, SD15_TE),
        "an SD1.5 instruct-pix2pix checkpoint (8-channel conv_in",
    ),
    "sd2": (
        _tensors(4, SD2_TE),
        "an SD2.x checkpoint (OpenCLIP ViT-H text encoder, cond_stage_model.model.*); "
        f"{SUPPORTED}: use an SD1.5 or SDXL base model",
    ),
    "sdxl-refiner": (
        _tensors(4, REFINER_TE),
        "an SDXL refiner checkpoint (one OpenCLIP ViT-bigG text encoder, "
        f"conditioner.embedders.0.model.* only); {SUPPORTED}: use SDXL base 1.0",
    ),
}


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    if path.suffix == ".safetensors":
        save_file(tensors, path)
    else:
        torch.save({"state_dict": tensors}, path)
    return path


def _refusal(call, path: Path) -> str:
    with pytest.raises(LorakitError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_is_named_with_what_to_use_instead(name: str, suffix: str, tmp_path: Path) -> None:
    tensors, expected = VARIANTS[name]
    path = _write(tmp_path / f"{name}{suffix}", tensors)
    for call in (lambda: detect_family(path), lambda: load_base_model(path)):
        assert expected in _refusal(call, path)


def test_text_to_image_file_with_the_same_keys_is_accepted(tmp_path: Path) -> None:
    """The channel count alone turns an SD1.5 file into an inpainting one."""
    path = _write(tmp_path / "sd15.safetensors", _tensors(4, SD15_TE))
    assert detect_family(path).value == "sd15"


def test_dry_run_refuses_an_inpainting_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--dry-run` used to accept it; the load then called the file damaged."""
    tensors, expected = VARIANTS["sd15-inpainting"]
    path = _write(tmp_path / "sd-v1-5-inpainting.ckpt", tensors)
    config, out = concept_run(tmp_path, path)
    save_config(config, tmp_path / "run.toml")
    assert main(["train", str(tmp_path / "run.toml"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lorakit: error: {path}: {expected}"
    assert not out.exists()


def test_inpainting_diffusers_folder(tmp_path: Path, tiny_sd15_dir: Path) -> None:
    folder = tmp_path / "inpainting"
    shutil.copytree(tiny_sd15_dir, folder)
    config_path = folder / "unet" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "in_channels": 9}))
    for call in (lambda: detect_family(folder), lambda: load_base_model(folder)):
        assert "an SD1.5 inpainting checkpoint (9-channel conv_in" in _refusal(call, folder)
