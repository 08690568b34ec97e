"""FLUX.1 txt2img with kohya FLUX.1 LoRAs, and the Forge infotext that describes it.

FLUX.1 is not an SD model: a transformer with flow-matching Euler steps, no negative prompt
(dev is guidance-distilled: its guidance is an input of the transformer, Forge's "Distilled
CFG Scale", and real CFG stays 1; schnell has no guidance at all). So it has its own path
beside `lorakit.inference.generate`, over diffusers' FluxPipeline built on the loaded
modules by reference (`FluxModel.pipeline`), and the same `<lora:name:weight>` prompts,
PNG naming and A1111 `parameters` text as the SD path.

LoRAs stack by concatenation: every applied file's modules join one kohya network whose
rank is the sum of theirs, each file's `lora_up` scaled by its weight × alpha/rank. The
update is then exactly Σ weightᵢ · scaleᵢ · upᵢ · downᵢ, one wrapper per layer, and a
weight of 0 leaves the file out, so the image is that of the base, bit for bit.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from lorakit.errors import LorakitError
from lorakit.families import FLUX1, NATIVE_SIDE
from lorakit.inference.generate import (
    Generated,
    inference_device,
    model_identity,
    step_callback,
)
from lorakit.inference.metadata import GenerationInfo, lora_short_hash
from lorakit.inference.prompt import LoraRef, lora_tag, parse_prompt
from lorakit.models.flux.detect import checked_variant
from lorakit.models.flux.loader import load_flux_model
from lorakit.models.flux.model import FluxModel
from lorakit.network.files import load_lora_file, module_dims
from lorakit.network.flux import CLIP_PREFIX, is_flux_lora
from lorakit.network.flux_files import flux_kohya_state
from lorakit.network.flux_train import FluxLoRANetwork
from lorakit.network.kinds import refuse_lycoris
from lorakit.progress import shown

# Forge's FLUX preset: Euler on the "Simple" schedule, 20 steps for dev, distilled guidance
# 3.5 and CFG 1; schnell is distilled to 4 steps (BFL's and diffusers' schnell examples).
SAMPLER = "Euler"
SCHEDULE = "Simple"
DEFAULT_STEPS = {"dev": 20, "schnell": 4}
DEFAULT_GUIDANCE = 3.5
# The one real-CFG scale FLUX.1 is sampled at (no negative pass).
CFG = 1.0
# The separate component files in the order Forge's infotext numbers them (`Module N`).
MODULE_FILES = ("ae", "clip_l", "t5xxl")
_DOWN, _UP, _ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"


def module_files(*sources: object) -> dict[str, Path | None]:
    """The separate component files (`MODULE_FILES`, in the infotext's order) as paths, each
    from the first of `sources` that names it (command-line arguments, then a run's
    `[model]` section); None where none does."""
    found: dict[str, Path | None] = {}
    for key in MODULE_FILES:
        value = next((given for source in sources if (given := getattr(source, key, None))), None)
        found[key] = Path(value) if value else None
    return found


@dataclass
class FluxOptions:
    """One FLUX.1 request; None = the variant's default (size 1024, steps, guidance)."""

    prompt: str
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    seed: int | None = None
    guidance: float | None = None
    batch: int = 1


def check_flux_files(path: Path, clip_l: Path | None, t5xxl: Path | None, ae: Path | None) -> str:
    """The variant, once every file the load will need was found (headers only), before
    minutes of loading."""

    def option(key: str) -> str:
        return "--" + key.replace("_", "-")

    return checked_variant(
        path,
        {"clip_l": clip_l, "t5xxl": t5xxl, "ae": ae},
        named=lambda key, value: f"{option(key)} {value}",
        fix=lambda key: f"pass {option(key)} with its file",
    )


def refuse_guidance(variant: str, guidance: float | None, source: Path) -> None:
    """schnell was distilled without a guidance input: a value for it would be ignored."""
    if variant == "schnell" and guidance is not None:
        raise LorakitError(f"{source}: FLUX.1 schnell has no guidance input; drop --guidance")


def load_flux_for_inference(
    path: Path,
    device: str | None = None,
    *,
    clip_l: Path | None = None,
    t5xxl: Path | None = None,
    ae: Path | None = None,
    config: Path | None = None,
    guidance: float | None = None,
) -> FluxModel:
    """FLUX.1 on `device` in bf16 on GPUs that have it (FLUX overflows in fp16), else fp32;
    `config` as for `load_flux_model`. The component files and a `guidance` schnell would
    ignore are refused from the headers, before minutes of loading."""
    target = inference_device(device)
    bf16 = target.type == "cuda" and torch.cuda.is_bf16_supported()
    refuse_guidance(check_flux_files(Path(path), clip_l, t5xxl, ae), guidance, Path(path))
    model = load_flux_model(
        path,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        clip_l=clip_l,
        t5xxl=t5xxl,
        ae=ae,
        config=config,
    )
    for module in (model.transformer, model.vae, *model.text_encoders):
        module.to(target)
    return model


def resolved(model: FluxModel, options: FluxOptions) -> FluxOptions:
    """`options` with the variant's defaults filled in, checked: sizes on the latent grid,
    guidance only for dev."""
    refuse_guidance(model.variant, options.guidance, model.source)
    side = NATIVE_SIDE[FLUX1.value]
    width, height = options.width or side, options.height or side
    stride = model.latent_stride
    if width % stride or height % stride:
        raise LorakitError(f"size {width}x{height} must be a multiple of {stride}; use e.g. 1024")
    dev = model.variant == "dev"
    return dataclasses.replace(
        options,
        width=width,
        height=height,
        steps=options.steps or DEFAULT_STEPS[model.variant],
        guidance=(DEFAULT_GUIDANCE if options.guidance is None else options.guidance)
        if dev
        else None,
    )


def _kohya_state(ref: LoraRef) -> dict[str, torch.Tensor]:
    """The file's tensors under kohya's FLUX.1 names (either layout on disk)."""
    state, metadata = load_lora_file(ref.path)
    source = str(ref.path)
    if not is_flux_lora(state, metadata):
        raise LorakitError(f"{source}: not a FLUX.1 LoRA; use a LoRA trained on FLUX.1")
    if ref.blocks is not None:
        raise LorakitError(f"{lora_tag(ref)}: lbw= block weights are SD's; drop them for FLUX.1")
    return flux_kohya_state(state, metadata, source)


def stacked_state(refs: Sequence[LoraRef]) -> dict[str, torch.Tensor]:
    """One kohya state whose update is the weighted sum of every LoRA's (see the module
    docstring): downs and weighted ups concatenated along the rank, alpha = rank."""
    downs: dict[str, list[torch.Tensor]] = {}
    ups: dict[str, list[torch.Tensor]] = {}
    for ref in refs:
        state = _kohya_state(ref)
        dims = module_dims(state, str(ref.path))
        refuse_lycoris((d.kind for d in dims.values()), str(ref.path))
        for name, d in dims.items():
            weight = ref.weight if name.startswith(CLIP_PREFIX) else ref.unet_weight
            if weight == 0:
                continue
            scale = weight * d.alpha / d.rank
            downs.setdefault(name, []).append(state[name + _DOWN].float())
            ups.setdefault(name, []).append(state[name + _UP].float() * scale)
    stacked: dict[str, torch.Tensor] = {}
    for name in downs:
        down = torch.cat(downs[name], dim=0)
        stacked[name + _DOWN] = down
        stacked[name + _UP] = torch.cat(ups[name], dim=1)
        stacked[name + _ALPHA] = torch.tensor(float(down.shape[0]))
    return stacked


@contextmanager
def applied_flux_loras(model: FluxModel, refs: Sequence[LoraRef]) -> Iterator[None]:
    """The LoRAs of `refs` in `model` for the duration of the block, then the base back."""
    state = stacked_state(refs)
    network = FluxLoRANetwork.from_state_dict(model, state, "the prompt's LoRAs") if state else None
    try:
        yield
    finally:
        if network is not None:
            network.remove()


def render_flux(model: FluxModel, options: FluxOptions, seed: int) -> list[Image.Image]:
    """`options.batch` images (seeds seed, seed+1, …; CPU generators, so a seed is the same
    start noise on any device) with the LoRAs currently in `model`. Options resolved."""
    pipe = model.pipeline()
    pipe.set_progress_bar_config(disable=True)
    kwargs: dict[str, object] = {
        "prompt": [options.prompt] * options.batch,
        "width": options.width,
        "height": options.height,
        "num_inference_steps": options.steps,
        "generator": [torch.Generator("cpu").manual_seed(seed + i) for i in range(options.batch)],
        "max_sequence_length": model.max_sequence_length,
    }
    if options.guidance is not None:
        kwargs["guidance_scale"] = options.guidance
    with shown() as progress, torch.no_grad():
        task = progress.add_task(f"seed {seed}", total=options.steps)
        kwargs["callback_on_step_end"] = step_callback(progress, task)
        images = pipe(**kwargs).images
        progress.remove_task(task)
    return list(images)


def flux_info(
    model: FluxModel,
    options: FluxOptions,
    seed: int,
    modules: Mapping[str, Path | None],
    lora_hashes: dict[str, str],
) -> GenerationInfo:
    """Forge's infotext for one FLUX.1 image: Euler / Simple, CFG scale 1, `Distilled CFG
    Scale` for dev, and `Module N` = the stems of the separate VAE / encoder files."""
    name, model_hash = model_identity(model.source)
    extra = {"Schedule type": SCHEDULE}
    if options.guidance is not None:
        extra["Distilled CFG Scale"] = f"{options.guidance:g}"
    files = [path for path in modules.values() if path is not None]
    extra.update({f"Module {i}": Path(path).stem for i, path in enumerate(files, start=1)})
    assert options.width is not None and options.height is not None and options.steps
    return GenerationInfo(
        prompt=options.prompt,
        steps=options.steps,
        sampler=SAMPLER,
        cfg=CFG,
        seed=seed,
        width=options.width,
        height=options.height,
        model_hash=model_hash,
        model=name,
        lora_hashes=lora_hashes,
        extra=extra,
    )


def generate_flux(
    model: FluxModel,
    options: FluxOptions,
    *,
    loras: Sequence[LoraRef] = (),
    lora_dir: Path | None = None,
    modules: Mapping[str, Path | None] | None = None,
) -> list[Generated]:
    """`options.batch` images with the prompt's `<lora:…>` tags plus `loras` applied; the
    infotext keeps the tags (and adds one per extra LoRA), as the SD path does. `modules`:
    the separate ae / clip_l / t5xxl files, named in the infotext as Forge does."""
    options = resolved(model, options)
    parsed = parse_prompt(options.prompt, lora_dir)
    refs = [*parsed.loras, *loras]
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    shown_prompt = ", ".join([options.prompt, *(lora_tag(ref) for ref in loras)])
    hashes = {ref.name: lora_short_hash(ref.path) for ref in refs}
    with applied_flux_loras(model, refs):
        images = render_flux(model, dataclasses.replace(options, prompt=parsed.text), seed)
    shown_options = dataclasses.replace(options, prompt=shown_prompt)
    return [
        Generated(image, flux_info(model, shown_options, seed + i, modules or {}, hashes))
        for i, image in enumerate(images)
    ]
