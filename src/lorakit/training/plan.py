"""The run plan, computed before any model loads (what `--dry-run` prints).

images × repeats × epochs = image views; views / batch size = steps per epoch (with
gradient accumulation, optimizer steps are that divided by `grad_accum`). The same numbers
drive the loop, so the plan the user reads is the run they get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.families import NATIVE_SIDE, ModelFamily
from lorakit.models.components import TEXT_ENCODERS
from lorakit.models.family import detect_family
from lorakit.threads import ThreadChoice
from lorakit.training.config import TrainConfig
from lorakit.training.data import BucketBatchSampler, Items, build_items
from lorakit.training.runtime import (
    cache_dir,
    cpu_threads,
    effective_precision,
    latent_cache_mode,
    precision_text,
    text_cache_mode,
)
from lorakit.training.vram import estimate


def _check_text_encoder_rates(config: TrainConfig, family: str) -> None:
    """Two text-encoder rates ([te1, te2]) are an SDXL setting; refuse them elsewhere."""
    rates = config.optimizer.text_encoder_lr
    encoders = len(TEXT_ENCODERS[ModelFamily(family)])
    if isinstance(rates, list) and len(rates) > encoders:
        raise LorakitError(
            f"{config.model.path}: family {family} has {encoders} text encoder, but "
            f"optimizer.text_encoder_lr = {rates} sets SDXL's two; give one rate"
        )


def checked_family(config: TrainConfig) -> tuple[str, str]:
    """(family, where it came from): the file's own, which `model.family` must match.

    Only the file's header or a folder's configs are read, so a dry run catches an SDXL
    config pointed at an SD1.5 file. A dry run planned on a machine without the model
    trusts `model.family` and says so.
    """
    model = config.model
    path = Path(model.path)
    if model.family and not path.exists():
        family, origin = model.family, f"model.family; {path} is not here, so not checked"
    else:
        family = detect_family(path).value
        if model.family and model.family != family:
            raise LorakitError(
                f"{path}: is family {family}, but model.family = {model.family!r}; drop "
                f"model.family or set model.path to a {model.family} checkpoint"
            )
        origin = "model.family, checked against the file" if model.family else "from the file"
    _check_text_encoder_rates(config, family)
    return family, origin


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill what follows from the base model: its family and its native resolution."""
    return with_family(config, checked_family(config)[0])


def with_family(config: TrainConfig, family: str) -> TrainConfig:
    """`config` with `family` set and the resolution defaulted to the family's native side."""
    resolution = config.dataset.resolution or NATIVE_SIDE[family]
    return config.model_copy(
        update={
            "model": config.model.model_copy(update={"family": family}),
            "dataset": config.dataset.model_copy(update={"resolution": resolution}),
        },
        deep=True,
    )


@dataclass(frozen=True)
class RunPlan:
    images: int
    repeats: list[int]
    reg_images: int
    validation_images: int
    views_per_epoch: int
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    buckets: int
    saves: list[int]
    sample_epochs: list[int]

    def lines(self, config: TrainConfig) -> list[str]:
        """The plan in words: each count, the arithmetic behind it and where it came from."""
        t = config.training
        rep = ", ".join(map(str, self.repeats))
        source = "dataset.repeats" if config.dataset.repeats else "the N_name folder names"
        views = (
            f"{self.images} images × {rep} repeats"
            if len(self.repeats) == 1
            else f"{self.images} images with repeats {rep}"
        )
        reg = " + as many regularization views" if self.reg_images else ""
        if t.max_train_steps:
            length = (
                f"total steps: {self.total_steps} (training.max_train_steps) → "
                f"{self.epochs} epochs of {self.steps_per_epoch} steps"
            )
        else:
            length = (
                f"{self.steps_per_epoch} steps × {self.epochs} epochs (training.epochs) "
                f"= total steps: {self.total_steps}"
            )
        return [
            f"images: {self.images} (+{self.reg_images} regularization), "
            f"validation on {self.validation_images}",
            f"{views} (from {source}){reg} = {self.views_per_epoch} image views per epoch",
            f"batches per epoch: {self.batches_per_epoch} (batch {t.batch_size}, "
            f"{self.buckets} bucket(s)); optimizer steps per epoch: {self.steps_per_epoch} "
            f"(grad_accum {t.grad_accum})",
            length,
            _saves_line(self.saves, config),
            f"samples after epochs: {_epoch_list(self.sample_epochs) or 'none'}",
        ]


def _saves_line(saves: list[int], config: TrainConfig) -> str:
    s = config.saving
    line = f"LoRA files after epochs: {_epoch_list(saves) or 'none'}"
    if s.save_every_n_steps:
        line += f", and every {s.save_every_n_steps} steps"
    if s.keep_last:
        line += f" (the newest {s.keep_last} of each kept)"
    return line + "; the last as <name>.safetensors"


def _caches(config: TrainConfig) -> str:
    """Where latents and text-encoder outputs are kept, and why not as set when not."""
    t = config.training
    modes = latent_cache_mode(config), text_cache_mode(config)
    latents, text = modes
    if latents != t.cache_latents:
        latents += " (color_aug changes pixels every step)"
    if text != t.cache_text_encoder:
        why = "shuffle_caption" if config.dataset.shuffle_caption else "a text encoder trains"
        text += f" ({why})"
    where = f"; files in {cache_dir(config)}" if "disk" in modes else ""
    return f"latents {latents}, text-encoder outputs {text}{where}"


def _epoch_list(epochs: list[int]) -> str:
    """`1, 2, 3` for a few epochs, `5, 10, …, 100 (20 files)` for many."""
    if len(epochs) <= 8:
        return ", ".join(map(str, epochs))
    return f"{epochs[0]}, {epochs[1]}, …, {epochs[-1]} ({len(epochs)} in all)"


def _every(n: int | None, epochs: int) -> list[int]:
    return [e for e in range(1, epochs + 1) if n and e % n == 0]


def make_plan(config: TrainConfig, items: Items, world: int = 1) -> RunPlan:
    """Counts for `config` over `items`, split over `world` processes."""
    sampler = BucketBatchSampler(items, config, rank=0, world=world)
    batches = len(sampler.epoch_batches(1))
    steps = math.ceil(batches / config.training.grad_accum)
    t = config.training
    total = t.max_train_steps or steps * t.epochs
    epochs = math.ceil(total / steps)
    views = sum(it.repeats for it in items.train) * (2 if items.reg else 1)
    samples = _every(config.sampling.every_n_epochs, epochs) if config.sampling.prompts else []
    return RunPlan(
        images=len(items.train),
        repeats=sorted({it.repeats for it in items.train}),
        reg_images=len(items.reg),
        validation_images=len(items.validation) if config.validation.enabled else 0,
        views_per_epoch=views,
        batches_per_epoch=batches,
        steps_per_epoch=steps,
        total_steps=total,
        epochs=epochs,
        buckets=len({it.bucket for it in items.all}),
        saves=_every(config.saving.save_every_n_epochs, epochs),
        sample_epochs=samples,
    )


def settings(
    config: TrainConfig,
    plan: RunPlan,
    precision: str,
    threads: ThreadChoice | None,
    origins: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The resolved settings to review before training (the dry run and the run's table).

    `origins` adds where the family and the resolution came from.
    """
    c, why = config, origins or {}

    def origin(key: str) -> str:
        return f" ({why[key]})" if key in why else ""

    net, opt, sched = c.network, c.optimizer, c.scheduler
    conv_rank, conv_alpha = net.conv()
    conv = f", conv rank {conv_rank}, conv alpha {conv_alpha}" if conv_rank else ""
    args = f", args {opt.args}" if opt.args else ""
    kind = "" if net.type == "lora" else f"{net.type}, "
    cycles = f", {sched.num_cycles} cycles" if sched.name == "cosine_with_restarts" else ""
    rows = [
        ("base model", f"{c.model.path}"),
        ("family", f"{c.model.family}{origin('family')}"),
        ("resolution", f"{c.dataset.resolution}{origin('resolution')}"),
        ("network", f"{kind}rank {net.rank}, alpha {net.alpha}{conv}"),
        (
            "optimizer",
            f"{opt.name}, unet lr {opt.unet_lr}, text encoder lr {opt.text_encoder_lr}, "
            f"weight decay {opt.weight_decay}{args}",
        ),
        ("scheduler", f"{sched.name}, warmup {sched.warmup_steps} steps{cycles}"),
        ("batch", f"{c.training.batch_size} × grad_accum {c.training.grad_accum}"),
        ("precision", precision),
        ("seed", str(c.training.seed)),
        ("caches", _caches(c)),
    ]
    if threads is not None:
        rows.append(("threads", threads.describe()))
    return rows + [("plan", line) for line in plan.lines(c)]


def dry_run(config: TrainConfig) -> list[str]:
    """The settings, plan and GPU memory estimate for `config`, reading only the model's
    header or configs, folder listings and image headers."""
    family, family_origin = checked_family(config)
    return dry_run_lines(config, family, family_origin)


def dry_run_lines(
    config: TrainConfig, family: str, family_origin: str, variant: str = "dev"
) -> list[str]:
    """`dry_run` for a family already checked (`variant`: FLUX.1's, for its estimate)."""
    origins = {
        "family": family_origin,
        "resolution": "dataset.resolution"
        if config.dataset.resolution
        else f"the {family} native size",
    }
    config = with_family(config, family)
    items = build_items(config, config.dataset.resolution or 512)
    plan = make_plan(config, items)
    config = config.with_warmup_steps(plan.total_steps)
    precision = precision_text(config, effective_precision(config)[0])
    rows = settings(config, plan, precision, cpu_threads(config, None), origins)
    return [f"{key}: {value}" for key, value in rows] + estimate(config, family, variant).lines()
