"""Optimizers and LR schedules by the names the guides use.

`optimizer.args` passes straight to the optimizer's constructor (kohya's
`--optimizer_args`). Adafactor with `relative_step = true` computes its own step size, so
it gets transformers' `AdafactorSchedule` (which only reports that LR) whatever
`scheduler.name` says, as sd-scripts does; every other schedule comes from
`diffusers.optimization`, and `scheduler.name = "adafactor"` without a relative step is a
constant LR. `optimizer_notes` says so before a run, so the settings table is never read as
LRs that are not used. torch and diffusers load when an optimizer is built, not on import:
the CLI reads the notes while it is still checking the config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lorakit.errors import LorakitError
from lorakit.training.config import TrainConfig

if TYPE_CHECKING:
    import torch

ParamGroups = list[dict[str, Any]]


def _adamw(groups: ParamGroups, lr: float, args: dict[str, Any]) -> torch.optim.Optimizer:
    import torch

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
    except (TypeError, ValueError) as exc:
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
    from diffusers.optimization import get_scheduler

    sched = config.with_warmup_steps(total_steps).scheduler
    name = "constant" if sched.name == "adafactor" else sched.name
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=sched.warmup_steps,
        num_training_steps=total_steps,
        num_cycles=sched.num_cycles,
        power=sched.power,
    )


def _warmup_text(config: TrainConfig) -> str:
    sched = config.scheduler
    if sched.warmup_ratio:
        return f"scheduler.warmup_ratio {sched.warmup_ratio:g}"
    return f"scheduler.warmup_steps {sched.warmup_steps}" if sched.warmup_steps else ""


def optimizer_notes(config: TrainConfig) -> list[str]:
    """What the optimizer and schedule will really do, where the settings could be read
    otherwise: Adafactor's relative step ignores the LRs, and a schedule without warmup
    ignores the warmup."""
    opt, sched = config.optimizer, config.scheduler
    warmup = _warmup_text(config)
    if uses_relative_step(config):
        ramp = " and warmup_init" if opt.args.get("warmup_init") else ""
        notes = [
            "Adafactor with relative_step=True ignores optimizer.unet_lr and "
            "text_encoder_lr: the LR comes from the step count (1/sqrt(step), at most 1e-2)"
            f"{ramp}, times each weight's RMS when scale_parameter=True"
        ]
        if sched.name != "adafactor" or warmup:
            unused = ", ".join(filter(None, [f"scheduler {sched.name}", warmup]))
            notes.append(f"{unused} not used: Adafactor's relative step is the schedule")
        return notes
    notes = []
    if sched.name == "adafactor":
        why = "relative_step is off" if opt.name == "adafactor" else f"{opt.name} has none"
        notes.append(
            f"scheduler adafactor only reports Adafactor's relative step and {why}: "
            "the LR stays constant at optimizer.unet_lr / text_encoder_lr"
        )
    if opt.name == "adafactor" and opt.args.get("scale_parameter"):
        notes.append("Adafactor with scale_parameter=True multiplies the LR by each weight's RMS")
    if warmup and sched.name in ("constant", "adafactor"):
        notes.append(f"{warmup} not used: scheduler {sched.name} has no warmup")
    return notes
