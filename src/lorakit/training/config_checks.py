"""The config checks behind its one-line errors: pydantic's errors explained (an unknown key
with the closest valid name) and the rules that span keys, which no single field's type can
state."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel

from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from lorakit.training.config import TrainConfig


def section_fields(root: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Valid key names at the config location `loc` (the parent of the bad key) of `root`."""
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        # An optional section (`[flux]`) is its model or None.
        members = [a for a in get_args(field.annotation) if a is not type(None)]
        model = members[0] if len(members) == 1 else field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def explain(root: type[BaseModel], error: Mapping[str, Any]) -> str:
    """One pydantic error of `root` as a line: an unknown key with the closest valid one."""
    loc = [str(p) for p in error["loc"]]
    where = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = section_fields(root, error["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join([*loc[:-1], close[0]])}'?" if close else ""
        options = f"valid keys: {', '.join(valid)}" if valid else ""
        return f"unknown key '{where}'; {hint or options}".rstrip("; ")
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def step_multiples(value: int, step: int) -> str:
    """The multiples of `step` around `value`, as a fix to suggest ("64 or 128")."""
    below = value // step * step
    return f"{below} or {below + step}" if below else str(step)


def check_consistency(config: TrainConfig, source: str) -> None:
    """Rules that span keys: each field alone is valid, together they cannot be honoured.

    Buckets are sized in steps of `bucket_step`, so a resolution off that grid trains at a
    smaller square than the run's metadata would state (100 trains at 64).
    """
    ds, sched, net = config.dataset, config.scheduler, config.network
    if net.dropout and net.type not in ("lora", "locon"):
        raise LorakitError(
            f"{source}: network.dropout is LoRA's only (LyCORIS has none for {net.type}); "
            "set it to 0"
        )
    if net.factor not in (-1, 0) and net.type != "lokr":
        raise LorakitError(f"{source}: network.factor is for lokr only; remove it")
    if net.factor == 0:
        raise LorakitError(f"{source}: network.factor = 0; use -1 or a size >= 1")
    if ds.resolution is not None and ds.resolution % ds.bucket_step:
        raise LorakitError(
            f"{source}: dataset.resolution = {ds.resolution} is not a multiple of "
            f"dataset.bucket_step = {ds.bucket_step} (the buckets' size step); use "
            f"{step_multiples(ds.resolution, ds.bucket_step)}"
        )
    if sched.warmup_steps and sched.warmup_ratio:
        raise LorakitError(
            f"{source}: scheduler.warmup_steps and scheduler.warmup_ratio are both set; "
            "keep one of them"
        )
