"""Generation with tiny models: LoRA weights, stacking, img2img, samples, CLI + png-info."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit.cli.main import main
from lorakit.inference.generate import GenerateOptions, applied_loras, generate
from lorakit.inference.metadata import parse_parameters, read_parameters
from lorakit.inference.prompt import LoraRef
from lorakit.inference.samples import SamplePrompt, generate_samples
from lorakit.models import BaseModel, load_base_model
from lorakit.network.config import LoRAConfig
from lorakit.network.lora import LoRANetwork
from tests.test_network_support import tiny_base

STEPS = 2


def make_lora(base: BaseModel, path: Path, seed: int, scale: float = 0.3) -> Path:
    """A kohya LoRA file for `base` whose up weights are non-zero, so it changes images."""
    network = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=4.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if "lora_up" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    network.save(path, dtype=torch.float32)
    network.remove()
    return path


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def sd15() -> BaseModel:
    return tiny_base("sd15")


@pytest.fixture(scope="module")
def loras(sd15: BaseModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {
        "a": make_lora(sd15, folder / "styleA.safetensors", seed=1),
        "b": make_lora(sd15, folder / "styleB.safetensors", seed=2),
    }


def one_image(base: BaseModel, prompt: str, lora_dir: Path | None = None, **kw) -> np.ndarray:
    options = GenerateOptions(prompt=prompt, steps=STEPS, seed=5, **kw)
    return pixels(generate(base, options, lora_dir=lora_dir)[0].image)


def test_weight_zero_is_the_base_image_and_weight_one_differs(sd15, loras) -> None:
    folder = loras["a"].parent
    plain = one_image(sd15, "a photo")
    zero = one_image(sd15, "a photo <lora:styleA:0>", folder)
    full = one_image(sd15, "a photo, <lora:stylea:1>", folder)
    assert np.array_equal(plain, zero)
    assert np.abs(full - plain).mean() > 1.0
    assert np.array_equal(one_image(sd15, "a photo"), plain), "LoRA was not removed afterwards"


def test_two_loras_stack(sd15, loras) -> None:
    folder = loras["a"].parent
    only_a = one_image(sd15, "a photo <lora:styleA:1>", folder)
    only_b = one_image(sd15, "a photo <lora:styleB:1>", folder)
    both = one_image(sd15, "a photo <lora:styleA:1> <lora:styleB:1>", folder)
    assert np.abs(both - only_a).mean() > 1.0
    assert np.abs(both - only_b).mean() > 1.0
    refs = [LoraRef("styleA", loras["a"], 1.0), LoraRef("styleB", loras["b"], 1.0)]
    options = GenerateOptions(prompt="a photo", steps=STEPS, seed=5)
    with applied_loras(sd15, refs):
        by_hand = generate(sd15, options)[0]
    assert np.array_equal(pixels(by_hand.image), both)


def unet_calls(base: BaseModel, options: GenerateOptions) -> tuple[int, np.ndarray]:
    """How many UNet forward passes one generation makes, and its image."""
    calls = []
    handle = base.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        image = generate(base, options)[0].image
    finally:
        handle.remove()
    return len(calls), pixels(image)


def test_batch_uses_consecutive_seeds(sd15) -> None:
    results = generate(sd15, GenerateOptions(prompt="a cat", steps=STEPS, seed=10, batch=2))
    assert [r.info.seed for r in results] == [10, 11]
    assert not np.array_equal(pixels(results[0].image), pixels(results[1].image))


def test_img2img_follows_strength_and_the_init_image(sd15) -> None:
    red = Image.new("RGB", (96, 80), (200, 30, 30))
    blue = Image.new("RGB", (96, 80), (20, 40, 220))

    def img2img(init: Image.Image, strength: float) -> GenerateOptions:
        options = GenerateOptions("a cat", width=64, height=64, steps=10, seed=3)
        return dataclasses.replace(options, init_image=init, strength=strength)

    # A1111 / diffusers: denoising strength s runs the last s x steps of the schedule.
    low_calls, low = unet_calls(sd15, img2img(red, 0.3))
    high_calls, _ = unet_calls(sd15, img2img(red, 0.8))
    assert (low_calls, high_calls) == (3, 8)
    _, from_blue = unet_calls(sd15, img2img(blue, 0.3))
    assert low.shape == (64, 64, 3)
    assert np.abs(low - from_blue).mean() > 1.0, "the init image is ignored"
    result = generate(sd15, img2img(red, 0.3))[0]
    assert result.info.denoising_strength == 0.3


def test_sdxl_generates() -> None:
    base = tiny_base("sdxl")
    result = generate(base, GenerateOptions(prompt="a dog", steps=STEPS, seed=1))[0]
    assert result.image.size == (64, 64)
    assert pixels(result.image).std() > 0


def test_samples_keep_train_mode_and_name_files(sd15, tmp_path) -> None:
    network = LoRANetwork.inject(sd15, LoRAConfig(rank=2, alpha=2.0))
    sd15.unet.train()
    sd15.text_encoders[0].eval()
    modes = [m.training for m in (*sd15.unet.modules(), *sd15.text_encoders[0].modules())]
    rng_before = torch.random.get_rng_state()
    try:
        prompts = [
            SamplePrompt("sks dog", width=64, height=64, steps=STEPS),
            SamplePrompt("sks", width=64, height=64, steps=STEPS, seed=3),
        ]
        paths = generate_samples(sd15, prompts, tmp_path / "samples", step=40, epoch=2)
        after = [m.training for m in (*sd15.unet.modules(), *sd15.text_encoders[0].modules())]
        assert after == modes and sd15.unet.training
    finally:
        network.remove()
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert [p.name for p in paths] == [
        "sample_e000002_s000040_00.png",
        "sample_e000002_s000040_01.png",
    ]
    info = parse_parameters(read_parameters(paths[0]))
    assert (info.prompt, info.steps, info.seed) == ("sks dog", STEPS, 42)


def test_cli_generate_and_png_info_round_trip(tiny_sd15_dir, loras, tmp_path, capsys) -> None:
    base = load_base_model(tiny_sd15_dir)
    lora = make_lora(base, tmp_path / "disk-lora.safetensors", seed=3)
    out = tmp_path / "out"
    code = main(
        [
            "generate", "sks, portrait <lora:styleA:0.5>", "--model", str(tiny_sd15_dir),
            "--lora-dir", str(loras["a"].parent), "--lora", f"{lora}:0.7",
            "--negative", "blurry", "--steps", str(STEPS), "--seed", "9", "--batch", "2",
            "--sampler", "DPM++ 2M Karras", "--out", str(out), "--device", "cpu",
        ]
    )  # fmt: skip
    assert code == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000-9.png", "00001-10.png"]
    assert capsys.readouterr().out.splitlines() == [str(f) for f in files]
    with Image.open(files[1]) as image:
        assert image.size == (64, 64)
        image.load()
    assert main(["png-info", str(files[1])]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == read_parameters(files[1])
    info = parse_parameters(printed)
    assert info.prompt == "sks, portrait <lora:styleA:0.5>, <lora:disk-lora:0.7>"
    assert (info.negative, info.seed, info.sampler, info.steps) == (
        "blurry",
        10,
        "DPM++ 2M Karras",
        STEPS,
    )
    assert set(info.lora_hashes) == {"styleA", "disk-lora"}
    assert all(len(h) == 12 for h in info.lora_hashes.values())


def test_cli_missing_lora_is_one_line(tiny_sd15_dir, loras, tmp_path, capsys) -> None:
    code = main(
        ["generate", "a <lora:missing:1>", "--model", str(tiny_sd15_dir),
         "--lora-dir", str(loras["a"].parent), "--out", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "styleA" in err and "styleB" in err


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_half_precision_unet_with_fp32_vae(family: str) -> None:
    """The GPU layout (bf16 UNet and text encoders, fp32 VAE), exercised on the CPU."""
    base = tiny_base(family)
    for module in (base.unet, *base.text_encoders):
        module.to(torch.bfloat16)
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    for options in (
        GenerateOptions(prompt="a dog", steps=STEPS, seed=1),
        GenerateOptions(prompt="a dog", steps=4, seed=1, init_image=init, strength=0.5),
    ):
        image = pixels(generate(base, options)[0].image)
        assert image.shape == (64, 64, 3) and image.std() > 1.0
    assert base.vae.dtype == torch.float32, "the shared VAE must stay fp32"
    assert base.unet.dtype == torch.bfloat16
