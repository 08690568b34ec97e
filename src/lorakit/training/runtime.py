"""Everything a run needs, built once: accelerator, model + LoRA, optimizer, caches.

The base model is frozen before the LoRA is injected, so only LoRA parameters of the parts
with a learning rate above zero train. LoRA parameters stay fp32 whatever the frozen
weights' dtype (mixed precision runs them under autocast), and the VAE runs in fp32 so
SDXL's VAE cannot overflow to NaN while caching latents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from lorakit.errors import LorakitError
from lorakit.models import BaseModel, load_base_model
from lorakit.models.flux.model import FluxModel
from lorakit.network.config import LoRAConfig
from lorakit.network.files import load_lora_file
from lorakit.network.lora import LoRANetwork
from lorakit.threads import ThreadChoice, choose_threads
from lorakit.training.caching import (
    LatentCache,
    TextCache,
    TextDisk,
    TextRow,
    file_identity,
    text_encoder,
)
from lorakit.training.config import TrainConfig
from lorakit.training.data import Items, TrainItem
from lorakit.training.optim import make_optimizer, make_scheduler

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def effective_precision(config: TrainConfig) -> tuple[str, list[str]]:
    """The mixed precision this machine runs: fp16 falls back to fp32 without a GPU."""
    precision = config.training.mixed_precision
    if precision == "fp16" and not torch.cuda.is_available():
        return "no", ["fp16 needs a CUDA GPU; training in fp32 on this machine"]
    return precision, []


def precision_text(config: TrainConfig, precision: str) -> str:
    """What actually runs (the LoRA's `ss_mixed_precision` says the same), and why when
    it is not what the config asked for."""
    weights = DTYPE_NAMES[weight_dtype(config, precision)]
    text = "no (fp32)" if precision == "no" else f"{precision} (autocast, {weights} weights)"
    asked = config.training.mixed_precision
    if precision != asked:
        text += f"; training.mixed_precision {asked} needs a CUDA GPU"
    return text


def cpu_threads(config: TrainConfig, unet: torch.nn.Module | None) -> ThreadChoice | None:
    """Torch's thread count for a run without CUDA (None with CUDA: the GPU does the work).
    `unet` None (a dry run) gives the rule instead of a count."""
    if torch.cuda.is_available():
        return None
    parameters = None if unet is None else sum(p.numel() for p in unet.parameters())
    return choose_threads(config.training.cpu_threads, parameters)


def make_accelerator(config: TrainConfig) -> tuple[Accelerator, list[str]]:
    """An accelerator for this machine; fp16 falls back to fp32 where there is no GPU."""
    precision, notes = effective_precision(config)
    # accelerate keeps process-wide singletons; a process that trains twice (a notebook, the
    # tests) must clear them, or the second run keeps the first run's precision and
    # accumulation (a changed mixed_precision even raises). accelerate 1.x has no public
    # reset: its own test base class (`accelerate.test_utils.AccelerateTestCase`) calls these
    # two. The PartialState (process group, device) is kept: it stays valid for the process.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=config.training.grad_accum,
        cpu=not torch.cuda.is_available(),
    )
    return accelerator, notes


def weight_dtype(config: TrainConfig, precision: str) -> torch.dtype:
    if config.model.dtype != "auto":
        if precision == "no" and config.model.dtype != "fp32":
            raise LorakitError(
                f"model.dtype {config.model.dtype} needs training.mixed_precision fp16 or "
                'bf16; set model.dtype = "auto"'
            )
        return DTYPES[config.model.dtype]
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def prediction_type(config: TrainConfig, base: BaseModel) -> str:
    """`training.prediction`, where "auto" means what the checkpoint's scheduler says."""
    chosen = config.training.prediction
    return base.prediction_type if chosen == "auto" else chosen


def lora_config(config: TrainConfig, te_lrs: list[float]) -> LoRAConfig:
    """The network's config; "locon" is a LoRA whose conv part defaults to rank/alpha."""
    net = config.network
    conv_rank, conv_alpha = net.conv()
    return LoRAConfig(
        rank=net.rank,
        alpha=net.alpha,
        conv_rank=conv_rank,
        conv_alpha=conv_alpha,
        dropout=net.dropout,
        train_unet=config.optimizer.unet_lr > 0,
        train_text_encoder=any(lr > 0 for lr in te_lrs),
        type="lora" if net.type == "locon" else net.type,
        factor=net.factor,
    )


def prepare_model(config: TrainConfig, accelerator: Accelerator) -> BaseModel:
    dtype = weight_dtype(config, accelerator.mixed_precision)
    model = config.model
    base = load_base_model(model.path, dtype=dtype, family=model.family, config=model.config)
    for module in (base.unet, base.vae, *base.text_encoders):
        module.requires_grad_(False)
        module.to(accelerator.device)
    if base.vae.dtype != torch.float32:
        base.vae.float()
    if config.training.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
    return base


def inject(config: TrainConfig, base: BaseModel, te_lrs: list[float]) -> LoRANetwork:
    """Inject the LoRA (continuing from `network.weights` when set), params in fp32."""
    network = LoRANetwork.inject(base, lora_config(config, te_lrs))
    if config.network.weights:
        state, _ = load_lora_file(Path(config.network.weights))
        try:
            network.load_kohya_state_dict(state, strict=False)
        except LorakitError as exc:
            raise LorakitError(f"network.weights {config.network.weights}: {exc}") from None
    return network


def trained_text_encoders(base: BaseModel, te_lrs: list[float]) -> list[torch.nn.Module]:
    return [te for te, lr in zip(base.text_encoders, te_lrs, strict=True) if lr > 0]


def build_optimizer(config: TrainConfig, groups: list[dict[str, Any]], total_steps: int):
    """(trainable params, group names, optimizer, LR scheduler) over a network's parameter
    `groups` (`TrainTarget.param_groups`); LoRA params made fp32."""
    params = [p for g in groups for p in g["params"]]
    for p in params:
        p.data = p.data.float()
    optimizer = make_optimizer(config, groups)
    scheduler = make_scheduler(config, optimizer, total_steps)
    return params, [str(g["name"]) for g in groups], optimizer, scheduler


def latent_cache_mode(config: TrainConfig) -> str:
    """`training.cache_latents`, or "none" under colour augmentation (it changes pixels
    every step, so latents are encoded live)."""
    return "none" if config.dataset.color_aug else config.training.cache_latents


def text_cache_mode(config: TrainConfig) -> str:
    """`training.cache_text_encoder`, or "none" where the outputs change every step: a
    text encoder trains, or the captions are shuffled. Two rates cover every family: a list
    of two is SDXL's alone (`plan` refuses it elsewhere), one rate applies to all."""
    if any(lr > 0 for lr in config.text_encoder_lrs(2)) or config.dataset.shuffle_caption:
        return "none"
    return config.training.cache_text_encoder


def cache_dir(config: TrainConfig) -> Path:
    """`<output_dir>/cache`: the disk caches, which `--overwrite` leaves in place."""
    return Path(config.saving.output_dir) / "cache"


def latent_source(config: TrainConfig, base: BaseModel | FluxModel, items: Items) -> LatentCache:
    """Latents for `items.all` then any validation item not already among them."""
    mode = latent_cache_mode(config)
    extra = [it for it in items.validation if all(it is not other for other in items.all)]
    return LatentCache(base, [*items.all, *extra], mode, cache_dir(config) / "latents")


def validation_indices(items: Items, cached: Sequence[TrainItem]) -> list[int]:
    """Index in `cached` (a `LatentCache`'s items) of each validation item."""
    return [next(i for i, other in enumerate(cached) if other is item) for item in items.validation]


def text_cache(
    config: TrainConfig,
    encode_fn: Callable[[list[str]], TextRow],
    identity: str,
    device: torch.device,
) -> TextCache | None:
    """The run's text-encoder cache (`text_cache_mode`); on disk, its files are named by
    the caption and `identity`, what else makes the encoders' outputs."""
    mode = text_cache_mode(config)
    if mode == "none":
        return None
    disk = TextDisk(cache_dir(config) / "text", identity, device) if mode == "disk" else None
    return TextCache(encode_fn, disk)


def sd_text_cache(config: TrainConfig, base: BaseModel, device: torch.device) -> TextCache | None:
    """SD1.5/SDXL's text cache: its outputs follow the checkpoint's encoders (a folder's
    `text_encoder*` files), their dtype and the clip skip (77 tokens always). The encoders
    stay on the device (`prepare_model`): CLIP-L/G are small beside FLUX.1's T5-XXL."""
    t = config.training
    files = file_identity(Path(config.model.path), ("text_encoder", "text_encoder_2"))
    identity = f"{files}|{base.text_encoders[0].dtype}|clip_skip {t.clip_skip}"
    return text_cache(config, text_encoder(base, t.clip_skip, device), identity, device)
