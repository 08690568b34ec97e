"""The BFL (Black Forest Labs) transformer layout ↔ diffusers' FluxTransformer2DModel.

BFL keeps attention q/k/v fused (`img_attn.qkv`, `txt_attn.qkv`) and, in the single
blocks, q/k/v and the MLP input in one `linear1`; diffusers splits them. The split sizes
are read from the model being filled (its own shapes), not assumed: diffusers' converter
(`convert_flux_transformer_checkpoint_to_diffusers`) fixes the width at FLUX.1's 3072, so
it cannot load a narrower model. The table below is the same mapping, derived from the
config; a test checks it against diffusers' converter value for value at full width.

The same table names kohya's FLUX LoRA modules (sd-scripts names them by the BFL path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

WEIGHT_BIAS = (("weight", "weight"), ("bias", "bias"))
NORM_SCALE = (("scale", "weight"),)  # BFL's RMSNorm `scale` is diffusers' `weight`


@dataclass(frozen=True)
class Rule:
    """One BFL module and the diffusers module(s) its tensors become, split along dim 0."""

    bfl: str
    diffusers: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = WEIGHT_BIAS
    swap_halves: bool = False  # final adaLN: BFL (shift, scale), diffusers (scale, shift)


def _double_block(index: int) -> list[Rule]:
    src, dst = f"double_blocks.{index}.", f"transformer_blocks.{index}."
    attn = dst + "attn."
    return [
        Rule(src + "img_mod.lin", (dst + "norm1.linear",)),
        Rule(src + "txt_mod.lin", (dst + "norm1_context.linear",)),
        Rule(src + "img_attn.qkv", (attn + "to_q", attn + "to_k", attn + "to_v")),
        Rule(src + "txt_attn.qkv", (attn + "add_q_proj", attn + "add_k_proj", attn + "add_v_proj")),
        Rule(src + "img_attn.norm.query_norm", (attn + "norm_q",), NORM_SCALE),
        Rule(src + "img_attn.norm.key_norm", (attn + "norm_k",), NORM_SCALE),
        Rule(src + "txt_attn.norm.query_norm", (attn + "norm_added_q",), NORM_SCALE),
        Rule(src + "txt_attn.norm.key_norm", (attn + "norm_added_k",), NORM_SCALE),
        Rule(src + "img_attn.proj", (attn + "to_out.0",)),
        Rule(src + "txt_attn.proj", (attn + "to_add_out",)),
        Rule(src + "img_mlp.0", (dst + "ff.net.0.proj",)),
        Rule(src + "img_mlp.2", (dst + "ff.net.2",)),
        Rule(src + "txt_mlp.0", (dst + "ff_context.net.0.proj",)),
        Rule(src + "txt_mlp.2", (dst + "ff_context.net.2",)),
    ]


def _single_block(index: int) -> list[Rule]:
    src, dst = f"single_blocks.{index}.", f"single_transformer_blocks.{index}."
    attn = dst + "attn."
    return [
        Rule(src + "modulation.lin", (dst + "norm.linear",)),
        Rule(src + "linear1", (attn + "to_q", attn + "to_k", attn + "to_v", dst + "proj_mlp")),
        Rule(src + "norm.query_norm", (attn + "norm_q",), NORM_SCALE),
        Rule(src + "norm.key_norm", (attn + "norm_k",), NORM_SCALE),
        Rule(src + "linear2", (dst + "proj_out",)),
    ]


def transformer_rules(config: Mapping[str, object]) -> list[Rule]:
    """Every BFL module of a FluxTransformer2DModel `config`, in the BFL file's order."""
    rules = [
        Rule("img_in", ("x_embedder",)),
        Rule("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",)),
        Rule("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",)),
        Rule("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
        Rule("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
    ]
    if config.get("guidance_embeds"):
        rules += [
            Rule("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",)),
            Rule("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",)),
        ]
    rules.append(Rule("txt_in", ("context_embedder",)))
    for index in range(int(config["num_layers"])):  # type: ignore[call-overload]
        rules += _double_block(index)
    for index in range(int(config["num_single_layers"])):  # type: ignore[call-overload]
        rules += _single_block(index)
    rules += [
        Rule("final_layer.linear", ("proj_out",)),
        Rule("final_layer.adaLN_modulation.1", ("norm_out.linear",), swap_halves=True),
    ]
    return rules


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def bfl_to_diffusers(
    state: Mapping[str, torch.Tensor], rules: list[Rule], shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """diffusers tensors of the BFL transformer `state`; `shapes` are the target model's
    (`state_dict()` of it on the meta device) and give the split sizes.

    Split pieces are views of the tensor read from the file (no copy); a key the file
    lacks raises KeyError with its name, a fused tensor of another size ValueError.
    """
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        for bfl_param, param in rule.params:
            tensor = state[f"{rule.bfl}.{bfl_param}"]
            if rule.swap_halves:
                tensor = _swap_halves(tensor)
            targets = [f"{module}.{param}" for module in rule.diffusers]
            if len(targets) == 1:
                out[targets[0]] = tensor
                continue
            sizes = [shapes[target][0] for target in targets]
            if sum(sizes) != tensor.shape[0]:
                raise ValueError(
                    f"{rule.bfl}.{bfl_param} has {tensor.shape[0]} rows, the config {sum(sizes)}"
                )
            out.update(zip(targets, torch.split(tensor, sizes, dim=0), strict=True))
    return out


def diffusers_to_bfl(
    state: Mapping[str, torch.Tensor], rules: list[Rule]
) -> dict[str, torch.Tensor]:
    """The BFL file's tensors of a diffusers FluxTransformer2DModel state dict."""
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        for bfl_param, param in rule.params:
            pieces = [state[f"{module}.{param}"] for module in rule.diffusers]
            tensor = torch.cat(pieces, dim=0) if len(pieces) > 1 else pieces[0]
            out[f"{rule.bfl}.{bfl_param}"] = _swap_halves(tensor) if rule.swap_halves else tensor
    return out
