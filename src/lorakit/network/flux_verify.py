"""`lora verify` for FLUX.1 LoRAs: the names ComfyUI (and Forge, which loads FLUX.1 LoRAs
with ComfyUI's code) maps onto the model, and diffusers' FluxPipeline.load_lora_weights
putting an adapter on every layer.

Without a base the names are checked against full-size FLUX.1 (dev or schnell, from the
file's modelspec) on the meta device. diffusers is given the file in its own layout
(lorakit's exact conversion when the file is kohya's): diffusers' sd-scripts FLUX reader
splits fused layers at FLUX.1's full width only, so it cannot read a tiny model's file;
its agreement with lorakit's conversion at full size is checked in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from lorakit.errors import LorakitError
from lorakit.families import FLUX1, ModelFamily
from lorakit.models.flux.model import FluxModel, empty_flux_model
from lorakit.network.detect import is_kohya_format
from lorakit.network.files import load_lora_file, split_key
from lorakit.network.flux import comfyui_accepted_names, flux_kohya_to_diffusers, flux_module
from lorakit.network.flux_files import file_sites, flux_kohya_state, flux_variant
from lorakit.network.verify import (
    ADAPTER,
    VerifyReport,
    diffusers_unsupported,
    load_and_check,
)


def flux_base(spec: str | None, variant: str) -> tuple[FluxModel, str]:
    """(model, label) for `--base`: none or "flux1" → full-size `variant` on the meta
    device; a path → that FLUX.1 checkpoint, loaded offline in fp32."""
    if spec is None or spec == FLUX1:
        return empty_flux_model(variant), f"flux1-{variant} (empty)"
    if spec in {family.value for family in ModelFamily}:
        raise LorakitError(
            f"--base {spec}: an SD family; a FLUX.1 LoRA takes flux1 or a FLUX.1 model"
        )
    from lorakit.models.flux.loader import load_flux_model

    return load_flux_model(spec, dtype=torch.float32), spec


def flux_diffusers_ignored(
    state: Mapping[str, torch.Tensor], model: FluxModel
) -> tuple[list[str], list[str]]:
    """(diffusers module keys FluxPipeline.load_lora_weights did not apply, its error and
    warning lines) for a diffusers-layout `state`; the adapter is unloaded afterwards."""
    targets = sorted({key.rsplit(".lora_", 1)[0] for key in state})
    return load_and_check(model.pipeline(), state, targets, lambda _, t: _applied(model, t))


def _applied(model: FluxModel, target: str) -> bool:
    """Whether peft wrapped the layer at `target` with the verify adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        module = flux_module(model, target)
    except AttributeError:
        return False
    return isinstance(module, BaseTunerLayer) and ADAPTER in module.lora_A


def verify_flux_lora(path: str | Path, base: str | None = None) -> VerifyReport:
    """Check a FLUX.1 LoRA file against `base` (a FLUX.1 model path, or its full size)."""
    path = Path(path)
    state, metadata = load_lora_file(path)
    model, label = flux_base(base, flux_variant(metadata))
    kohya = flux_kohya_state(state, metadata, str(path))
    accepted = comfyui_accepted_names(model)
    report = VerifyReport(path, FLUX1, label, len({split_key(key)[0] for key in kohya}))
    report.keymap_ignored = [key for key in kohya if split_key(key)[0] not in accepted]
    report.diffusers_unsupported = diffusers_unsupported(kohya)
    if report.diffusers_unsupported is not None:
        return report
    if is_kohya_format(state):
        # Modules with no FLUX.1 layer cannot be converted: diffusers cannot place them.
        sites = file_sites(state, metadata, str(path))
        known = {site.name for site in sites}
        unknown = sorted({split_key(key)[0] for key in kohya} - known)
        placed = {k: v for k, v in kohya.items() if split_key(k)[0] in known}
        state = flux_kohya_to_diffusers(placed, sites, str(path))
        report.diffusers_ignored = unknown
    ignored, report.diffusers_errors = flux_diffusers_ignored(state, model)
    report.diffusers_ignored += ignored
    return report
