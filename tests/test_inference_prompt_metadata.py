"""Prompt tags, A1111 infotext, sampler names and sd-scripts prompt files (no rendering)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lorakit.errors import LorakitError
from lorakit.inference.generate import model_identity
from lorakit.inference.metadata import (
    GenerationInfo,
    format_parameters,
    lora_short_hash,
    parse_parameters,
    read_parameters,
    save_png,
)
from lorakit.inference.prompt import parse_lora_arg, parse_prompt
from lorakit.inference.samplers import SAMPLERS, canonical_sampler_name, make_scheduler
from lorakit.inference.samples import parse_prompt_file
from lorakit.models.configs import CONFIG_ROOT

# An infotext as A1111 wrote it, quoted in guide 002.
A1111_TEXT = (
    "1girl, CharacterAI, dark black skin, photo, HDR, <lora:CharacterAI-1-A-000006:0.8>\n"
    "Negative prompt: Fake, fat, child, 3D render\n"
    "Steps: 35, Sampler: DPM++ 3M SDE Karras, CFG scale: 5.5, Seed: 277659558, "
    "Size: 640x768, Model hash: e73d775ff9, Model: theTrualityEngine_trualityENGINEPRO"
)


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "Lora"
    (folder / "sub").mkdir(parents=True)
    (folder / "MyStyle.safetensors").write_bytes(b"x")
    (folder / "sub" / "face-000004.safetensors").write_bytes(b"x")
    (folder / "notes.txt").write_text("not a lora")
    return folder


def test_tags_resolve_case_insensitively_and_leave_the_text(lora_dir: Path) -> None:
    parsed = parse_prompt(
        "<lora:mystyle:0.7>, a photo of sks, <lora:FACE-000004> smiling", lora_dir
    )
    assert parsed.text == "a photo of sks, smiling"
    assert [(ref.path.name, ref.weight) for ref in parsed.loras] == [
        ("MyStyle.safetensors", 0.7),
        ("face-000004.safetensors", 1.0),
    ]


def test_prompt_without_tags_is_unchanged() -> None:
    assert parse_prompt("a,b  c").text == "a,b  c"


def test_missing_lora_is_one_line_listing_found(lora_dir: Path) -> None:
    with pytest.raises(LorakitError) as info:
        parse_prompt("a photo <lora:missing:1>", lora_dir)
    message = str(info.value)
    assert "\n" not in message
    assert "'missing'" in message
    assert "MyStyle" in message and "face-000004" in message


def test_bad_tag_weight_is_an_error(lora_dir: Path) -> None:
    with pytest.raises(LorakitError, match="not a number"):
        parse_prompt("<lora:mystyle:strong>", lora_dir)


def test_lora_argument_with_and_without_weight(lora_dir: Path) -> None:
    path = lora_dir / "MyStyle.safetensors"
    assert parse_lora_arg(f"{path}:0.25").weight == 0.25
    assert parse_lora_arg(str(path)).weight == 1.0
    with pytest.raises(LorakitError, match="does not exist"):
        parse_lora_arg(str(lora_dir / "nope.safetensors:1"))


def test_infotext_round_trips_through_a_png(tmp_path: Path) -> None:
    info = GenerationInfo(
        prompt="sks, portrait <lora:face:0.8>",
        negative="blurry, lowres",
        steps=12,
        sampler="DPM++ 2M Karras",
        cfg=6.5,
        seed=1234,
        width=512,
        height=768,
        model_hash="0123456789",
        model="v1-5",
        denoising_strength=0.55,
        lora_hashes={"face": "abcdefabcdef", "style": "0123456789ab"},
    )
    path = save_png(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", info)
    text = read_parameters(path)
    assert text.splitlines()[1] == "Negative prompt: blurry, lowres"
    assert 'Lora hashes: "face: abcdefabcdef, style: 0123456789ab"' in text
    assert parse_parameters(text) == info


def test_parses_a1111_infotext() -> None:
    info = parse_parameters(A1111_TEXT)
    assert info.prompt.endswith("<lora:CharacterAI-1-A-000006:0.8>")
    assert info.negative == "Fake, fat, child, 3D render"
    assert (info.steps, info.sampler, info.cfg, info.seed) == (
        35,
        "DPM++ 3M SDE Karras",
        5.5,
        277659558,
    )
    assert (info.width, info.height, info.model_hash) == (640, 768, "e73d775ff9")
    assert format_parameters(info) == A1111_TEXT


def test_png_without_parameters_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(LorakitError, match="no 'parameters'"):
        read_parameters(path)


def test_unknown_sampler_lists_valid_names() -> None:
    with pytest.raises(LorakitError) as info:
        canonical_sampler_name("Euler b")
    assert "Euler a" in str(info.value) and "DPM++ 2M Karras" in str(info.value)


def test_sd_scripts_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text(
        "# comment line\n"
        "\n"
        "1girl, photo, 8K --w 512--h 640--s 35  --n Anime, Cartoon, child\n"
        "sks dog --D 7 --l 5.5 --ss k_euler --W 770 --cn pose.png --s 5000\n",
        encoding="utf-8",
    )
    first, second = parse_prompt_file(path)
    assert (first.prompt, first.negative) == ("1girl, photo, 8K", "Anime, Cartoon, child")
    assert (first.width, first.height, first.steps, first.seed) == (512, 640, 35, None)
    # As sd-scripts: keys in any case, other models' options dropped, steps ≤ 1000,
    # sizes rounded down to a multiple of 8.
    assert (second.prompt, second.seed, second.cfg, second.sampler) == ("sks dog", 7, 5.5, "Euler")
    assert (second.width, second.steps) == (768, 1000)


def test_bad_prompt_file_option_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("ok\nsks --w wide\n", encoding="utf-8")
    with pytest.raises(LorakitError, match=r"prompts\.txt:2"):
        parse_prompt_file(path)


def test_model_identity_is_a1111_autov2(tmp_path: Path) -> None:
    checkpoint = tmp_path / "myModel_v2.safetensors"
    data = bytes(range(256)) * 300
    checkpoint.write_bytes(data)
    assert model_identity(checkpoint) == ("myModel_v2", hashlib.sha256(data).hexdigest()[:10])
    assert model_identity(tmp_path) == (tmp_path.name, None)


def test_lora_hash_follows_a1111(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.arange(10, dtype=torch.float32)}, plain)
    data = plain.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert lora_short_hash(plain) == hashlib.sha256(data[8 + header :]).hexdigest()[:12]
    stamped = tmp_path / "stamped.safetensors"
    save_file({"w": torch.zeros(2)}, stamped, metadata={"sshs_model_hash": "f" * 64})
    assert lora_short_hash(stamped) == "f" * 12
    pickled = tmp_path / "old.pt"
    torch.save({"w": torch.ones(3)}, pickled)
    assert lora_short_hash(pickled) == hashlib.sha256(pickled.read_bytes()).hexdigest()[:12]


def test_lora_hash_of_a_broken_file_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    with pytest.raises(LorakitError) as excinfo:
        lora_short_hash(broken)
    message = str(excinfo.value)
    assert "\n" not in message and str(broken) in message


def test_reads_a1111_schedule_type_as_one_sampler_name() -> None:
    # A1111 1.9+ splits the sampler and its schedule; lorakit's names join them.
    text = (
        "sks portrait\nNegative prompt: blurry\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )
    info = parse_parameters(text)
    assert info.sampler == "DPM++ 2M Karras"
    assert info.extra == {"Version": "v1.10.1"}
    automatic = parse_parameters(text.replace("Karras", "Automatic"))
    assert automatic.sampler == "DPM++ 2M" and "Schedule type" not in automatic.extra


def test_lora_hash_names_lose_separators_like_a1111() -> None:
    info = GenerationInfo(prompt="p", lora_hashes={"face, v2": "abcdefabcdef", "x:y": "0" * 12})
    line = format_parameters(info).splitlines()[-1]
    assert line.endswith('Lora hashes: "face v2: abcdefabcdef, xy: 000000000000"')


# The diffusers documentation's "A1111/k-diffusion → Diffusers" table, written out here.
DIFFUSERS_TABLE = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM++ 2S a": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ 2S a Karras": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    # k-diffusion's DPM++ SDE itself (diffusers' port), not the table's single-step ODE.
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
}


def test_every_sampler_builds_and_follows_the_diffusers_table() -> None:
    config = json.loads((CONFIG_ROOT / "sd15" / "scheduler" / "scheduler_config.json").read_text())
    assert set(DIFFUSERS_TABLE) <= set(SAMPLERS)
    for name in SAMPLERS:
        scheduler = make_scheduler(name, config)
        assert scheduler.config.num_train_timesteps == config["num_train_timesteps"]
        assert scheduler.config.beta_schedule == config["beta_schedule"], name
        cls, settings = DIFFUSERS_TABLE.get(name, (type(scheduler).__name__, {}))
        assert type(scheduler).__name__ == cls, name
        for key, value in settings.items():
            assert scheduler.config[key] == value, (name, key)
    assert make_scheduler("dpm++ 2m karras", config).config.use_karras_sigmas is True
