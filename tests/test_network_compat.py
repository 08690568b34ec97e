"""Acceptance: files lorakit saves load in diffusers with identical outputs, and back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from lorakit.network.config import LoRAConfig
from lorakit.network.convert import convert_file
from lorakit.network.files import load_lora_file
from lorakit.network.lora import LoRANetwork
from lorakit.network.verify import verify_lora
from tests import test_network_support as support


# With conv_rank every module kind is covered: Linear, 1×1 conv (SD1.5 proj_in/out),
# 3×3 convs, the stride-2 downsampler and the ResNet time-embedding Linear.
@pytest.mark.parametrize(("family", "conv_rank"), [("sd15", 3), ("sdxl", 2)])
def test_diffusers_load_lora_weights_matches_injected_network(
    tmp_path: Path, family: str, conv_rank: int | None
) -> None:
    base = support.tiny_base(family)
    plain_unet, plain_text = support.forward(base)
    config = LoRAConfig(rank=4, alpha=2.0, conv_rank=conv_rank, conv_alpha=1.5)
    network = LoRANetwork.inject(base, config, multiplier=1.0)
    support.randomise(network)
    lora_unet, lora_text = support.forward(base)
    assert support.max_diff(lora_unet, plain_unet) > 1e-3
    assert support.max_diff(lora_text, plain_text) > 1e-3
    path = network.save(tmp_path / "net.safetensors", dtype=torch.float32)

    other = support.tiny_base(family)
    other.pipeline().load_lora_weights(str(path))
    diffusers_unet, diffusers_text = support.forward(other)
    assert support.max_diff(diffusers_unet, lora_unet) <= 1e-5
    assert support.max_diff(diffusers_text, lora_text) <= 1e-5

    report = verify_lora(path, base=support.tiny_base(family))
    assert report.ok, report


def _peft_lora(base_family: str, tmp_path: Path) -> tuple[Path, torch.Tensor, list[torch.Tensor]]:
    """A diffusers-format LoRA written by diffusers/peft themselves, and its outputs."""
    base = support.tiny_base(base_family)
    unet_config = LoraConfig(
        r=4,
        lora_alpha=6,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"],
        init_lora_weights=False,
    )
    text_config = LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        init_lora_weights=False,
    )
    torch.manual_seed(7)
    base.unet.add_adapter(unet_config)
    for encoder in base.text_encoders:
        encoder.add_adapter(text_config)
    unet, text = support.forward(base)
    pipe = base.pipeline()
    layers = {"unet_lora_layers": get_peft_model_state_dict(base.unet)}
    layers["text_encoder_lora_layers"] = get_peft_model_state_dict(base.text_encoders[0])
    meta = {"unet_lora_adapter_metadata": unet_config.to_dict()}
    meta["text_encoder_lora_adapter_metadata"] = text_config.to_dict()
    if len(base.text_encoders) == 2:
        layers["text_encoder_2_lora_layers"] = get_peft_model_state_dict(base.text_encoders[1])
        meta["text_encoder_2_lora_adapter_metadata"] = text_config.to_dict()
    pipe.save_lora_weights(tmp_path / "peft", **layers, **meta)
    return tmp_path / "peft" / "pytorch_lora_weights.safetensors", unet, text


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_diffusers_format_lora_converted_to_kohya_matches(tmp_path: Path, family: str) -> None:
    source, peft_unet, peft_text = _peft_lora(family, tmp_path)
    kohya = convert_file(source, tmp_path / "kohya.safetensors", "kohya")
    state, metadata = load_lora_file(kohya)
    assert all(key.startswith(("lora_unet_", "lora_te")) for key in state)
    assert metadata["ss_base_model_version"].startswith("sdxl" if family == "sdxl" else "sd_v1")

    base = support.tiny_base(family)
    LoRANetwork.from_file(base, kohya)
    unet, text = support.forward(base)
    assert support.max_diff(unet, peft_unet) <= 1e-5
    assert support.max_diff(text, peft_text) <= 1e-5
    assert verify_lora(kohya, base=support.tiny_base(family)).ok

    back = convert_file(kohya, tmp_path / "back.safetensors", "diffusers")
    fresh = support.tiny_base(family)
    fresh.pipeline().load_lora_weights(str(back))
    unet_back, text_back = support.forward(fresh)
    assert support.max_diff(unet_back, peft_unet) <= 1e-5
    assert support.max_diff(text_back, peft_text) <= 1e-5


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_unet_only_lora_verifies(tmp_path: Path, family: str) -> None:
    """text_encoder_lr = 0 is common: diffusers' "no LoRA keys for CLIPTextModel" notice is
    not an ignored key, while a key it really drops still fails the check."""
    base = support.tiny_base(family)
    network = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=2.0), multiplier=1.0)
    support.randomise(network)
    path = network.save(tmp_path / "net.safetensors", dtype=torch.float32)
    state, metadata = load_lora_file(path)
    unet_only = {k: v for k, v in state.items() if k.startswith("lora_unet_")}
    assert len(unet_only) < len(state)
    save_file(unet_only, tmp_path / "unet.safetensors", metadata)
    report = verify_lora(tmp_path / "unet.safetensors", base=support.tiny_base(family))
    assert report.ok, report
