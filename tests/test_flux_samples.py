"""Samples during a FLUX.1 run: the run's sd-scripts prompt file is rendered after each
sampling epoch with the LoRA being trained (the loaded model, no reload), one PNG per
prompt and epoch named as SD's, with the Forge infotext `lorakit generate` writes naming
the epoch's file; the last epoch's sample is `lorakit generate` with that file, pixel for
pixel, and sampling leaves the run's tensors as an unsampled run makes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.inference.metadata import lora_short_hash, read_parameters
from lorakit.network.files import load_lora_file
from tests import test_train_flux
from tests.test_generate_flux import PROMPT, SEED, STEPS, _generate
from tests.test_train_flux import EPOCHS, _config, _toml

# The tiny FLUX.1 dev files and the unsampled run, shared with the training tests.
flux, full = test_train_flux.flux, test_train_flux.full

EVERY = 2  # sample (and save) every second epoch
STEPS_PER_EPOCH = 3  # 3 images × 2 repeats, batch 2
SIDE = 64  # sd-scripts' smallest sample size


@pytest.fixture(scope="module")
def sampled(flux: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run of `full` with a prompt file whose SD-only options (negative, CFG) FLUX drops."""
    root = tmp_path_factory.mktemp("sampled")
    prompts = root / "prompts.txt"
    line = f"{PROMPT} --n blurry --l 7 --w {SIDE} --h {SIDE} --s {STEPS} --d {SEED}"
    prompts.write_text(f"# one prompt\n{line}\n", encoding="utf-8")
    config = _config(
        flux,
        root / "out",
        sampling={"prompts": str(prompts), "every_n_epochs": EVERY},
        saving={"save_every_n_epochs": EVERY, "save_precision": "fp32"},
    )
    assert main(["train", str(_toml(config, root / "run.toml"))]) == 0
    return root / "out"


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_one_png_per_sample_epoch_with_forge_infotext_naming_its_lora(sampled: Path) -> None:
    epochs = range(EVERY, EPOCHS + 1, EVERY)
    names = [f"tiny_e{e:06d}_s{e * STEPS_PER_EPOCH:06d}_00.png" for e in epochs]
    assert sorted(p.name for p in (sampled / "samples").iterdir()) == names
    for epoch, name in zip(epochs, names, strict=True):
        lora = sampled / f"tiny-{epoch:06d}.safetensors"
        prompt, settings = read_parameters(sampled / "samples" / name).split("\n")
        assert prompt == f"{PROMPT} <lora:{lora.stem}:1>"
        assert settings.startswith(
            f"Steps: {STEPS}, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
            f"Distilled CFG Scale: 3.5, Seed: {SEED}, Size: {SIDE}x{SIDE}, Model hash: "
        )
        assert settings.endswith(
            f'Lora hashes: "{lora.stem}: {lora_short_hash(lora)}", '
            "Module 1: ae, Module 2: clip_l, Module 3: t5xxl"
        )
    first, last = (_pixels(sampled / "samples" / name) for name in names)
    assert np.abs(last - first).max() > 0  # the live LoRA, not a frozen copy


def test_the_last_sample_is_lorakit_generate_with_that_epochs_file(
    sampled: Path, flux: dict[str, Path], tmp_path: Path
) -> None:
    """Same seed, steps and size; the file's `<lora:…:1>` tag as the infotext shows it.
    Tolerance: none (fp32 on the CPU; the live network and the loaded file measured equal)."""
    stem = f"tiny-{EPOCHS:06d}"
    sample = sampled / "samples" / f"tiny_e{EPOCHS:06d}_s{EPOCHS * STEPS_PER_EPOCH:06d}_00.png"
    size = ["--width", str(SIDE), "--height", str(SIDE)]  # after `_generate`'s own: they win
    tagged = f"{PROMPT} <lora:{stem}:1>"
    generated = _generate(flux, tmp_path, tagged, "--lora-dir", str(sampled), *size)
    assert np.array_equal(_pixels(sample), generated)


def test_sampling_leaves_the_training_run_unchanged(sampled: Path, full: Path) -> None:
    """The forked RNG and restored train flags: the same tensors as the unsampled run."""
    ours, _ = load_lora_file(sampled / "tiny.safetensors")
    theirs, _ = load_lora_file(full / "tiny.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(ours[key].equal(theirs[key]) for key in ours)
