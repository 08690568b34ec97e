"""Write a diffusers folder as a single-file checkpoint in the original SD/SGM (LDM) layout.

diffusers ships only LDM→diffusers converters, so tests that need a `.safetensors` like
`v1-5-pruned-emaonly` or `sd_xl_base_1.0` build one here. The tables below invert
`diffusers.loaders.single_file_utils` (its `DIFFUSERS_TO_LDM_MAPPING` is reused as is);
each rule maps a diffusers module prefix to its LDM prefix plus renames inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file

from lorakit.models import BaseModel, ModelFamily, empty_base_model
from lorakit.network.tensorfile import Entry, write_streamed

Renames = tuple[tuple[str, str], ...]
Rule = tuple[str, str, Renames]  # diffusers prefix, LDM prefix, renames in the rest

UNET_RESNET: Renames = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
VAE_RESNET: Renames = (("conv_shortcut.", "nin_shortcut."),)
VAE_ATTENTION: Renames = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
OPEN_CLIP_LAYER: Renames = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.", "attn."),
)

LDM_PREFIXES = {"unet": "model.diffusion_model.", "vae": "first_stage_model."}
TE_PREFIXES = {
    "sd15": ("cond_stage_model.transformer.",),
    "sdxl": ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."),
}


def _exact(mapping: dict[str, str]) -> list[Rule]:
    return [(diffusers, ldm, ()) for diffusers, ldm in mapping.items()]


def unet_rules(config: dict[str, Any]) -> list[Rule]:
    """Inverse of `convert_ldm_unet_checkpoint` for a UNet2DConditionModel config."""
    per = config["layers_per_block"] + 1
    rules = _exact(DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"])
    if config.get("addition_embed_type") == "text_time":
        rules += _exact(DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"])
    for i in range(len(config["down_block_types"])):
        for j in range(per - 1):
            n = 1 + i * per + j
            rules.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0.", UNET_RESNET))
            rules.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1.", ()))
        rules.append(
            (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{i * per + per}.0.op.", ())
        )
    rules += [
        ("mid_block.resnets.0.", "middle_block.0.", UNET_RESNET),
        ("mid_block.attentions.0.", "middle_block.1.", ()),
        ("mid_block.resnets.1.", "middle_block.2.", UNET_RESNET),
    ]
    for i, block_type in enumerate(config["up_block_types"]):
        for j in range(per):
            rules.append(
                (f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * per + j}.0.", UNET_RESNET)
            )
            rules.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * per + j}.1.", ()))
        slot = 2 if block_type.startswith("CrossAttn") else 1
        rules.append(
            (
                f"up_blocks.{i}.upsamplers.0.conv.",
                f"output_blocks.{i * per + per - 1}.{slot}.conv.",
                (),
            )
        )
    return rules


def vae_rules(config: dict[str, Any]) -> list[Rule]:
    """Inverse of `convert_ldm_vae_checkpoint` (decoder up blocks run in reverse order)."""
    rules = _exact(DIFFUSERS_TO_LDM_MAPPING["vae"])
    blocks = len(config["down_block_types"])
    for i in range(blocks):
        rules.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.", VAE_RESNET))
        rules.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", ())
        )
        up = blocks - 1 - i
        rules.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{up}.block.", VAE_RESNET))
        rules.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{up}.upsample.", ()))
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.mid_block.resnets.{k}.", f"{part}.mid.block_{k + 1}.", VAE_RESNET)
            for k in (0, 1)
        ]
        rules.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", VAE_ATTENTION))
    return rules


def open_clip_rules() -> list[Rule]:
    """Inverse of `convert_open_clip_checkpoint` except the q/k/v fusion (see `_fuse_qkv`)."""
    layers = DIFFUSERS_TO_LDM_MAPPING["openclip"]["layers"]
    rules = [(key, value, ()) for key, value in layers.items() if key != "text_projection.weight"]
    rules.append(("text_model.encoder.layers.", "transformer.resblocks.", OPEN_CLIP_LAYER))
    return rules


def apply_rules(state: dict[str, torch.Tensor], rules: list[Rule]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        diffusers_prefix, ldm_prefix, renames = next(r for r in rules if key.startswith(r[0]))
        rest = key[len(diffusers_prefix) :]
        for old, new in renames:
            rest = rest.replace(old, new)
        out[ldm_prefix + rest] = value
    return out


def _vae_state(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = apply_rules(vae.state_dict(), vae_rules(dict(vae.config)))
    # LDM's VAE mid attention uses 1×1 convs where diffusers uses linears.
    return {
        key: value[:, :, None, None] if ".mid.attn_1." in key and value.ndim == 2 else value
        for key, value in state.items()
    }


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP keeps q, k and v in one `in_proj` tensor, stacked in that order."""
    out = {}
    for key, value in state.items():
        if ".self_attn.q_proj." in key:
            parts = [state[key.replace("q_proj", name)] for name in ("q_proj", "k_proj", "v_proj")]
            out[key.replace("q_proj.", "in_proj_")] = torch.cat(parts)
        elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            out[key] = value
    return out


def _open_clip_state(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = dict(text_encoder.state_dict())
    projection = state.pop("text_projection.weight")
    state = apply_rules(_fuse_qkv(state), open_clip_rules())
    state["text_projection"] = projection.T.contiguous()
    return state


def _clip_state(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    # transformers 5 dropped CLIPTextModel's `text_model.` level; LDM files keep it.
    return {
        (key if key.startswith("text_model.") else f"text_model.{key}"): value
        for key, value in text_encoder.state_dict().items()
        if not key.endswith("position_ids")
    }


def ldm_state_dict(
    pipe: DiffusionPipeline | SimpleNamespace, family: str
) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and text encoder(s) under their SD/SGM single-file keys
    (`pipe`: a diffusers pipeline or anything with the same module attributes)."""
    state: dict[str, torch.Tensor] = {}
    unet = apply_rules(pipe.unet.state_dict(), unet_rules(dict(pipe.unet.config)))
    state.update({LDM_PREFIXES["unet"] + k: v for k, v in unet.items()})
    state.update({LDM_PREFIXES["vae"] + k: v for k, v in _vae_state(pipe.vae).items()})
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    for prefix, encoder in zip(TE_PREFIXES[family], encoders, strict=True):
        part = _open_clip_state(encoder) if prefix.endswith(".model.") else _clip_state(encoder)
        state.update({prefix + k: v for k, v in part.items()})
    return {key: value.detach().contiguous() for key, value in state.items()}


def base_ldm_state_dict(base: BaseModel) -> dict[str, torch.Tensor]:
    """`ldm_state_dict` of a lorakit BaseModel (e.g. the full-size one on the meta device)."""
    pipe = SimpleNamespace(
        unet=base.unet,
        vae=base.vae,
        text_encoder=base.text_encoders[0],
        text_encoder_2=base.text_encoders[-1],
    )
    return ldm_state_dict(pipe, base.family.value)


def write_ldm_checkpoint(folder: Path, out: Path, family: str) -> Path:
    """Write the diffusers `folder` as an LDM single file: safetensors, or `.ckpt` (torch.save)."""
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    state = ldm_state_dict(pipe, family)
    if out.suffix == ".safetensors":
        save_file(state, out)
    else:
        torch.save({"state_dict": state}, out)
    return out


def write_random_ldm(
    out: Path, family: str, dtype: torch.dtype = torch.float16, seed: int = 0
) -> Path:
    """A full-size `family` single file in the released key layout with random weights
    (normal, std 0.02), written tensor by tensor so the model never sits in memory whole.

    The keys and shapes come from the bundled configs on the meta device, so the file is
    what `v1-5-pruned-emaonly` or `sd_xl_base_1.0` would be, values aside.
    """
    layout = base_ldm_state_dict(empty_base_model(ModelFamily(family)))
    return write_random(out, layout, dtype, seed)


def write_random(
    out: Path, layout: Mapping[str, torch.Tensor], dtype: torch.dtype, seed: int
) -> Path:
    """`out` with the keys and shapes of `layout` (meta tensors are fine) and random
    normal (std 0.02) values, written one tensor at a time."""
    entries = [Entry(key, dtype, tuple(value.shape)) for key, value in layout.items()]
    generator = torch.Generator().manual_seed(seed)
    tensors = (
        torch.empty(entry.shape, dtype=dtype).normal_(0.0, 0.02, generator=generator)
        for entry in entries
    )
    return write_streamed(out, entries, tensors)
