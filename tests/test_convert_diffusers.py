"""`lora convert --to diffusers` writes the portable text-encoder names and reads both.

diffusers 0.35 with transformers 4.57 fails with an IndexError in `get_peft_kwargs` on
`text_encoder.encoder.*`; `text_encoder.text_model.*` loads there and on the stack
installed here, which is what these tests load it with.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file

from lorakit.cli.main import main
from lorakit.network.config import LoRAConfig
from lorakit.network.files import load_lora_file
from lorakit.network.lora import LoRANetwork
from tests import test_network_support as support

PARTS = {"sd15": ("unet", "text_encoder"), "sdxl": ("unet", "text_encoder", "text_encoder_2")}


def _kohya_file(family: str, path: Path) -> tuple[Path, torch.Tensor, list[torch.Tensor]]:
    """A trained-looking kohya LoRA of `family` (every layer kind) and its outputs."""
    base = support.tiny_base(family)
    network = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0))
    support.randomise(network)
    unet, text = support.forward(base)
    return network.save(path, dtype=torch.float32), unet, text


def _modules(state: dict[str, torch.Tensor], part: str) -> set[str]:
    return {k.rsplit(".lora_", 1)[0] for k in state if k.startswith(f"{part}.")}


def _adapted(model: torch.nn.Module) -> int:
    return sum(isinstance(m, BaseTunerLayer) and bool(m.lora_A) for m in model.modules())


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_converted_text_encoder_keys_have_text_model_and_all_load(
    tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kohya, lora_unet, lora_text = _kohya_file(family, tmp_path / "kohya.safetensors")
    target = tmp_path / "diffusers.safetensors"
    assert main(["lora", "convert", str(kohya), str(target), "--to", "diffusers"]) == 0
    state = load_file(target)
    for part in PARTS[family][1:]:
        keys = [k for k in state if k.startswith(f"{part}.")]
        assert keys and all(k.startswith(f"{part}.text_model.encoder.layers.") for k in keys)

    base = support.tiny_base(family)
    pipe = base.pipeline()
    pipe.load_lora_weights(str(target))
    for part in PARTS[family]:
        assert _adapted(getattr(pipe, part)) == len(_modules(state, part)), part
    unet, text = support.forward(base)
    assert support.max_diff(unet, lora_unet) <= 1e-5
    assert support.max_diff(text, lora_text) <= 1e-5


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_both_text_encoder_spellings_convert_back_to_the_same_kohya_file(
    tmp_path: Path, family: str
) -> None:
    kohya, _, _ = _kohya_file(family, tmp_path / "kohya.safetensors")
    original, _ = load_lora_file(kohya)
    portable = tmp_path / "portable.safetensors"
    assert main(["lora", "convert", str(kohya), str(portable), "--to", "diffusers"]) == 0
    # transformers 5's own module paths, as other tools write them.
    flat = {k.replace(".text_model.", ".", 1): v for k, v in load_file(portable).items()}
    save_file(flat, tmp_path / "flat.safetensors")
    for source in (portable, tmp_path / "flat.safetensors"):
        back = tmp_path / f"back-{source.stem}.safetensors"
        assert main(["lora", "convert", str(source), str(back), "--to", "kohya"]) == 0
        state, _ = load_lora_file(back)
        assert set(state) == set(original)
        for key in original:
            if key.endswith(".alpha"):
                continue
            # alpha is folded into lora_up on the way out: compare what each layer adds.
            assert torch.allclose(_scaled(state, key), _scaled(original, key), atol=1e-6), key


def _scaled(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """`lora_up` times alpha / rank (the weight a loader applies); `lora_down` as is."""
    if not key.endswith("lora_up.weight"):
        return state[key]
    module = key.removesuffix(".lora_up.weight")
    rank = state[f"{module}.lora_down.weight"].shape[0]
    return state[key] * (float(state[f"{module}.alpha"]) / rank)
