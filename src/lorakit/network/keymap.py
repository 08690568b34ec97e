"""Which LoRA keys AUTOMATIC1111, ComfyUI and InvokeAI apply: their name → layer rules.

Derived by reading (not copying) the loaders themselves:

- ComfyUI `comfy/lora.py` (`model_lora_keys_unet`, `model_lora_keys_clip`, `load_lora`) and
  `comfy/utils.py` (`unet_to_diffusers`), commit 00728eb: a UNet module is named
  `lora_unet_` + the LDM path of any weight with `.` → `_` (`input_blocks.4.1…`), or
  `lora_unet_` + its diffusers path (`unet_to_diffusers` covers resnets, attentions,
  resamplers, conv_in/out, time and add embeddings), for SD1.5 and SDXL alike. In the text
  encoders only `text_model_encoder_layers_<n>_` + q/k/v/out_proj or mlp_fc1/fc2 exist,
  prefixed `lora_te_`/`lora_te1_` (CLIP-L) or `lora_te2_` (SDXL's CLIP-G). A module is used
  only when its `.lora_up.weight` is present (`.lora_down.weight` is then read, `.alpha` is
  optional); every other key is logged as "lora key not loaded".
- AUTOMATIC1111 `extensions-builtin/Lora/networks.py` (`convert_diffusers_name_to_compvis`,
  `load_network`) and `network_lora.py`: a diffusers-style UNet name is renumbered with
  SD1's fixed layout (three input blocks per level, the first up level without attention)
  and looked up among the LDM module names; failing that, `lora_unet` → `diffusion_model`
  is looked up as it is (how SDXL's LDM names load). SD1 text takes `lora_te_` and
  `lora_te1_`, SDXL `lora_te1_` (→ `0_transformer_text_model_…`) and `lora_te2_` (→
  OpenCLIP `1_model_transformer_resblocks_…`); a module needs both up and down weights.
- InvokeAI `invokeai/backend/patches/lora_conversions/sdxl_lora_conversion_utils.py`
  (`convert_sdxl_keys_to_diffusers_format`) and `sd_lora_conversion_utils.py`: SD1 keys
  are matched as they are against its diffusers UNet and `lora_te_` text encoder, so SD1.5
  files need the diffusers spelling; SDXL keys are converted from the LDM spelling by
  prefix, `lora_te1_`/`lora_te2_` pass through, any other prefix fails the whole file, and
  so does a file mixing LDM- and diffusers-spelled UNet names.

The LyCORIS types go through the same names: A1111 (`network_hada.py`, `network_lokr.py`),
ComfyUI (`comfy/weight_adapter/loha.py`, `lokr.py`) and InvokeAI (its LoHA/LoKR layers)
take a LoHa module by `hada_w1_a`/`_w1_b`/`_w2_a`/`_w2_b`, a LoKr module by `lokr_w1` or
`lokr_w1_a`+`_b` and `lokr_w2` or `lokr_w2_a`+`_b`, each with an optional `alpha`, and
read `dora_scale` beside a LoRA, LoHa or LoKr module (DoRA).

A key counts as applied only when all three apply it, to a layer whose shape fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models import BaseModel, ModelFamily, empty_base_model
from lorakit.network.files import split_key
from lorakit.network.kinds import (
    DORA_SCALE,
    LORA_KEYS,
    SUFFIXES,
    delta_shape_fits,
    missing_keys,
    module_kind,
)
from lorakit.network.naming import (
    UNET_PREFIX,
    Site,
    kohya_name,
    ldm_block_map,
    text_sites,
    to_ldm_path,
    unet_sites,
)

CLIP_LAYER_PARTS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)
# A1111's SD1 renumbering of diffusers UNet paths (`convert_diffusers_name_to_compvis`).
_A1111_TOP = {
    "conv_in": "input_blocks.0.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
}
_A1111_RESNET = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def a1111_ldm_path(path: str) -> str | None:
    """The LDM path A1111 gives a diffusers UNet layer path (SD1 numbering), or None."""
    if path in _A1111_TOP:
        return _A1111_TOP[path]
    parts = path.split(".")
    if len(parts) < 4 or parts[0] not in ("down_blocks", "mid_block", "up_blocks"):
        return None
    if parts[0] == "mid_block":
        parts = [parts[0], "0", *parts[1:]]
    where, level, kind, index = parts[0], int(parts[1]), parts[2], int(parts[3])
    rest = ".".join(parts[4:])
    if kind == "downsamplers" and rest == "conv":
        return f"input_blocks.{3 + level * 3}.0.op"
    if kind == "upsamplers" and rest == "conv":
        return f"output_blocks.{2 + level * 3}.{2 if level > 0 else 1}.conv"
    if kind not in ("attentions", "resnets"):
        return None
    slot = 1 if kind == "attentions" else 0
    if kind == "resnets":
        rest = _A1111_RESNET.get(rest, rest)
    if where == "mid_block":
        return f"middle_block.{1 if slot else index * 2}.{rest}"
    block = 1 + level * 3 + index if where == "down_blocks" else level * 3 + index
    side = "input" if where == "down_blocks" else "output"
    return f"{side}_blocks.{block}.{slot}.{rest}"


def diffusers_spelled(name: str, site: Site) -> bool:
    """Whether `name` spells a UNet layer by its diffusers path (not the LDM one)."""
    return site.part == "unet" and name == kohya_name(UNET_PREFIX, site.path)


def _unet_names(base: BaseModel) -> dict[str, Site]:
    """The diffusers spelling where A1111 renumbers it right (all of SD1.5's); for SDXL
    also the LDM spelling (InvokeAI reads SD1.5 files only in the diffusers one)."""
    block_map = ldm_block_map(base.unet.config)
    names: dict[str, Site] = {}
    for site in unet_sites(base.unet, ldm_names=True, everything=True):
        ldm_path = to_ldm_path(site.path, block_map)
        if base.family is ModelFamily.SDXL:
            names[kohya_name(UNET_PREFIX, ldm_path)] = site
        if a1111_ldm_path(site.path) == ldm_path:
            names[kohya_name(UNET_PREFIX, site.path)] = site
    return names


def _text_names(base: BaseModel) -> dict[str, Site]:
    """`<prefix>_text_model_encoder_layers_<n>_<part>` (the sites' own sd-scripts names,
    prefix `lora_te` or `lora_te1`/`lora_te2`) for the six CLIP layers both UIs map."""
    names: dict[str, Site] = {}
    wanted = {f".{part}" for part in CLIP_LAYER_PARTS}
    for site in text_sites(base.text_encoders):
        path = site.path.removeprefix("text_model.")
        if path.startswith("encoder.layers.") and any(path.endswith(w) for w in wanted):
            names[site.name] = site
    return names


def accepted_names(base: BaseModel) -> dict[str, Site]:
    """Every module name A1111, ComfyUI and InvokeAI all map to a layer of `base`."""
    return _text_names(base) | _unet_names(base)


@lru_cache(maxsize=2)
def family_accepted_names(family: ModelFamily) -> dict[str, Site]:
    """`accepted_names` of the full-size `family` architecture (meta device, no memory)."""
    return accepted_names(empty_base_model(family))


def _expected_shapes(layer: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(layer, nn.Conv2d):
        return (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
    assert isinstance(layer, nn.Linear)
    return (rank, layer.in_features), (layer.out_features, rank)


def _fits(site: Site, suffix: str, tensor: torch.Tensor, rank: int) -> bool:
    """Whether one key of a LoRA module fits its layer (each key is judged alone)."""
    if suffix == ".alpha":
        return tensor.numel() == 1
    if suffix == DORA_SCALE:
        return tensor.numel() == site.layer.weight.shape[0]
    down, up = _expected_shapes(site.layer, rank)
    want = down if suffix == ".lora_down.weight" else up
    shape = tuple(tensor.shape)
    # A 1×1 conv accepts 2-D weights too (both UIs reshape them).
    return shape == want or (len(want) == 4 and want[2:] == (1, 1) and shape == want[:2])


def _mixed_spelling(state: Mapping[str, torch.Tensor], names: Mapping[str, Site]) -> set[str]:
    """The diffusers-spelled UNet names of a file that also uses LDM-spelled ones: InvokeAI
    refuses such a file, so they count as not applied."""
    used = {split_key(key)[0] for key in state}
    spelled = {n: diffusers_spelled(n, names[n]) for n in used if n in names}
    unet = {n for n in spelled if names[n].part == "unet"}
    diffusers = {n for n in unet if spelled[n]}
    return diffusers if diffusers and diffusers != unet else set()


def _kind(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The module's type when the UIs would take it (all its factors present), else None."""
    try:
        kind = module_kind(tensors)
    except LorakitError:
        return None
    return kind if kind and not missing_keys(kind, tensors) else None


def _key_fits(site: Site, kind: str, suffix: str, tensors: Mapping[str, torch.Tensor]) -> bool:
    """LoRA keys are judged one by one; LoHa/LoKr factors only make sense together."""
    if suffix == ".alpha":
        return tensors[suffix].numel() == 1
    if kind in ("lora", "dora"):
        rank = int(tensors[LORA_KEYS[0]].shape[0])
        return _fits(site, suffix, tensors[suffix], rank)
    return delta_shape_fits(kind, tensors, tuple(site.layer.weight.shape))


def keymap_ignored(state: Mapping[str, torch.Tensor], names: Mapping[str, Site]) -> list[str]:
    """Keys of a kohya `state` that A1111, ComfyUI or InvokeAI would not apply (module doc)."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name, suffix = split_key(key)
        grouped.setdefault(name, {})[suffix] = tensor
    kinds = {name: _kind(tensors) for name, tensors in grouped.items()}
    mixed = _mixed_spelling(state, names)
    ignored = []
    for key in state:
        name, suffix = split_key(key)
        site, kind = names.get(name), kinds[name]
        if (
            site is None
            or kind is None
            or suffix not in SUFFIXES[kind]
            or name in mixed
            or not _key_fits(site, kind, suffix, grouped[name])
        ):
            ignored.append(key)
    return ignored
