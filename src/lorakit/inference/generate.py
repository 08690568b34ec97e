"""txt2img and img2img on a loaded base model, with any number of LoRAs stacked.

Pipelines are diffusers' own, built over the base model's modules by reference
(`BaseModel.pipeline`), so generating never copies a multi-GB UNet and sees whatever LoRA
networks are injected at that moment — the same code serves `lorakit generate`, the
grid, and sample images during training.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image
from PIL import Image
from rich.progress import TaskID

from lorakit.errors import LorakitError
from lorakit.inference.metadata import GenerationInfo, lora_short_hash, save_png
from lorakit.inference.prompt import LoraRef, lora_tag, parse_prompt
from lorakit.inference.samplers import canonical_sampler_name, make_scheduler
from lorakit.inference.vae import decode_latents, encode_image
from lorakit.models import BaseModel, file_hashes, load_base_model
from lorakit.network.blocks import apply_multipliers
from lorakit.network.lora import LoRANetwork
from lorakit.progress import Board, shown


@dataclass
class GenerateOptions:
    """One generation request in A1111 terms; `width`/`height` None = the model's native size.

    The first eight fields are those of an sd-scripts sample prompt, in its order, so
    `SamplePrompt` is this class with sd-scripts' defaults.
    """

    prompt: str
    negative: str = ""
    width: int | None = None
    height: int | None = None
    steps: int = 20
    seed: int | None = None
    cfg: float = 7.0
    sampler: str = "Euler a"
    batch: int = 1
    init_image: Image.Image | None = None
    strength: float = 0.75


@dataclass
class Generated:
    """An image and the infotext that reproduces it."""

    image: Image.Image
    info: GenerationInfo


@contextmanager
def applied_loras(base: BaseModel, refs: Sequence[LoraRef]) -> Iterator[list[LoRANetwork]]:
    """Inject each LoRA at its weights (te, unet, blocks) for the duration of the block,
    then restore the base."""
    networks: list[LoRANetwork] = []
    try:
        for ref in refs:
            networks.append(LoRANetwork.from_file(base, ref.path, ref.weight))
            blocks = ref.block_weights
            apply_multipliers(networks[-1], base.unet.config, ref.weight, ref.unet_weight, blocks)
        yield networks
    finally:
        for network in reversed(networks):
            network.remove()


def inference_dtype(device: torch.device) -> torch.dtype:
    """UNet and text encoders: bf16 on GPUs that have it, else fp16; fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def inference_device(device: str | None) -> torch.device:
    """`device` (CUDA when present by default), refused in one line when absent."""
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if target.type == "cuda" and not torch.cuda.is_available():
        raise LorakitError("--device cuda was given but no CUDA GPU is visible; use --device cpu")
    return target


def load_for_inference(
    path: str | Path, device: str | None = None, config: Path | None = None
) -> BaseModel:
    """Load a base model onto `device` (CUDA when present) in `inference_dtype`.

    The VAE stays fp32 whatever the rest uses (SDXL's overflows in fp16; it is small).
    """
    target = inference_device(device)
    base = load_base_model(path, dtype=inference_dtype(target), config=config)
    for module in (base.unet, base.vae, *base.text_encoders):
        module.to(target)
    base.vae.float()  # not `.to(dtype)`: diffusers warns on every dtype cast through `to`
    return base


def native_size(base: BaseModel) -> int:
    """The square size the base was trained at (512 for SD1.5, 1024 for SDXL)."""
    return int(base.unet.config.sample_size) * base.vae_scale_factor


def resolve_size(base: BaseModel, width: int | None, height: int | None) -> tuple[int, int]:
    """Explicit or native size, checked against the VAE's stride."""
    size = (width or native_size(base), height or native_size(base))
    stride = base.vae_scale_factor
    if size[0] % stride or size[1] % stride:
        raise LorakitError(f"size {size[0]}x{size[1]} must be a multiple of {stride}; use e.g. 512")
    return size


@functools.lru_cache(maxsize=8)
def _hash_file(path: str, mtime: float, size: int) -> str | None:
    return file_hashes(path).get("autov2")


def model_identity(source: str | Path) -> tuple[str, str | None]:
    """A1111's `Model` (file stem) and `Model hash` (autov2) of a base; no hash for folders.

    Cached by path, size and mtime: sample images during training must not re-hash a
    multi-GB checkpoint each time.
    """
    source = Path(source)
    if not source.is_file():
        return source.name, None
    stat = source.stat()
    return source.stem, _hash_file(str(source), stat.st_mtime, stat.st_size)


def _pipeline(base: BaseModel, sampler: str, img2img: bool) -> Any:
    pipe = base.pipeline(make_scheduler(sampler, base.scheduler_config))
    if img2img:
        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def step_callback(progress: Board, task: TaskID) -> Callable[..., dict[str, Any]]:
    def advance(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        progress.advance(task)
        return kwargs

    return advance


def render(
    base: BaseModel, options: GenerateOptions, seed: int, progress: Board | None = None
) -> list[Image.Image]:
    """Run the pipeline once for `options.batch` images with seeds seed, seed+1, ….

    Uses the LoRA networks currently injected into `base` and the prompt text as given
    (tags already removed). CPU generators make a seed give the same start noise on any
    device. The VAE passes run in fp32 outside the pipeline (`lorakit.inference.vae`).
    Denoising steps advance a task on `progress` when one is given (the caller owns the
    live display, so sampling inside a training bar never nests two).
    """
    width, height = resolve_size(base, options.width, options.height)
    img2img = options.init_image is not None
    pipe = _pipeline(base, options.sampler, img2img)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(options.batch)]
    kwargs: dict[str, Any] = {
        "prompt": [options.prompt] * options.batch,
        "negative_prompt": [options.negative] * options.batch,
        "num_inference_steps": options.steps,
        "guidance_scale": options.cfg,
        "generator": generators,
    }
    if img2img:
        kwargs["image"] = encode_image(base, pipe, options.init_image, (width, height), seed)
        kwargs["strength"] = options.strength
    else:
        kwargs.update(width=width, height=height)
    if progress is not None:
        total = max(1, int(options.steps * options.strength)) if img2img else options.steps
        task = progress.add_task(f"seed {seed}", total=total)
        kwargs["callback_on_step_end"] = step_callback(progress, task)
    latents = pipe(**kwargs, output_type="latent").images
    if progress is not None:
        progress.remove_task(task)
    return decode_latents(base, pipe, latents)


def generation_info(
    base: BaseModel,
    options: GenerateOptions,
    seed: int,
    *,
    prompt: str | None = None,
    lora_hashes: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> GenerationInfo:
    """The A1111 infotext of one image made from `options` (prompt as shown, if given)."""
    width, height = resolve_size(base, options.width, options.height)
    model, model_hash = model_identity(base.source)
    return GenerationInfo(
        prompt=options.prompt if prompt is None else prompt,
        negative=options.negative,
        steps=options.steps,
        sampler=canonical_sampler_name(options.sampler),
        cfg=options.cfg,
        seed=seed,
        width=width,
        height=height,
        model_hash=model_hash,
        model=model,
        denoising_strength=options.strength if options.init_image is not None else None,
        lora_hashes=lora_hashes or {},
        extra=extra or {},
    )


def generate(
    base: BaseModel,
    options: GenerateOptions,
    *,
    loras: Sequence[LoraRef] = (),
    lora_dir: Path | None = None,
) -> list[Generated]:
    """Generate `options.batch` images with the prompt's `<lora:…>` tags plus `loras` applied.

    The infotext keeps the prompt's tags and adds a tag for each extra LoRA, so pasting it
    into A1111 applies the same LoRAs.
    """
    canonical_sampler_name(options.sampler)
    parsed = parse_prompt(options.prompt, lora_dir)
    refs = [*parsed.loras, *loras]
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    shown_prompt = ", ".join([options.prompt, *(lora_tag(ref) for ref in loras)])
    hashes = {ref.name: lora_short_hash(ref.path) for ref in refs}
    text_options = dataclasses.replace(options, prompt=parsed.text)
    with applied_loras(base, refs), shown() as progress:
        images = render(base, text_options, seed, progress)
    return [
        Generated(
            image, generation_info(base, options, seed + i, prompt=shown_prompt, lora_hashes=hashes)
        )
        for i, image in enumerate(images)
    ]


def save_generated(results: Sequence[Generated], out_dir: Path) -> list[Path]:
    """Save as `NNNNN-seed.png` (A1111's numbering), continuing after existing files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = len(list(out_dir.glob("*.png")))
    return [
        save_png(result.image, out_dir / f"{start + i:05d}-{result.info.seed}.png", result.info)
        for i, result in enumerate(results)
    ]
