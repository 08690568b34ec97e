"""Every way a base-model path can be wrong ends in one line that names the file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorakit.errors import LorakitError
from lorakit.models import detect_family, load_base_model

SD_CORE = {"model.diffusion_model.out.2.weight": 1, "first_stage_model.decoder.conv_out.bias": 1}


class Payload:
    """Unpickling this would call `print`: the kind of .ckpt weights_only must refuse."""

    def __reduce__(self) -> tuple[Callable[..., None], tuple[str]]:
        return (print, ("code ran",))


def _safetensors(path: Path, keys: dict[str, int]) -> Path:
    save_file({key: torch.zeros(size) for key, size in keys.items()}, path)
    return path


def _one_line_error(call: Callable[[], object], path: Path) -> str:
    with pytest.raises(LorakitError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def _both(path: Path) -> list[str]:
    """The error of detect_family and of load_base_model, which must agree."""
    return [
        _one_line_error(lambda: detect_family(path), path),
        _one_line_error(lambda: load_base_model(path), path),
    ]


def test_missing_path(tmp_path: Path) -> None:
    for message in _both(tmp_path / "nope.safetensors"):
        assert "no such file" in message


def test_text_file_renamed_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("this is a download error page, not a model\n" * 20)
    for message in _both(path):
        assert "not a readable safetensors file" in message


@pytest.mark.parametrize("keep", [0, 40, 0.5])
def test_truncated_safetensors(tmp_path: Path, tiny_sd15_dir: Path, keep: float) -> None:
    data = (tiny_sd15_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    for message in _both(path):
        assert "truncated, corrupt or not a checkpoint" in message


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0" * 16)
    for message in _both(path):
        assert "not a checkpoint (.bin)" in message


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"lora_unet_mid_block_attn.lora_down.weight": 4}, "not an SD1.5/SDXL checkpoint"),
        ({"encoder.conv_in.weight": 4, "decoder.conv_out.bias": 3}, "VAE or UNet alone"),
        (SD_CORE, "unknown checkpoint, no SD1.5 or SDXL text encoder"),
        ({**SD_CORE, "cond_stage_model.model.positional_embedding": 4}, "an SD2.x checkpoint"),
        ({**SD_CORE, "conditioner.embedders.0.model.text_projection": 4}, "an SDXL refiner"),
        ({**SD_CORE, "v_pred": 1}, "a v-prediction checkpoint"),
    ],
)
def test_unknown_or_unsupported_checkpoints(
    tmp_path: Path, keys: dict[str, int], expected: str
) -> None:
    path = _safetensors(tmp_path / "model.safetensors", keys)
    for message in _both(path):
        assert expected in message
        assert "SD1.5 and SDXL" in message or "SD1.5/SDXL" in message


def test_unknown_checkpoint_names_what_it_found(tmp_path: Path) -> None:
    keys = {f"lora_te_layer_{i}.alpha": 1 for i in range(3)}
    path = _safetensors(tmp_path / "model.safetensors", keys)
    message = _one_line_error(lambda: detect_family(path), path)
    assert "3 tensors" in message
    assert "lora_te_layer_0.alpha.* (1)" in message


def test_ckpt_needing_code_execution_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callback": Payload()}, path)
    for message in _both(path):
        assert "needs pickle code execution" in message
        assert "print" in message
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"not a zip at all", b""])
def test_corrupt_ckpt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.ckpt"
    full = tmp_path / "full.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64)}}, full)
    path.write_bytes(content or full.read_bytes()[:200])
    for message in _both(path):
        assert "truncated, corrupt or not a checkpoint" in message


def test_folder_without_model_index(tmp_path: Path) -> None:
    for message in _both(tmp_path):
        assert "without model_index.json" in message


def _config_folder(tmp_path: Path, source: Path, unet: dict, scheduler: dict) -> Path:
    folder = tmp_path / "model"
    for name in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, folder / name)
    for name, changes in (
        ("unet/config.json", unet),
        ("scheduler/scheduler_config.json", scheduler),
    ):
        config = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**config, **changes}))
    return folder


def test_v_prediction_folder(tmp_path: Path, tiny_sd15_dir: Path) -> None:
    folder = _config_folder(tmp_path, tiny_sd15_dir, {}, {"prediction_type": "v_prediction"})
    for message in _both(folder):
        assert "a v-prediction model" in message


def test_sd2_folder(tmp_path: Path, tiny_sd15_dir: Path) -> None:
    folder = _config_folder(tmp_path, tiny_sd15_dir, {"cross_attention_dim": 1024}, {})
    for message in _both(folder):
        assert "an SD2.x model" in message


def test_corrupt_folder_config(tmp_path: Path, tiny_sdxl_dir: Path) -> None:
    folder = _config_folder(tmp_path, tiny_sdxl_dir, {}, {})
    (folder / "unet" / "config.json").write_text("{ not json")
    message = _one_line_error(lambda: detect_family(folder), folder)
    assert "not valid JSON" in message


def test_bad_dtype_and_config_folder(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "model.safetensors", SD_CORE)
    message = _one_line_error(lambda: load_base_model(path, dtype=torch.int8), path)
    assert "float32, float16 or bfloat16" in message
    sd15 = _safetensors(
        tmp_path / "sd15.safetensors",
        {**SD_CORE, "cond_stage_model.transformer.text_model.final_layer_norm.bias": 4},
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _one_line_error(lambda: load_base_model(sd15, config=empty), empty)
    assert "not a diffusers config folder" in message


def test_damaged_checkpoint_missing_weights(tmp_path: Path) -> None:
    """SD-shaped keys that do not make a whole UNet fail on load, not later in training."""
    sd15 = _safetensors(
        tmp_path / "sd15.safetensors",
        {**SD_CORE, "cond_stage_model.transformer.text_model.final_layer_norm.bias": 4},
    )
    assert detect_family(sd15).value == "sd15"
    message = _one_line_error(lambda: load_base_model(sd15), sd15)
    assert "UNet" in message


def test_folder_missing_weights(tmp_path: Path, tiny_sd15_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd15_dir, folder)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    message = _one_line_error(lambda: load_base_model(folder), folder / "vae")
    assert "cannot load AutoencoderKL" in message
