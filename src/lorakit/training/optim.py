"""Optimizers and LR schedules by the names the guides use.

`optimizer.args` passes straight to the optimizer's constructor (kohya's
`--optimizer_args`). Adafactor with `relative_step = true` computes its own step size, so
it gets transformers' `AdafactorSchedule` (which only reports that LR) whatever
`scheduler.name` says; every other schedule comes from `diffusers.optimization`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers.optimization import get_scheduler

from lorakit.errors import LorakitError
from lorakit.training.config import TrainConfig

ParamGroups = list[dict[str, Any]]


def _adamw(groups: ParamGroups, lr: float, args: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, **args)


def _adamw8bit(groups: ParamGroups, lr: float, args: dict[str, Any]) -> torch.optim.Optimizer:
    from lorakit.thirdparty import bitsandbytes

    return bitsandbytes().optim.AdamW8bit(groups, lr=lr, **args)


def _adafactor(groups: ParamGroups, lr: float, args: dict[str, Any]) -> torch.optim.Optimizer:
    from transformers.optimization import Adafactor

    args = {"scale_parameter": False, "relative_step": False, "warmup_init": False, **args}
    if args["relative_step"]:
        for group in groups:
            group.pop("lr", None)
        return Adafactor(groups, lr=None, **args)
    return Adafactor(groups, lr=lr, **args)


def _prodigy(groups: ParamGroups, lr: float, args: dict[str, Any]) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    return Prodigy(groups, lr=lr, **args)


def _dadaptadam(groups: ParamGroups, lr: float, args: dict[str, Any]) -> torch.optim.Optimizer:
    from dadaptation import DAdaptAdam

    return DAdaptAdam(groups, lr=lr, **args)


def _lion(groups: ParamGroups, lr: float, args: dict[str, Any]) -> torch.optim.Optimizer:
    from lion_pytorch import Lion

    return Lion(groups, lr=lr, **args)


OPTIMIZERS: dict[str, Callable[[ParamGroups, float, dict[str, Any]], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "adamw8bit": _adamw8bit,
    "adafactor": _adafactor,
    "prodigy": _prodigy,
    "dadaptadam": _dadaptadam,
    "lion": _lion,
}


def uses_relative_step(config: TrainConfig) -> bool:
    opt = config.optimizer
    return opt.name == "adafactor" and bool(opt.args.get("relative_step", False))


def make_optimizer(config: TrainConfig, groups: ParamGroups) -> torch.optim.Optimizer:
    """The configured optimizer over `groups` (each group carries its own LR)."""
    opt = config.optimizer
    if not groups:
        raise LorakitError(
            "nothing to train: optimizer.unet_lr and optimizer.text_encoder_lr are all 0; "
            "set optimizer.unet_lr (e.g. 1e-4)"
        )
    args = {"weight_decay": opt.weight_decay, **opt.args}
    try:
        return OPTIMIZERS[opt.name](groups, opt.unet_lr, args)
    except TypeError as exc:
        raise LorakitError(
            f"optimizer.args {opt.args} do not fit {opt.name} ({exc}); fix optimizer.args"
        ) from None


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The LR schedule over `total_steps` optimizer steps."""
    if uses_relative_step(config):
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer)
    sched = config.scheduler
    name = "constant" if sched.name == "adafactor" else sched.name
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=sched.warmup_steps,
        num_training_steps=total_steps,
        num_cycles=sched.num_cycles,
        power=sched.power,
    )
