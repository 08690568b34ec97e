"""FLUX.1 LoRA files: kohya's module names (as sd-scripts' `networks/lora_flux.py` writes
them) and conversion to and from the diffusers/peft layout.

sd-scripts trains FLUX on Black Forest Labs' own model classes, so its names follow the
BFL module paths: every Linear inside a `DoubleStreamBlock` (`img_mod.lin`,
`img_attn.qkv`, `img_attn.proj`, `img_mlp.0`, `img_mlp.2` and the same five for `txt_`)
and a `SingleStreamBlock` (`linear1`, `linear2`, `modulation.lin`) under `lora_unet_`;
CLIP-L's attention and MLP Linears under `lora_te1_` (T5, trained only on request, under
`lora_te3_`). The embedders outside the blocks (`img_in`, `txt_in`, …) get no LoRA by
default. diffusers splits BFL's fused layers (`img_attn.qkv` → `attn.to_q/to_k/to_v`,
`linear1` → q/k/v and `proj_mlp`), so one kohya module is one or several diffusers ones.

kohya → diffusers is exact: every part shares `lora_down` as its `lora_A` and takes its
rows of `lora_up` (times alpha / rank, folded in as for SD) as `lora_B`. diffusers →
kohya gives the same `lora_down` back when the parts share `lora_A` (as a kohya-made
file does); parts with their own `lora_A` (a LoRA trained on the split layers) become one
module of the summed rank with a block-diagonal `lora_up`, which is what sd-scripts'
`split_qkv` option saves, and adds the same weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models.flux.convert import WEIGHT_BIAS, transformer_rules
from lorakit.models.flux.model import FluxModel
from lorakit.network.files import module_dims
from lorakit.network.keymap import CLIP_LAYER_PARTS
from lorakit.network.kinds import refuse_lycoris
from lorakit.network.metadata import adapter_alpha
from lorakit.network.naming import kohya_name, text_sites

TRANSFORMER_PREFIX = "lora_unet"
CLIP_PREFIX = "lora_te1"
BLOCKS = ("double_blocks.", "single_blocks.")
_DOWN, _UP, _ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"
# Key starts only a FLUX.1 LoRA has: kohya's BFL block names, diffusers' transformer blocks.
FLUX_KEY_STARTS = (
    "lora_unet_double_blocks_",
    "lora_unet_single_blocks_",
    "transformer.transformer_blocks.",
    "transformer.single_transformer_blocks.",
)


def is_flux_lora(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bool:
    """Whether a LoRA file was made for FLUX.1: sd-scripts' `ss_base_model_version`
    (`flux1`), modelspec's architecture (`flux-1-dev/lora`, …) or its module names."""
    if metadata.get("ss_base_model_version", "").startswith("flux1"):
        return True
    if metadata.get("modelspec.architecture", "").startswith("flux-1"):
        return True
    return any(key.startswith(FLUX_KEY_STARTS) for key in state)


@dataclass(frozen=True)
class FluxSite:
    """One kohya module: its name and the diffusers Linear(s) it covers, in row order."""

    name: str
    targets: tuple[str, ...]  # diffusers module keys, e.g. "transformer.…attn.to_q"
    rows: tuple[int, ...]  # out_features of each target: how lora_up's rows divide
    in_features: int  # lora_down's width, shared by the targets


def flux_module(model: FluxModel, key: str) -> nn.Module:
    """The module a diffusers LoRA key prefix (`transformer.…`, `text_encoder.…`) names:
    the Linear, or peft's layer around it once a LoRA is loaded."""
    part, _, path = key.partition(".")
    root = model.transformer if part == "transformer" else model.text_encoders[0]
    if part != "transformer" and not hasattr(root, "text_model"):
        path = path.removeprefix("text_model.")  # transformers 5 flattened CLIPTextModel
    return root.get_submodule(path)


def flux_layer(model: FluxModel, key: str) -> nn.Linear:
    """The Linear a diffusers LoRA key prefix names (`flux_module` before any LoRA)."""
    layer = flux_module(model, key)
    assert isinstance(layer, nn.Linear)
    return layer


def flux_sites(model: FluxModel, *, text_encoder: bool = True) -> list[FluxSite]:
    """sd-scripts' default FLUX.1 LoRA modules of `model`: CLIP-L's (when `text_encoder`),
    then those of the double and single blocks."""
    keys: list[tuple[str, tuple[str, ...]]] = []
    if text_encoder:
        for site in text_sites(model.text_encoders[:1]):
            path = site.path.removeprefix("text_model.")
            name = CLIP_PREFIX + site.name.removeprefix("lora_te")
            keys.append((name, (f"text_encoder.text_model.{path}",)))
    for rule in transformer_rules(dict(model.transformer.config)):
        if rule.bfl.startswith(BLOCKS) and rule.params == WEIGHT_BIAS:
            targets = tuple(f"transformer.{module}" for module in rule.diffusers)
            keys.append((kohya_name(TRANSFORMER_PREFIX, rule.bfl), targets))
    sites = []
    for name, targets in keys:
        layers = [flux_layer(model, target) for target in targets]
        rows = tuple(layer.out_features for layer in layers)
        sites.append(FluxSite(name, targets, rows, layers[0].in_features))
    return sites


def comfyui_accepted_names(model: FluxModel) -> set[str]:
    """The kohya module names ComfyUI maps onto a FLUX.1 model (`comfy/lora.py`,
    `model_lora_keys_unet`/`_clip`, re-derived): `lora_unet_` plus the path of every
    `….weight` of the BFL transformer with dots as underscores, and
    `lora_te1_text_model_encoder_layers_<n>_<part>` for CLIP-L's six attention/MLP layers.
    """
    names = {
        kohya_name(TRANSFORMER_PREFIX, rule.bfl)
        for rule in transformer_rules(dict(model.transformer.config))
        if any(bfl_param == "weight" for bfl_param, _ in rule.params)
    }
    layers = int(model.text_encoders[0].config.num_hidden_layers)
    names |= {
        kohya_name(f"{CLIP_PREFIX}_text_model_encoder_layers_{index}", part)
        for index in range(layers)
        for part in CLIP_LAYER_PARTS
    }
    return names


def flux_kohya_to_diffusers(
    state: Mapping[str, torch.Tensor], sites: list[FluxSite], source: str = "LoRA"
) -> dict[str, torch.Tensor]:
    """diffusers/peft tensors of a kohya FLUX.1 LoRA (alpha folded into lora_B)."""
    by_name = {site.name: site for site in sites}
    dims = module_dims(state, source)
    refuse_lycoris((d.kind for d in dims.values()), source)
    out: dict[str, torch.Tensor] = {}
    for name, dim in dims.items():
        site = by_name.get(name)
        if site is None:
            raise LorakitError(
                f"{source}: module {name} is not a FLUX.1 LoRA layer; check the file"
            )
        down, up = state[name + _DOWN], state[name + _UP]
        scaled = (up.float() * (dim.alpha / dim.rank)).to(up.dtype)
        # Each part gets its own copy: a file cannot hold tensors that share memory.
        for target, rows in zip(site.targets, scaled.split(list(site.rows)), strict=True):
            out[f"{target}.lora_A.weight"] = down.clone()
            out[f"{target}.lora_B.weight"] = rows.clone()
    return out


def flux_diffusers_to_kohya(
    state: Mapping[str, torch.Tensor],
    sites: list[FluxSite],
    metadata: Mapping[str, str] | None = None,
    source: str = "LoRA",
) -> dict[str, torch.Tensor]:
    """kohya tensors (sd-scripts names, alpha = rank) of a diffusers/peft FLUX.1 LoRA; a
    peft alpha in the file's `lora_adapter_metadata` is folded into `lora_up`."""
    # Both CLIP spellings (transformers 4 `text_model.` level or not) name the same layer.
    by_target = {
        spelling: (site, target)
        for site in sites
        for target in site.targets
        for spelling in (target, target.replace(".text_model.", ".", 1))
    }
    found: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for module in sorted({key.rsplit(".lora_", 1)[0] for key in state}):
        down = state.get(f"{module}.lora_A.weight")
        up = state.get(f"{module}.lora_B.weight")
        if module not in by_target or down is None or up is None:
            raise LorakitError(f"{source}: {module} is not a FLUX.1 LoRA layer or lacks lora_A/B")
        site, target = by_target[module]
        part, _, path = target.partition(".")
        alpha = adapter_alpha(metadata or {}, part, path, int(down.shape[0]))
        if alpha != down.shape[0]:
            up = (up.float() * (alpha / down.shape[0])).to(up.dtype)
        found.setdefault(site.name, {})[target] = (down, up)
    out: dict[str, torch.Tensor] = {}
    for site in sites:
        parts = found.get(site.name)
        if parts is None:
            continue
        down, up = _fuse(site, parts)
        out[site.name + _DOWN] = down.contiguous()
        out[site.name + _UP] = up.contiguous()
        out[site.name + _ALPHA] = torch.tensor(float(down.shape[0]))
    return out


def _fuse(
    site: FluxSite, parts: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One kohya (down, up) for the diffusers parts of `site` (a missing part adds zero)."""
    downs = [pair[0] for pair in parts.values()]
    if all(torch.equal(down, downs[0]) for down in downs):
        down = downs[0]
        ups = [
            parts[t][1] if t in parts else down.new_zeros(rows, down.shape[0])
            for t, rows in zip(site.targets, site.rows, strict=True)
        ]
        return down, torch.cat(ups)
    rank = sum(pair[0].shape[0] for pair in parts.values())
    down = torch.cat([parts[t][0] for t in site.targets if t in parts])
    up = down.new_zeros(sum(site.rows), rank)
    row = column = 0
    for target, rows in zip(site.targets, site.rows, strict=True):
        if target in parts:
            block = parts[target][1]
            up[row : row + rows, column : column + block.shape[1]] = block
            column += block.shape[1]
        row += rows
    return down, up
