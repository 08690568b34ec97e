"""FLUX.1 LoRA files through `lora convert` and `lora inspect`, and their metadata.

The SD commands route a file here when `is_flux_lora` says it was made for FLUX.1 (or
`--family flux1` says so). Module names and the kohya ⇄ diffusers split come from the
full-size FLUX.1 architecture on the meta device (`network.flux`); a file narrower than
FLUX.1 (the tiny test model, a pruned variant) keeps FLUX.1's proportions, so the rows
each fused layer (`img_attn.qkv`, `linear1`) splits into are scaled to the file's width.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from lorakit.errors import LorakitError
from lorakit.families import FLUX1
from lorakit.models.flux.flow import FlowConfig
from lorakit.models.flux.model import VARIANTS, empty_flux_model
from lorakit.network.config import LoRAConfig
from lorakit.network.detect import is_kohya_format
from lorakit.network.files import module_dims, save_lora_file
from lorakit.network.flux import (
    FluxSite,
    flux_diffusers_to_kohya,
    flux_kohya_to_diffusers,
    flux_sites,
    is_flux_lora,
)
from lorakit.network.lora import config_from_dims
from lorakit.network.metadata import base_lora_metadata

# sd-scripts' `sai_model_spec.py`: IMPL_FLUX, and FLUX.1's training side.
IMPLEMENTATION = "https://github.com/black-forest-labs/flux"
RESOLUTION = 1024
# `ss_network_module` of sd-scripts' FLUX.1 LoRAs (`--network_module networks.lora_flux`).
NETWORK_MODULE = "networks.lora_flux"
# SD's noise-prediction settings: FLUX.1 training refuses them, so their SD defaults would
# only claim a CLIP skip (modelspec.encoder_layer) and noise offset the run never had.
SD_ONLY_KEYS = ("clip_skip", "noise_offset", "min_snr_gamma", "v_parameterization")
_GROUPS = (
    ("lora_unet_double_blocks_", "double blocks"),
    ("lora_unet_single_blocks_", "single blocks"),
    ("lora_te1_", "text encoder 1 (CLIP-L)"),
    ("lora_te3_", "text encoder 3 (T5)"),
)


def flux_lora_metadata(variant: str, config: LoRAConfig, **training: object) -> dict[str, str]:
    """`ss_*` + `modelspec.*` metadata of a FLUX.1 LoRA as sd-scripts writes it:
    `ss_base_model_version = flux1`, architecture `flux-1-dev/lora` or `flux-1-schnell/lora`,
    `ss_network_module = networks.lora_flux`. Keyword arguments as for `lora_metadata`
    (`flow_metadata` gives the training keys). FLUX.1 predicts a flow velocity, neither
    epsilon nor v, so no `modelspec.prediction_type` is written."""
    if variant not in VARIANTS:
        raise LorakitError(f"FLUX.1 variant {variant!r} unknown; use {' or '.join(VARIANTS)}")
    training.setdefault("network_module", NETWORK_MODULE)
    for key in SD_ONLY_KEYS:
        training.pop(key, None)
        training.pop(f"ss_{key}", None)
    architecture = f"flux-1-{variant}/lora"
    meta = base_lora_metadata(FLUX1, architecture, IMPLEMENTATION, RESOLUTION, config, **training)
    meta.pop("modelspec.prediction_type")
    return meta


def flow_metadata(flow: FlowConfig) -> dict[str, object]:
    """The keys sd-scripts' `FluxNetworkTrainer.update_metadata` (flux_train_network.py)
    writes, for the way lorakit trains: the `[flux]` settings (`ss_timestep_sampling`,
    `ss_sigmoid_scale`, `ss_discrete_flow_shift`, `ss_guidance_scale`; lorakit's sampling
    names are sd-scripts' own), and what lorakit always does: predicts the velocity as is
    (`raw`), weights every σ alike (sd-scripts' default `uniform`) and encodes T5 without an
    attention mask (`encode_prompts`). sd-scripts' `ss_logit_mean`/`ss_logit_std`/
    `ss_mode_scale` only tune weighting schemes lorakit does not offer: left out."""
    return {
        "ss_timestep_sampling": flow.sampling,
        "ss_sigmoid_scale": flow.sigmoid_scale,
        "ss_discrete_flow_shift": flow.flow_shift,
        "ss_guidance_scale": flow.guidance,
        "ss_model_prediction_type": "raw",
        "ss_weighting_scheme": "uniform",
        "ss_apply_t5_attn_mask": False,
    }


def flux_variant(metadata: Mapping[str, str]) -> str:
    """The variant a file's modelspec names (`flux-1-schnell/lora`); dev otherwise, as
    sd-scripts writes dev's architecture for any FLUX.1 it cannot tell apart."""
    return "schnell" if "schnell" in metadata.get("modelspec.architecture", "") else "dev"


@lru_cache(maxsize=2)
def full_size_sites(variant: str) -> tuple[FluxSite, ...]:
    """sd-scripts' FLUX.1 LoRA modules (CLIP-L's included) of the full-size `variant`."""
    return tuple(flux_sites(empty_flux_model(variant)))


def _fit(site: FluxSite, state: Mapping[str, torch.Tensor], source: str) -> FluxSite:
    """`site` at the width the file has: a one-layer module takes lora_up's rows as they
    are; a fused one (q/k/v, linear1) keeps FLUX.1's proportions, checked against lora_up."""
    up = state.get(f"{site.name}.lora_up.weight")
    if len(site.targets) == 1:
        return site if up is None else FluxSite(site.name, site.targets, (up.shape[0],), 0)
    down_keys = [f"{site.name}.lora_down.weight", *(f"{t}.lora_A.weight" for t in site.targets)]
    width = next((int(state[k].shape[1]) for k in down_keys if k in state), site.in_features)
    if width != site.in_features:
        if any(rows * width % site.in_features for rows in site.rows):
            raise LorakitError(f"{source}: {site.name} is {width} wide, not a FLUX.1 width")
        rows = tuple(rows * width // site.in_features for rows in site.rows)
        site = FluxSite(site.name, site.targets, rows, width)
    if up is not None and up.shape[0] != sum(site.rows):
        raise LorakitError(
            f"{source}: {site.name} has {up.shape[0]} output rows, FLUX.1's layer "
            f"{sum(site.rows)} at width {width}; check the file"
        )
    return site


def file_sites(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str
) -> list[FluxSite]:
    """FLUX.1's LoRA modules fitted to the widths of the file."""
    return [_fit(site, state, source) for site in full_size_sites(flux_variant(metadata))]


def flux_kohya_state(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str
) -> dict[str, torch.Tensor]:
    """The tensors of a FLUX.1 LoRA of either layout under kohya's names."""
    if is_kohya_format(state):
        return dict(state)
    return flux_diffusers_to_kohya(state, file_sites(state, metadata, source), metadata, source)


def flux_group(name: str) -> str:
    """A readable group of a kohya FLUX.1 module name ("double blocks", ...)."""
    return next(
        (group for prefix, group in _GROUPS if name.startswith(prefix)), "transformer other"
    )


def is_flux_file(path: str | Path) -> bool:
    """Whether a LoRA file is FLUX.1's, from its header alone (keys and metadata); False
    for what safetensors cannot read, which the SD path then reports in one line."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return is_flux_lora(dict.fromkeys(handle.keys()), handle.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def check_flux_file(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str, family: str | None
) -> None:
    """One line when `--family` contradicts what the file is (FLUX.1 or not)."""
    flux = is_flux_lora(state, metadata)
    if flux and family not in (None, FLUX1):
        raise LorakitError(f"{source}: a FLUX.1 LoRA, not {family}; drop --family or use flux1")
    if not flux and family == FLUX1:
        raise LorakitError(f"{source}: not a FLUX.1 LoRA (no FLUX.1 keys or metadata)")


def convert_flux_file(
    state: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    source: str,
    target: str | Path,
    to: str,
) -> Path:
    """Write a FLUX.1 LoRA in the `to` layout ("kohya" or "diffusers"), atomically. sd-scripts'
    and modelspec keys are kept; a kohya file gets fresh ones for what the source lacks."""
    sites = file_sites(state, metadata, source)
    kohya = is_kohya_format(state)
    if to == "kohya":
        out = dict(state) if kohya else flux_diffusers_to_kohya(state, sites, metadata, source)
        config = config_from_dims(module_dims(out, source))
        meta = flux_lora_metadata(flux_variant(metadata), config)
        meta.update({k: v for k, v in metadata.items() if k.startswith(("ss_", "modelspec."))})
        return save_lora_file(target, out, meta)
    if to == "diffusers":
        out = flux_kohya_to_diffusers(state, sites, source) if kohya else dict(state)
        keep = ("ss_", "modelspec.", "lora_adapter_metadata")
        return save_lora_file(
            target, out, {k: v for k, v in metadata.items() if k.startswith(keep)}
        )
    raise LorakitError(f"conversion target {to!r} unknown; use --to kohya or --to diffusers")
