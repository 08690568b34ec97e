"""Module names on the full SD1.5/SDXL architectures equal sd-scripts' (meta device)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorakit.models import BaseModel, ModelFamily, empty_base_model
from lorakit.network.config import LoRAConfig
from lorakit.network.keymap import a1111_ldm_path, family_accepted_names, keymap_ignored
from lorakit.network.lora import LoRANetwork, network_sites
from lorakit.network.naming import ldm_block_map, to_ldm_path
from lorakit.network.verify import verify_lora
from tests.helpers.ldm import apply_rules, base_ldm_state_dict, unet_rules

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
# sd-scripts' conv_dim on SD1.5 (diffusers ResnetBlock2D / Downsample2D / Upsample2D).
SD15_CONV_NAMES = {
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_unet_down_blocks_0_resnets_0_time_emb_proj",
    "lora_unet_down_blocks_1_resnets_0_conv_shortcut",
    "lora_unet_down_blocks_2_downsamplers_0_conv",
    "lora_unet_mid_block_resnets_1_conv2",
    "lora_unet_up_blocks_0_upsamplers_0_conv",
    "lora_unet_up_blocks_3_resnets_2_conv_shortcut",
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


@pytest.fixture(scope="module")
def bases() -> dict[ModelFamily, BaseModel]:
    return {family: empty_base_model(family) for family in (ModelFamily.SD15, ModelFamily.SDXL)}


def _names(base: BaseModel, conv: bool = False) -> tuple[list[str], list[str]]:
    sites = network_sites(base, conv=conv)
    unet = [s.name for s in sites if s.part == "unet"]
    text = [s.name for s in sites if s.part != "unet"]
    return unet, text


@pytest.mark.parametrize(
    ("family", "unet_count", "text_count", "samples"),
    [(ModelFamily.SD15, 192, 72, SD15_NAMES), (ModelFamily.SDXL, 722, 264, SDXL_NAMES)],
)
def test_full_architecture_module_names(
    bases: dict, family: ModelFamily, unet_count: int, text_count: int, samples: set[str]
) -> None:
    unet, text = _names(bases[family])
    assert (len(unet), len(text)) == (unet_count, text_count)
    assert len(set(unet + text)) == unet_count + text_count
    assert samples <= set(unet + text)
    if family is ModelFamily.SDXL:
        assert not any("down_blocks" in n or "up_blocks" in n or "mid_block" in n for n in unet)


@pytest.mark.parametrize(
    ("family", "count", "samples"),
    [(ModelFamily.SD15, 278, SD15_CONV_NAMES), (ModelFamily.SDXL, 788, SDXL_CONV_NAMES)],
)
def test_conv_dim_module_counts_and_names(
    bases: dict, family: ModelFamily, count: int, samples: set[str]
) -> None:
    """sd-scripts with conv_dim: + every ResNet conv/time-emb/shortcut and the resamplers.

    SD1.5: 22 ResNets × 3 + 14 shortcuts + 3 down + 3 up samplers = 86 more;
    SDXL: 17 ResNets × 3 + 11 shortcuts + 2 + 2 = 66 more (counted on sd-scripts' classes).
    """
    unet, _ = _names(bases[family], conv=True)
    assert len(unet) == len(set(unet)) == count
    assert samples <= set(unet)


def test_sdxl_conv_modules_use_ldm_resblock_names(bases: dict) -> None:
    unet, _ = _names(bases[ModelFamily.SDXL], conv=True)
    # SDXL's ResBlocks: input_blocks 1, 2, 4, 5, 7, 8; middle_block 0, 2; output_blocks 0-8;
    # plus two downsamplers (op) and two upsamplers (conv).
    extra = set(unet) - set(_names(bases[ModelFamily.SDXL])[0])
    resblocks = {n.rsplit("_", 3)[0] for n in extra if "in_layers_2" in n}
    assert len(resblocks) == 6 + 2 + 9
    assert sum("_op" in n for n in extra) == 2
    assert sum(n.endswith("_conv") for n in extra) == 2


@pytest.mark.parametrize(
    ("family", "shape"), [(ModelFamily.SD15, (4, 320, 1, 1)), (ModelFamily.SDXL, (4, 640))]
)
def test_proj_in_weights_follow_the_layer_kind(
    bases: dict, family: ModelFamily, shape: tuple[int, ...]
) -> None:
    """SD1.5's proj_in is a 1×1 conv (4-D LoRA weights), SDXL's a Linear (2-D)."""
    base = bases[family]
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


def test_ldm_block_map_follows_the_config(bases: dict) -> None:
    sdxl = bases[ModelFamily.SDXL].unet.config
    mapping = ldm_block_map(sdxl)
    assert mapping["down_blocks.2.attentions.1"] == "input_blocks.8.1"
    assert mapping["down_blocks.1.downsamplers.0"] == "input_blocks.6.0"
    assert mapping["up_blocks.1.upsamplers.0"] == "output_blocks.5.2"
    assert to_ldm_path("up_blocks.2.resnets.2.conv_shortcut", mapping) == (
        "output_blocks.8.0.skip_connection"
    )
    three_layers = dict(sdxl) | {"layers_per_block": 3}
    assert ldm_block_map(three_layers)["down_blocks.1.attentions.0"] == "input_blocks.5.1"


def test_verify_without_base_uses_the_full_family_architecture(bases: dict, tmp_path: Path) -> None:
    """A full-size rank-1 SD1.5 LoRA passes; the same keys at a wrong width are reported."""
    base = bases[ModelFamily.SD15]
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


# ComfyUI `comfy/lora.py` LORA_CLIP_MAP: the only text-encoder layers it maps.
COMFY_CLIP_PARTS = (
    "mlp_fc1",
    "mlp_fc2",
    "self_attn_k_proj",
    "self_attn_q_proj",
    "self_attn_v_proj",
    "self_attn_out_proj",
)
# (prefix, LDM text-encoder key prefix) per family, as `model_lora_keys_clip` pairs them.
COMFY_TEXT = {
    ModelFamily.SD15: [
        ("lora_te", "cond_stage_model.transformer."),
        ("lora_te1", "cond_stage_model.transformer."),
    ],
    ModelFamily.SDXL: [
        ("lora_te1", "conditioner.embedders.0.transformer."),
        ("lora_te2", "conditioner.embedders.1.model."),
    ],
}


def _unet_ldm_paths(base: BaseModel) -> dict[str, str]:
    """diffusers → LDM path of every UNet weight, from the test helper's LDM writer (which
    diffusers' own converter reads back strictly, see test_models_configs)."""
    rules = unet_rules(dict(base.unet.config))
    paths = {}
    for key, value in base.unet.state_dict().items():
        if key.endswith(".weight"):
            (ldm,) = apply_rules({key: value}, rules)
            paths[key.removesuffix(".weight")] = ldm.removesuffix(".weight")
    return paths


def _comfyui_names(base: BaseModel, family: ModelFamily) -> set[str]:
    """ComfyUI's accepted module names, rebuilt from a real LDM single-file key list.

    As `model_lora_keys_unet` does: `lora_unet_` + every UNet weight's LDM path, and (via
    `unet_to_diffusers`) its diffusers path, `.` → `_`; as `model_lora_keys_clip`: the six
    CLIP layer names per encoder layer found in the checkpoint's text-encoder keys.
    """
    keys = base_ldm_state_dict(base)
    names = {
        f"lora_unet_{path}".replace(".", "_")
        for pair in _unet_ldm_paths(base).items()
        for path in pair
    }
    for prefix, ldm_prefix in COMFY_TEXT[family]:
        layers = {
            int(found.group(1))
            for k in keys
            if k.startswith(ldm_prefix)
            and (found := re.search(r"\.(?:layers|resblocks)\.(\d+)\.", k))
        }
        assert layers  # the checkpoint really holds this encoder's layers
        names |= {
            f"{prefix}_text_model_encoder_layers_{n}_{part}"
            for n in layers
            for part in COMFY_CLIP_PARTS
        }
    return names


@pytest.mark.parametrize("family", [ModelFamily.SD15, ModelFamily.SDXL])
def test_every_name_lorakit_writes_is_one_comfyui_and_a1111_map(
    bases: dict, family: ModelFamily
) -> None:
    base = bases[family]
    comfy = _comfyui_names(base, family)
    written = {s.name for s in network_sites(base, conv=True)}
    assert written <= comfy, sorted(written - comfy)[:5]
    accepted = family_accepted_names(family)
    assert written <= set(accepted) <= comfy
    # A1111 maps a diffusers-spelled UNet name through SD1's numbering: it must land on the
    # layer's real LDM path, or the name is not accepted.
    ldm = _unet_ldm_paths(base)
    for name, site in accepted.items():
        if site.part == "unet" and name == f"lora_unet_{site.path}".replace(".", "_"):
            assert a1111_ldm_path(site.path) == ldm[site.path], name


def test_keymap_reports_what_a1111_or_comfyui_would_drop() -> None:
    names = family_accepted_names(ModelFamily.SDXL)
    good = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    state = {
        f"{good}.lora_down.weight": torch.zeros(2, 768),
        f"{good}.lora_up.weight": torch.zeros(768, 2),
        f"{good}.alpha": torch.tensor(1.0),
        # SDXL files must say lora_te1_: A1111 maps lora_te_ only for SD1 models.
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 768),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(3072, 2),
        # Neither UI maps the text projection.
        "lora_te2_text_projection.lora_down.weight": torch.zeros(2, 1280),
        "lora_te2_text_projection.lora_up.weight": torch.zeros(1280, 2),
        # A down weight without its up weight is never applied.
        "lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(2, 640),
        # A1111 renumbers this diffusers name as SD1's (output_blocks.2.1), a wrong layer.
        "lora_unet_up_blocks_0_upsamplers_0_conv.lora_down.weight": torch.zeros(2, 1280, 3, 3),
        "lora_unet_up_blocks_0_upsamplers_0_conv.lora_up.weight": torch.zeros(1280, 2, 1, 1),
    }
    ignored = keymap_ignored(state, names)
    assert ignored == list(state)[3:]
    up = "lora_unet_up_blocks_1_attentions_0_proj_out"  # the diffusers spelling A1111 maps
    diffusers = {
        f"{up}.lora_down.weight": torch.zeros(2, 640),
        f"{up}.lora_up.weight": torch.zeros(640, 2),
    }
    assert keymap_ignored(diffusers, names) == []
    ldm = "lora_unet_input_blocks_4_1_proj_in"
    mixed = diffusers | {
        f"{ldm}.lora_down.weight": torch.zeros(2, 640),
        f"{ldm}.lora_up.weight": torch.zeros(640, 2),
    }
    # InvokeAI refuses an SDXL file that mixes the two UNet spellings.
    assert keymap_ignored(mixed, names) == list(diffusers)


def test_sd15_keymap_wants_the_diffusers_spelling_and_lora_te() -> None:
    """InvokeAI matches SD1 names as they are: LDM-spelled UNet names and `lora_te1_` are
    ignored there, though A1111 and ComfyUI would take them."""
    names = family_accepted_names(ModelFamily.SD15)
    pairs = {
        "lora_unet_down_blocks_1_attentions_0_proj_in": (640, 640),
        "lora_te_text_model_encoder_layers_3_mlp_fc2": (3072, 768),
        "lora_unet_input_blocks_4_1_proj_in": (640, 640),
        "lora_te1_text_model_encoder_layers_3_mlp_fc2": (3072, 768),
    }
    state = {}
    for name, (fan_in, fan_out) in pairs.items():
        conv = (1, 1) if "proj_in" in name else ()
        state[f"{name}.lora_down.weight"] = torch.zeros(4, fan_in, *conv)
        state[f"{name}.lora_up.weight"] = torch.zeros(fan_out, 4, *conv)
    assert keymap_ignored(state, names) == list(state)[4:]
