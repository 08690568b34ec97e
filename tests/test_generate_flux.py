"""`lorakit generate` on the tiny FLUX.1 dev given as users have it (a BFL transformer file
with separate clip_l / t5xxl / ae files) with the LoRA `lorakit train` made for it: the
LoRA changes the image at weight 1 and leaves it bit for bit at weight 0, the image is
diffusers' FluxPipeline's with the same LoRA (converted to the diffusers layout and loaded
by `load_lora_weights`), the PNG carries Forge's FLUX.1 infotext that `png-info` reads
back, and a missing T5 file is one line naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit.cli.main import main
from lorakit.inference.metadata import lora_short_hash, read_parameters
from tests import test_train_flux
from tests.helpers.flux import tiny_flux_pipeline, write_flux_files
from tests.test_train_flux import _one_line_error

# The tiny FLUX.1 dev files and the LoRA trained on them, shared with the training tests.
flux, full = test_train_flux.flux, test_train_flux.full

SEED, STEPS, SIDE = 7, 4, 32
PROMPT = "a photo of sks disc"


def _files(flux: dict[str, Path]) -> list[str]:
    """The BFL transformer with its encoder and VAE files and its (tiny) architecture."""
    files = [f"--{key.replace('_', '-')}={flux[key]}" for key in ("clip_l", "t5xxl", "ae")]
    return ["--model", str(flux["transformer"]), *files, "--config", str(flux["folder"])]


def _generate(
    flux: dict[str, Path], out: Path, prompt: str, *extra: str, model: list[str] | None = None
) -> np.ndarray:
    """One image through the command line (the BFL files unless `model`); its pixels."""
    args = ["generate", prompt, *(model or _files(flux)), "--seed", str(SEED)]
    args += ["--steps", str(STEPS), "--device", "cpu"]  # fp32, as the diffusers reference
    args += ["--width", str(SIDE), "--height", str(SIDE), "--out", str(out), *extra]
    assert main(args) == 0
    (png,) = out.glob("*.png")
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)


def test_lora_weight_one_changes_the_image_and_zero_is_the_base(
    flux: dict[str, Path], full: Path, tmp_path: Path
) -> None:
    lora_dir = ["--lora-dir", str(full)]
    base = _generate(flux, tmp_path / "base", PROMPT)
    off = _generate(flux, tmp_path / "off", f"{PROMPT} <lora:tiny:0>", *lora_dir)
    on = _generate(flux, tmp_path / "on", f"{PROMPT} <lora:tiny:1>", *lora_dir)
    assert np.array_equal(off, base)
    folder = _generate(flux, tmp_path / "folder", PROMPT, model=["--model", str(flux["folder"])])
    assert np.array_equal(folder, base)  # the diffusers folder of the same weights
    # Measured: the trained LoRA moves pixels by up to 147 levels (mean 21).
    assert np.abs(on - base).max() > 20
    # Two LoRAs stack: the same file twice at 0.5 is the file once at 1 (measured: equal).
    twice = f"{PROMPT} <lora:tiny:0.5> <lora:tiny:0.5>"
    half_half = _generate(flux, tmp_path / "twice", twice, *lora_dir)
    assert np.abs(half_half - on).max() <= 1


def test_the_image_is_diffusers_flux_pipeline_with_the_converted_lora(
    flux: dict[str, Path], full: Path, tmp_path: Path
) -> None:
    """Same base weights (the pipeline the files were written from), seed, steps, size and
    guidance; the LoRA through `lora convert --to diffusers` + `load_lora_weights`.
    Tolerance: none; the PNGs are equal pixel for pixel (the float images measured equal too).
    The pipeline's modules go to eval mode first, as `from_pretrained` leaves them (T5's
    dropout would otherwise make every call differ)."""
    converted = tmp_path / "tiny_diffusers.safetensors"
    convert = ["lora", "convert", str(full / "tiny.safetensors"), str(converted)]
    assert main([*convert, "--to", "diffusers"]) == 0
    ours = _generate(flux, tmp_path / "ours", f"{PROMPT} <lora:tiny:1>", "--lora-dir", str(full))
    pipe = tiny_flux_pipeline("dev")
    pipe.load_lora_weights(str(converted))
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.eval()
    with torch.no_grad():
        image = pipe(
            PROMPT,
            width=SIDE,
            height=SIDE,
            num_inference_steps=STEPS,
            guidance_scale=3.5,
            generator=torch.Generator("cpu").manual_seed(SEED),
            max_sequence_length=512,
        ).images[0]
    theirs = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.array_equal(ours, theirs)
    # The diffusers-layout file applies as the kohya one does.
    layout = _generate(flux, tmp_path / "layout", PROMPT, "--lora", f"{converted}:1")
    assert np.array_equal(layout, ours)


def test_the_png_has_forge_flux_infotext_and_png_info_prints_it(
    flux: dict[str, Path], full: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _generate(flux, tmp_path / "out", f"{PROMPT} <lora:tiny:0.8>", "--lora-dir", str(full))
    (png,) = (tmp_path / "out").glob("*.png")
    text = read_parameters(png)
    prompt, settings = text.split("\n")
    assert prompt == f"{PROMPT} <lora:tiny:0.8>"
    lora_hash = lora_short_hash(full / "tiny.safetensors")
    assert settings.startswith(
        f"Steps: {STEPS}, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
        f"Distilled CFG Scale: 3.5, Seed: {SEED}, Size: {SIDE}x{SIDE}, Model hash: "
    )
    assert settings.endswith(
        f'Model: transformer, Lora hashes: "tiny: {lora_hash}", '
        "Module 1: ae, Module 2: clip_l, Module 3: t5xxl"
    )
    capsys.readouterr()
    assert main(["png-info", str(png)]) == 0
    assert capsys.readouterr().out.strip() == text
    assert main(["png-info", str(png), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert (parsed["sampler"], parsed["cfg"], parsed["steps"]) == ("Euler", 1.0, STEPS)
    assert parsed["extra"]["Distilled CFG Scale"] == "3.5"
    assert parsed["lora_hashes"] == {"tiny": lora_hash}


@pytest.mark.parametrize(
    ("drop", "extra", "expected"),
    [
        ("t5xxl", [], "--t5xxl"),
        (None, ["--cfg", "7"], "--cfg"),
        (None, ["--negative", "blurry"], "--negative"),
    ],
)
def test_bad_flux_input_is_one_line(
    flux: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    drop: str | None,
    extra: list[str],
    expected: str,
) -> None:
    keys = [key for key in ("clip_l", "t5xxl", "ae") if key != drop]
    files = [f"--{key.replace('_', '-')}={flux[key]}" for key in keys]
    args = ["generate", PROMPT, "--model", str(flux["transformer"]), *files, *extra]
    err = _one_line_error([*args, "--out", str(tmp_path / "out")], capsys)
    assert expected in err and str(flux["transformer"]) in err
    assert not list(tmp_path.glob("out/*.png"))


def test_schnell_takes_four_steps_and_refuses_guidance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tiny_flux_pipeline("schnell")
    pipe.save_pretrained(tmp_path / "folder")
    schnell = {**write_flux_files(pipe, tmp_path / "files"), "folder": tmp_path / "folder"}
    args = ["generate", PROMPT, *_files(schnell), "--seed", "1", "--device", "cpu"]
    args += ["--width", str(SIDE), "--height", str(SIDE)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    (png,) = (tmp_path / "out").glob("*.png")
    settings = read_parameters(png).splitlines()[-1]
    assert settings.startswith("Steps: 4, Sampler: Euler, Schedule type: Simple, CFG scale: 1, ")
    assert "Distilled CFG Scale" not in settings
    err = _one_line_error([*args, "--guidance", "3.5", "--out", str(tmp_path / "o2")], capsys)
    assert "schnell has no guidance input" in err
