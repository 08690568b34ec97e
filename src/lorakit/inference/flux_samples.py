"""FLUX.1 sample images during training: the run's sd-scripts prompt file rendered with the
transformer and the LoRA being trained, already in memory (no reload), as the SD samples are.

The files are named as SD's (`sample_file_name`) and carry the infotext `lorakit generate`
writes for FLUX.1 (`flux_info`), so the UI, TensorBoard and `lorakit pick` read them alike.
An sd-scripts line's SD options mean nothing to FLUX.1 (no negative pass, CFG 1, Euler):
they are dropped, as sd-scripts' own FLUX sampling drops them; sizes are rounded down to
the latent grid (16 px for FLUX.1) as sd-scripts rounds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from lorakit.inference.flux_generate import FluxOptions, flux_info, render_flux, resolved
from lorakit.inference.metadata import lora_short_hash, save_png
from lorakit.inference.samples import DEFAULT_SEED, SamplePrompt, eval_mode, sample_file_name
from lorakit.models.flux.model import FluxModel
from lorakit.progress import shown


def flux_options(model: FluxModel, sample: SamplePrompt) -> FluxOptions:
    """The FLUX.1 request of one sample line: its prompt, steps and size (on the latent
    grid), the variant's guidance."""
    stride = model.latent_stride
    width, height = (max(stride, side - side % stride) for side in (sample.width, sample.height))
    return resolved(model, FluxOptions(sample.prompt, width, height, sample.steps))


def generate_flux_samples(
    model: FluxModel,
    prompts: Sequence[SamplePrompt],
    out_dir: Path,
    *,
    step: int,
    epoch: int,
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    modules: Mapping[str, Path | None],
    lora: Path | None = None,
) -> list[Path]:
    """Render `prompts` with the LoRA now injected into `model`; return the PNGs.

    `dtype` is the run's compute dtype: below fp32 the render runs under autocast, as the
    training steps do (the VAE stays fp32, fp8 base weights upcast per call).
    `lora`, the file just written with these very weights, is named in the infotext
    (`<lora:stem:1>` and its hash) so the image says which file makes it. Train/eval flags
    are restored and the global RNG forked, so the run's random stream does not change.
    """
    low_precision = dtype != torch.float32
    rng_devices = [device] if device.type == "cuda" else []
    roots = (model.transformer, model.vae, *model.text_encoders)
    hashes = {lora.stem: lora_short_hash(lora)} if lora is not None else {}
    tag = f" <lora:{lora.stem}:1>" if lora is not None else ""
    paths: list[Path] = []
    with torch.random.fork_rng(devices=rng_devices), eval_mode(*roots), shown() as board:
        task = board.add_task("samples", total=len(prompts))
        for index, sample in enumerate(prompts):
            seed = sample.seed if sample.seed is not None else DEFAULT_SEED + index
            options = flux_options(model, sample)
            with torch.autocast(device.type, dtype=dtype, enabled=low_precision):
                image = render_flux(model, options, seed)[0]
            shown_options = dataclasses.replace(options, prompt=options.prompt + tag)
            info = flux_info(model, shown_options, seed, modules, hashes)
            path = Path(out_dir) / sample_file_name(name, epoch, step, index)
            paths.append(save_png(image, path, info))
            board.advance(task)
        board.remove_task(task)
    return paths
