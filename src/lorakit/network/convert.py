"""Conversion between kohya-format LoRAs and the diffusers/peft format.

diffusers' own format keys each layer by its module path (`unet.<path>.lora_A.weight`,
`text_encoder.<path>.lora_B.weight`) and keeps alpha in an optional JSON metadata entry.
lorakit writes alpha folded into `lora_B` (so alpha = rank and any peft loader applies the
same scale with or without that metadata) and reads alpha back from the metadata when a
file carries it. Both directions resolve module names through the family's real module
tree, so SDXL's LDM spelling is handled exactly as when training.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch

from lorakit.errors import LorakitError
from lorakit.models import ModelFamily, empty_base_model
from lorakit.network.detect import detect_lora_family, is_kohya_format
from lorakit.network.files import load_lora_file, module_dims, save_lora_file
from lorakit.network.flux import is_flux_lora
from lorakit.network.flux_files import check_flux_file, convert_flux_file
from lorakit.network.kinds import refuse_lycoris
from lorakit.network.lora import all_sites, config_from_dims
from lorakit.network.metadata import adapter_alpha, lora_metadata
from lorakit.network.naming import UNET_PART, Site, site_index

_DIFFUSERS_SUFFIXES = {
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
}


@lru_cache(maxsize=2)
def family_sites(family: ModelFamily) -> tuple[Site, ...]:
    """`all_sites` of the full-size `family` architecture, built on the meta device."""
    return tuple(all_sites(empty_base_model(family)))


def _diffusers_key(site: Site) -> str:
    """`unet.<path>`, and for the text encoders `text_encoder.text_model.<path>`: the
    transformers 4 spelling, which diffusers 0.35 with transformers 4.57 needs (without
    the level its `get_peft_kwargs` fails with an IndexError) and newer stacks accept."""
    if site.part == UNET_PART:
        return f"{site.part}.{site.path}"
    return f"{site.part}.text_model.{site.path.removeprefix('text_model.')}"


def _strip_text_level(module_key: str) -> str:
    """transformers 4 and 5 paths of the same CLIP layer compare equal."""
    return module_key.replace(".text_model.", ".", 1)


def kohya_to_diffusers(
    state: Mapping[str, torch.Tensor], family: ModelFamily, source: str = "LoRA"
) -> dict[str, torch.Tensor]:
    """diffusers/peft-format tensors of a kohya LoRA (alpha folded into lora_B); a
    LyCORIS type (DoRA, LoHa, LoKr), which that format does not hold, is refused."""
    index = site_index(family_sites(family))
    out: dict[str, torch.Tensor] = {}
    all_dims = module_dims(state, source)
    refuse_lycoris((d.kind for d in all_dims.values()), source)
    for name, dims in all_dims.items():
        site = index.get(name)
        if site is None:
            raise LorakitError(
                f"{source}: module {name} is not part of {family.value}; check the file"
            )
        down = state[f"{name}.lora_down.weight"]
        up = state[f"{name}.lora_up.weight"]
        out[f"{_diffusers_key(site)}.lora_A.weight"] = down
        out[f"{_diffusers_key(site)}.lora_B.weight"] = (up.float() * (dims.alpha / dims.rank)).to(
            up.dtype
        )
    return out


def diffusers_to_kohya(
    state: Mapping[str, torch.Tensor],
    family: ModelFamily,
    metadata: Mapping[str, str] | None = None,
    source: str = "LoRA",
) -> dict[str, torch.Tensor]:
    """kohya-format tensors (sd-scripts names, alpha per module) of a diffusers/peft LoRA."""
    metadata = metadata or {}
    by_key = {_strip_text_level(_diffusers_key(site)): site for site in family_sites(family)}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        suffix = next((s for s in _DIFFUSERS_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            raise LorakitError(
                f"{source}: key {key} is not a diffusers LoRA weight; check the file"
            )
        pairs.setdefault(key[: -len(suffix)], {})[_DIFFUSERS_SUFFIXES[suffix]] = value
    out: dict[str, torch.Tensor] = {}
    for module_key, pair in pairs.items():
        site = by_key.get(_strip_text_level(module_key))
        if site is None or set(pair) != {"down", "up"}:
            raise LorakitError(f"{source}: {module_key} has no {family.value} layer or lacks A/B")
        rank = int(pair["down"].shape[0])
        alpha = adapter_alpha(metadata, site.part, site.path, rank)
        out[f"{site.name}.lora_down.weight"] = pair["down"]
        out[f"{site.name}.lora_up.weight"] = pair["up"]
        out[f"{site.name}.alpha"] = torch.tensor(alpha, dtype=pair["down"].dtype)
    return out


def convert_file(
    source: str | Path, target: str | Path, to: str, family: ModelFamily | str | None = None
) -> Path:
    """Convert a LoRA file to `to` ("kohya" or "diffusers") and write it atomically; a
    FLUX.1 LoRA (or `family` "flux1") goes through `network.flux_files`."""
    state, metadata = load_lora_file(source)
    check_flux_file(state, metadata, str(source), family)
    if is_flux_lora(state, metadata):
        return convert_flux_file(state, metadata, str(source), target, to)
    family = ModelFamily(family) if family else detect_lora_family(state, metadata, str(source))
    kohya = is_kohya_format(state)
    if to == "kohya":
        out = state if kohya else diffusers_to_kohya(state, family, metadata, str(source))
        meta = lora_metadata(family, config_from_dims(module_dims(out, str(source))))
        meta.update({k: v for k, v in metadata.items() if k.startswith(("ss_", "modelspec."))})
        return save_lora_file(target, out, meta)
    if to == "diffusers":
        out = kohya_to_diffusers(state, family, str(source)) if kohya else dict(state)
        keep = ("ss_", "modelspec.", "lora_adapter_metadata")
        meta = {k: v for k, v in metadata.items() if k.startswith(keep)}
        return save_lora_file(target, out, meta)
    raise LorakitError(f"conversion target {to!r} unknown; use --to kohya or --to diffusers")
