"""Module names on the full SD1.5/SDXL architectures equal sd-scripts' (meta device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorakit.models import ModelFamily, empty_base_model
from lorakit.network.config import LoRAConfig
from lorakit.network.lora import LoRANetwork, network_sites
from lorakit.network.naming import ldm_block_map, to_ldm_path
from lorakit.network.verify import verify_lora

# Names checked by hand against sd-scripts' rules: prefix + module path with "." → "_";
# SD1.5 on the diffusers path, SDXL on sd-scripts' own SAI/LDM UNet (input_blocks.<n>.<i>,
# ResBlock in_layers.2 / emb_layers.1 / out_layers.3 / skip_connection, Downsample op),
# CLIP on transformers 4's text_model.encoder.layers.<n> path.
SD15_NAMES = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0",
    "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj",
    "lora_unet_up_blocks_1_attentions_0_proj_out",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te_text_model_encoder_layers_11_mlp_fc2",
}
SDXL_NAMES = {
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
    "lora_unet_input_blocks_4_1_proj_in",
    "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2",
    "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_v",
    "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_k",
    "lora_unet_output_blocks_5_1_proj_out",
    "lora_te1_text_model_encoder_layers_11_self_attn_out_proj",
    "lora_te2_text_model_encoder_layers_31_mlp_fc1",
}
SDXL_CONV_NAMES = {
    "lora_unet_input_blocks_1_0_in_layers_2",
    "lora_unet_input_blocks_4_0_emb_layers_1",
    "lora_unet_input_blocks_4_0_skip_connection",
    "lora_unet_input_blocks_3_0_op",
    "lora_unet_middle_block_2_out_layers_3",
    "lora_unet_output_blocks_2_2_conv",
    "lora_unet_output_blocks_8_0_out_layers_3",
}


def _names(family: ModelFamily, conv: bool = False) -> tuple[list[str], list[str]]:
    base = empty_base_model(family)
    sites = network_sites(base, conv=conv)
    unet = [s.name for s in sites if s.part == "unet"]
    text = [s.name for s in sites if s.part != "unet"]
    return unet, text


@pytest.mark.parametrize(
    ("family", "unet_count", "text_count", "samples"),
    [(ModelFamily.SD15, 192, 72, SD15_NAMES), (ModelFamily.SDXL, 722, 264, SDXL_NAMES)],
)
def test_full_architecture_module_names(
    family: ModelFamily, unet_count: int, text_count: int, samples: set[str]
) -> None:
    unet, text = _names(family)
    assert (len(unet), len(text)) == (unet_count, text_count)
    assert len(set(unet + text)) == unet_count + text_count
    assert samples <= set(unet + text)
    if family is ModelFamily.SDXL:
        assert not any("down_blocks" in n or "up_blocks" in n or "mid_block" in n for n in unet)


def test_sdxl_conv_modules_use_ldm_resblock_names() -> None:
    unet, _ = _names(ModelFamily.SDXL, conv=True)
    assert set(unet) >= SDXL_CONV_NAMES
    # SDXL's ResBlocks: input_blocks 1, 2, 4, 5, 7, 8; middle_block 0, 2; output_blocks 0-8;
    # plus two downsamplers (op) and two upsamplers (conv).
    extra = set(unet) - set(_names(ModelFamily.SDXL)[0])
    resblocks = {n.rsplit("_", 3)[0] for n in extra if "in_layers_2" in n}
    assert len(resblocks) == 6 + 2 + 9
    assert sum("_op" in n for n in extra) == 2
    assert sum(n.endswith("_conv") for n in extra) == 2


@pytest.mark.parametrize(
    ("family", "shape"), [(ModelFamily.SD15, (4, 320, 1, 1)), (ModelFamily.SDXL, (4, 640))]
)
def test_proj_in_weights_follow_the_layer_kind(family: ModelFamily, shape: tuple[int, ...]) -> None:
    """SD1.5's proj_in is a 1×1 conv (4-D LoRA weights), SDXL's a Linear (2-D)."""
    base = empty_base_model(family)
    network = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=1))
    name = network.names[
        [s.path for s in network.sites].index(
            "down_blocks.0.attentions.0.proj_in"
            if family is ModelFamily.SD15
            else "down_blocks.1.attentions.0.proj_in"
        )
    ]
    assert tuple(network.kohya_state_dict()[f"{name}.lora_down.weight"].shape) == shape
    network.remove()


def test_ldm_block_map_follows_the_config() -> None:
    sdxl = empty_base_model(ModelFamily.SDXL).unet.config
    mapping = ldm_block_map(sdxl)
    assert mapping["down_blocks.2.attentions.1"] == "input_blocks.8.1"
    assert mapping["down_blocks.1.downsamplers.0"] == "input_blocks.6.0"
    assert mapping["up_blocks.1.upsamplers.0"] == "output_blocks.5.2"
    assert to_ldm_path("up_blocks.2.resnets.2.conv_shortcut", mapping) == (
        "output_blocks.8.0.skip_connection"
    )
    three_layers = dict(sdxl) | {"layers_per_block": 3}
    assert ldm_block_map(three_layers)["down_blocks.1.attentions.0"] == "input_blocks.5.1"


def test_verify_without_base_uses_the_full_family_architecture(tmp_path: Path) -> None:
    """A full-size rank-1 SD1.5 LoRA passes; the same keys at a wrong width are reported."""
    base = empty_base_model(ModelFamily.SD15)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for site in network_sites(base):
        layer = site.layer
        down_shape = (1, *layer.weight.shape[1:])
        up_shape = (layer.weight.shape[0], 1, *([1, 1] if layer.weight.dim() == 4 else []))
        state[f"{site.name}.lora_down.weight"] = torch.randn(down_shape, generator=generator)
        state[f"{site.name}.lora_up.weight"] = torch.randn(up_shape, generator=generator)
        state[f"{site.name}.alpha"] = torch.tensor(1.0)
    good = tmp_path / "full.safetensors"
    save_file(state, good)
    report = verify_lora(good)
    assert report.family is ModelFamily.SD15 and report.modules == 264
    assert report.ok, report
    name = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    state[f"{name}.lora_down.weight"] = torch.zeros(1, 1024)  # an SD2 text width
    bad = tmp_path / "bad.safetensors"
    save_file(state, bad, {"ss_base_model_version": "sd_v1"})
    report = verify_lora(bad)
    assert report.keymap_ignored == [f"{name}.lora_down.weight"]
    assert not report.ok
