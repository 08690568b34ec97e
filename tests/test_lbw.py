"""A1111's `<lora:name:TE:UNET>` multipliers and LoRA Block Weight's `lbw=` in generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.inference.generate import GenerateOptions, applied_loras, generate
from lorakit.inference.prompt import LoraRef, lora_tag, parse_prompt
from lorakit.models import BaseModel
from lorakit.network.blocks import BLOCKS_26
from lorakit.network.config import LoRAConfig
from tests.helpers.lora_tools import save_lora
from tests.test_network_support import forward, max_diff, tiny_base

# BASE, IN and M00 on, every OUT block off: 17 values for SD1.5, 12 for SDXL.
OUT_OFF = {"sd15": ",".join(["1"] * 8 + ["0"] * 9), "sdxl": ",".join(["1"] * 6 + ["0"] * 6)}
ALL_ON = {"sd15": ",".join(["1"] * 17), "sdxl": ",".join(["1"] * 12)}


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lbw")
    for family in ("sd15", "sdxl"):
        save_lora(tiny_base(family), folder / f"{family}.safetensors", LoRAConfig(4, 4.0), seed=3)
    save_lora(
        tiny_base("sd15"), folder / "locon.safetensors", LoRAConfig(4, 4.0, conv_rank=2), seed=4
    )
    return folder


def _ref(prompt: str, lora_dir: Path) -> LoraRef:
    (ref,) = parse_prompt(prompt, lora_dir).loras
    return ref


@pytest.mark.parametrize(
    ("tag", "weight", "unet", "blocks"),
    [
        ("<lora:sd15:0.8>", 0.8, None, None),
        ("<lora:sd15:1:0.5>", 1.0, 0.5, None),
        ("<lora:sd15:te=0.3:unet=0.7>", 0.3, 0.7, None),
        ("<lora:sd15:0.8:lbw=OUTALL>", 0.8, None, "OUTALL"),
        ("<lora:sd15:0.8:OUTALL>", 0.8, None, "OUTALL"),  # the extension's positional form
        ("<lora:sd15:0.6:w=1,0,0,0,0,0,1,1,1,1,1,1>", 0.6, None, "1,0,0,0,0,0,1,1,1,1,1,1"),
    ],
)
def test_tags_read_as_a1111_and_the_extension_read_them(
    lora_dir: Path, tag: str, weight: float, unet: float | None, blocks: str | None
) -> None:
    ref = _ref(f"a photo, {tag}", lora_dir)
    assert (ref.weight, ref.unet, ref.blocks) == (weight, unet, blocks)
    assert ref.unet_weight == (weight if unet is None else unet)
    assert _ref(lora_tag(ref), lora_dir) == ref  # the infotext tag reads back the same


def test_vectors_spread_over_the_26_blocks_as_the_extension_does(lora_dir: Path) -> None:
    weights = dict(
        zip(BLOCKS_26, _ref("<lora:sd15:1:lbw=OUTALL>", lora_dir).block_weights, strict=True)
    )
    assert weights["BASE"] == 1 and weights["IN01"] == weights["M00"] == 0
    assert all(weights[f"OUT{i:02d}"] == (1 if i >= 3 else 0) for i in range(12))
    xl = "<lora:sdxl:1:lbw=0.5,1,2,3,4,5,6,7,8,9,10,11>"
    weights = dict(zip(BLOCKS_26, _ref(xl, lora_dir).block_weights, strict=True))
    assert [weights[b] for b in ("BASE", "IN04", "IN05", "IN07", "IN08", "M00")] == [
        0.5,
        1,
        2,
        3,
        4,
        5,
    ]
    assert [weights[f"OUT{i:02d}"] for i in range(6)] == [6, 7, 8, 9, 10, 11]
    # Blocks a vector does not name are 0 (the extension's to26): a 17-value vector turns
    # off a LoCon's modules in IN03 (the first downsampler) and OUT00-OUT02.
    assert weights["IN01"] == weights["IN03"] == weights["OUT06"] == 0


def test_locon_modules_outside_the_17_blocks_are_off(lora_dir: Path) -> None:
    base = tiny_base("sd15")
    ref = _ref(f"<lora:locon:0.8:lbw={ALL_ON['sd15']}>", lora_dir)
    with applied_loras(base, [ref]) as (network,):
        multipliers = {m.name: m.multiplier for m in network.loras}
    assert multipliers["lora_unet_down_blocks_0_downsamplers_0_conv"] == 0  # IN03
    assert multipliers["lora_unet_up_blocks_0_resnets_0_conv1"] == 0  # OUT00
    assert multipliers["lora_unet_down_blocks_0_attentions_0_proj_in"] == 0.8  # IN01
    assert multipliers["lora_te_text_model_encoder_layers_0_mlp_fc1"] == 0.8  # BASE


def _image(base: BaseModel, prompt: str, lora_dir: Path) -> np.ndarray:
    options = GenerateOptions(prompt=prompt, steps=3, seed=2, width=64, height=64)
    return np.asarray(generate(base, options, lora_dir=lora_dir)[0].image, dtype=np.int16)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_all_ones_equal_no_vector(lora_dir: Path, family: str) -> None:
    base = tiny_base(family)
    plain = _image(base, f"a photo <lora:{family}:0.8>", lora_dir)
    ones = _image(base, f"a photo <lora:{family}:0.8:lbw={ALL_ON[family]}>", lora_dir)
    assert np.array_equal(plain, ones)
    if family == "sd15":
        assert np.array_equal(plain, _image(base, "a photo <lora:sd15:0.8:lbw=ALL>", lora_dir))
    outs_off = _image(base, f"a photo <lora:{family}:0.8:lbw={OUT_OFF[family]}>", lora_dir)
    assert np.abs(outs_off - plain).max() > 0  # the vector does act


def _copy(value: object) -> object:
    """Tensors (inside tuples and dicts too) detached and copied; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_copy(item) for item in value)
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return value


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple):
        return all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _capture(blocks: torch.nn.ModuleList) -> tuple[list, list]:
    """Record each block's inputs and output on the next forward pass."""
    records: list = []

    def hook(module, args, kwargs, output) -> None:
        records.append((module, _copy(args), _copy(kwargs), _copy(output)))

    handles = [block.register_forward_hook(hook, with_kwargs=True) for block in blocks]
    return records, handles


def _block_outputs_match_base(records: list) -> list[bool]:
    """Per recorded block: does the bare base block give the same output on the same input?"""
    with torch.no_grad():
        return [_equal(module(*args, **kwargs), out) for module, args, kwargs, out in records]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_zeroed_out_blocks_give_the_base_models_outputs(lora_dir: Path, family: str) -> None:
    base = tiny_base(family)
    ref = _ref(f"<lora:{family}:0.9:lbw={OUT_OFF[family]}>", lora_dir)
    up, up_handles = _capture(base.unet.up_blocks)
    down, down_handles = _capture(base.unet.down_blocks)
    with applied_loras(base, [ref]):
        forward(base)
    for handle in up_handles + down_handles:
        handle.remove()
    assert all(_block_outputs_match_base(up))  # OUT blocks: the LoRA is silent there
    # The IN blocks with attention still carry it: their outputs move.
    assert not all(_block_outputs_match_base(down))


def test_te_zero_leaves_the_text_encoder_alone(lora_dir: Path) -> None:
    base = tiny_base("sdxl")
    plain_unet, plain_text = forward(base)
    with applied_loras(base, [_ref("<lora:sdxl:te=0:unet=1>", lora_dir)]):
        unet, text = forward(base)
    assert max_diff(text, plain_text) == 0.0 and max_diff(unet, plain_unet) > 1e-4


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("<lora:sd15:1:lbw=NOPE>", "unknown block-weight preset"),
        ("<lora:sd15:1:NOPE>", "is not a number"),  # the third field is the UNet weight
        ("<lora:sd15:1:lbw=1,1,1>", "has 3 values"),
        ("<lora:sd15:1:lbw=R,1,1,1,1,1,1,1,1,1,1,1>", "not a number"),
        ("<lora:sd15:1:1:8>", "not supported"),
        ("<lora:sd15:1:start=3>", "not supported"),
        ("<lora:sd15:1:unet=x>", "not a number"),
    ],
)
def test_bad_tags_are_one_line_before_the_model_loads(
    lora_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tag: str, message: str
) -> None:
    with pytest.raises(LorakitError, match=message):
        parse_prompt(tag, lora_dir)
    out = tmp_path / "images"
    missing_model = tmp_path / "no-such-model"  # never reached: the prompt fails first
    args = ["generate", "--model", str(missing_model), tag, "--lora-dir", str(lora_dir)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()
