"""Loading offline: diffusers folders and LDM single files written from the tiny models."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import zipfile
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.models import BaseModel, ModelFamily, detect_family, file_hashes, load_base_model
from lorakit.models.components import load_tokenizers
from lorakit.models.tensors import CheckpointTensors
from lorakit.training.config import save_config
from tests.helpers.ldm import write_ldm_checkpoint
from tests.test_train_support import concept_run

FAMILIES = [ModelFamily.SD15, ModelFamily.SDXL]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (or ask the hub) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def folders(tiny_sd15_dir: Path, tiny_sdxl_dir: Path) -> dict[ModelFamily, Path]:
    return {ModelFamily.SD15: tiny_sd15_dir, ModelFamily.SDXL: tiny_sdxl_dir}


@pytest.fixture(scope="module")
def ldm_files(
    folders: dict[ModelFamily, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[ModelFamily, Path]:
    out = tmp_path_factory.mktemp("ldm")
    return {
        family: write_ldm_checkpoint(folder, out / f"{family.value}.safetensors", family.value)
        for family, folder in folders.items()
    }


def _modules(base: BaseModel) -> list[torch.nn.Module]:
    return [base.unet, base.vae, *base.text_encoders]


def _reference_modules(pipe: DiffusionPipeline) -> list[torch.nn.Module]:
    encoders = [pipe.text_encoder] + (
        [pipe.text_encoder_2] if hasattr(pipe, "text_encoder_2") else []
    )
    return [pipe.unet, pipe.vae, *encoders]


def _image(pipe: DiffusionPipeline) -> np.ndarray:
    return pipe(
        "a photo of sks person",
        num_inference_steps=3,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    ).images[0]


def test_offline_guard_refuses_connections(offline: None) -> None:
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    with pytest.raises(OSError, match="network access attempted"):
        socket.socket().connect(("127.0.0.1", 9))


def test_tokenizer_gives_clip_ids_offline(offline: None) -> None:
    for family in FAMILIES:
        for tokenizer in load_tokenizers(family):
            ids = tokenizer("a photo of sks person").input_ids
            assert ids == [49406, 320, 1125, 539, 48136, 2533, 49407]
    sdxl_pads = [t("sks", padding="max_length").input_ids[-1] for t in load_tokenizers(FAMILIES[1])]
    assert sdxl_pads == [49407, 0]  # the second SDXL tokenizer pads with "!"


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_matches_its_folder_weights_and_image(
    family: ModelFamily,
    folders: dict[ModelFamily, Path],
    ldm_files: dict[ModelFamily, Path],
    offline: None,
) -> None:
    reference = DiffusionPipeline.from_pretrained(folders[family], local_files_only=True)
    base = load_base_model(ldm_files[family], config=folders[family])
    assert base.family is family
    assert base.source == ldm_files[family]
    for ours, theirs in zip(_modules(base), _reference_modules(reference), strict=True):
        assert type(ours) is type(theirs)
        ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
        assert ours_state.keys() == theirs_state.keys()
        for key, value in theirs_state.items():
            assert torch.equal(ours_state[key], value), key
    expected = _image(reference)
    got = _image(base.pipeline(scheduler=reference.scheduler))
    assert expected.std() > 0.01
    # Weights are equal bit for bit (above); the pixels may differ by float rounding only,
    # because CPU matmul kernels depend on how the weight buffers happen to be aligned.
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_loads_with_bundled_tokenizers(
    family: ModelFamily, folders: dict[ModelFamily, Path], offline: None
) -> None:
    base = load_base_model(folders[family], family=family.value)
    assert base.family is family
    assert (
        len(base.text_encoders) == len(base.tokenizers) == (2 if family is ModelFamily.SDXL else 1)
    )
    assert base.scheduler_config["num_train_timesteps"] == 1000
    assert base.prediction_type == "epsilon"
    assert not any(p.requires_grad for m in _modules(base) for p in m.parameters())


def test_ckpt_loads_with_weights_only(
    folders: dict[ModelFamily, Path], ldm_files: dict[ModelFamily, Path], tmp_path: Path
) -> None:
    folder = folders[ModelFamily.SD15]
    ckpt = write_ldm_checkpoint(folder, tmp_path / "model.ckpt", "sd15")
    from_ckpt = load_base_model(ckpt, config=folder)
    from_safetensors = load_base_model(ldm_files[ModelFamily.SD15], config=folder)
    for ours, theirs in zip(_modules(from_ckpt), _modules(from_safetensors), strict=True):
        for (key, value), other in zip(
            ours.state_dict().items(), theirs.state_dict().values(), strict=True
        ):
            assert torch.equal(value, other), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loading(
    dtype: torch.dtype,
    folders: dict[ModelFamily, Path],
    ldm_files: dict[ModelFamily, Path],
) -> None:
    folder, file = folders[ModelFamily.SDXL], ldm_files[ModelFamily.SDXL]
    full = load_base_model(file, config=folder)
    for base in (
        load_base_model(file, config=folder, dtype=dtype),
        load_base_model(folder, dtype=dtype),
    ):
        for module, reference in zip(_modules(base), _modules(full), strict=True):
            state = module.state_dict()
            for key, value in reference.state_dict().items():
                assert state[key].dtype == dtype, key
                assert torch.equal(state[key], value.to(dtype)), key


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_family_of_folders_and_files(
    family: ModelFamily, folders: dict[ModelFamily, Path], ldm_files: dict[ModelFamily, Path]
) -> None:
    assert detect_family(folders[family]) is family
    assert detect_family(ldm_files[family]) is family
    assert detect_family(str(ldm_files[family])) is family


def test_tiny_file_against_full_size_config_names_the_fix(
    ldm_files: dict[ModelFamily, Path],
) -> None:
    path = ldm_files[ModelFamily.SD15]
    with pytest.raises(LorakitError) as caught:
        load_base_model(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "UNet" in message and "config=" in message


def test_family_option_must_match_the_file(ldm_files: dict[ModelFamily, Path]) -> None:
    path = ldm_files[ModelFamily.SD15]
    with pytest.raises(LorakitError, match="family sd15, not sdxl") as caught:
        load_base_model(path, family="sdxl")
    assert str(path) in str(caught.value)
    with pytest.raises(LorakitError, match="unknown model family 'sd3'"):
        load_base_model(path, family="sd3")


def test_file_hashes_are_sha256_and_a1111_autov2(ldm_files: dict[ModelFamily, Path]) -> None:
    path = ldm_files[ModelFamily.SD15]
    data = path.read_bytes()
    assert len(data) > 0x110000  # the legacy hash window lies inside the file
    expected = hashlib.sha256(data).hexdigest()
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert file_hashes(path) == {"sha256": expected, "autov2": expected[:10], "legacy": legacy}
    with pytest.raises(LorakitError, match="not a file"):
        file_hashes(path.parent)


def test_folder_with_only_fp16_variant_files(
    folders: dict[ModelFamily, Path], tmp_path: Path
) -> None:
    """Folders downloaded with `variant="fp16"` name their weights `*.fp16.safetensors`."""
    folder = tmp_path / "model"
    shutil.copytree(folders[ModelFamily.SD15], folder)
    for weights in folder.glob("*/*.safetensors"):
        weights.rename(weights.with_suffix(".fp16.safetensors"))
    base = load_base_model(folder)
    reference = load_base_model(folders[ModelFamily.SD15])
    assert torch.equal(base.unet.conv_in.weight, reference.unet.conv_in.weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_load_equals_diffusers_from_single_file(
    family: ModelFamily,
    dtype: torch.dtype,
    folders: dict[ModelFamily, Path],
    ldm_files: dict[ModelFamily, Path],
    offline: None,
) -> None:
    """Reading tensor by tensor and casting before converting changes no weight.

    SDXL's OpenCLIP encoder is compared with the folder it was written from: diffusers
    0.42's `from_single_file` leaves it unloaded under transformers 5 (random weights, its
    `text_projection` on the meta device).
    """
    cls = StableDiffusionXLPipeline if family is ModelFamily.SDXL else StableDiffusionPipeline
    file, folder = str(ldm_files[family]), str(folders[family])
    reference = cls.from_single_file(file, config=folder, local_files_only=True, torch_dtype=dtype)
    base = load_base_model(ldm_files[family], config=folders[family], dtype=dtype)
    pairs = [(base.unet, reference.unet), (base.vae, reference.vae)]
    pairs.append((base.text_encoders[0], reference.text_encoder))
    if family is ModelFamily.SDXL:
        written = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
        pairs.append((base.text_encoders[1], written.text_encoder_2.to(dtype)))
    for ours, theirs in pairs:
        ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
        assert ours_state.keys() == theirs_state.keys()
        for key, value in theirs_state.items():
            assert ours_state[key].dtype == dtype, key
            assert torch.equal(ours_state[key], value), key


def test_ckpt_views_read_from_their_storage_offsets(tmp_path: Path) -> None:
    """`.ckpt` tensors can be slices, transposes or share one storage; each is read from its
    own byte range of the zip, laid out by its strides."""
    storage = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    tensors = {
        "whole": storage,
        "rows": storage[2:5],
        "columns": storage[:, 3:7],
        "transposed": storage.T,
        "scalar": torch.tensor(7, dtype=torch.int64),
        "half": torch.linspace(-1, 1, 9, dtype=torch.float16),
    }
    path = tmp_path / "views.ckpt"
    torch.save({"state_dict": tensors}, path)
    read = CheckpointTensors(path)
    assert set(read) == set(tensors)
    for key, value in tensors.items():
        assert read[key].dtype == value.dtype, key
        assert torch.equal(read[key], value), key


def test_compressed_ckpt_zip_is_refused(tmp_path: Path) -> None:
    plain, path = tmp_path / "plain.ckpt", tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            out.writestr(item.filename, source.read(item.filename))
    with pytest.raises(LorakitError, match="a compressed zip") as caught:
        CheckpointTensors(path)
    assert str(path) in str(caught.value)


def test_model_config_key_trains_a_file_of_another_size(
    folders: dict[ModelFamily, Path],
    ldm_files: dict[ModelFamily, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """docs/lora-files.md: a single file of another size takes `model.config`."""
    path, folder = ldm_files[ModelFamily.SD15], folders[ModelFamily.SD15]
    config, out = concept_run(tmp_path, path)
    save_config(config, tmp_path / "run.toml")
    assert main(["train", str(tmp_path / "run.toml")]) == 2
    err = capsys.readouterr().err
    assert "UNet weights do not fit the model config" in err and "set model.config" in err
    setting = f"model.config={json.dumps(str(folder))}"  # a TOML string
    assert main(["train", str(tmp_path / "run.toml"), "--set", setting]) == 0
    assert (out / "tiny.safetensors").is_file()
