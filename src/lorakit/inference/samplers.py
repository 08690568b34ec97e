"""A1111 sampler names mapped to diffusers schedulers.

Users copy settings from A1111 infotexts and guides ("DPM++ 2M Karras", "Euler a"), so
lorakit accepts those names and builds the matching diffusers scheduler from the base
model's own noise-schedule config (betas, prediction type, timestep spacing), which keeps
v-prediction and custom schedules intact. Schedulers are named, not imported, so the
table (the UI's sampler list) costs no diffusers import.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class SamplerSpec:
    """A diffusers scheduler class (by name) plus the overrides that make it an A1111 sampler."""

    scheduler: str
    overrides: dict[str, Any] = field(default_factory=dict)


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

SAMPLERS: dict[str, SamplerSpec] = {
    "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "Euler": SamplerSpec("EulerDiscreteScheduler"),
    "LMS": SamplerSpec("LMSDiscreteScheduler"),
    "LMS Karras": SamplerSpec("LMSDiscreteScheduler", _KARRAS),
    "Heun": SamplerSpec("HeunDiscreteScheduler"),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler"),
    "DPM2 Karras": SamplerSpec("KDPM2DiscreteScheduler", _KARRAS),
    "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "DPM2 a Karras": SamplerSpec("KDPM2AncestralDiscreteScheduler", _KARRAS),
    "DPM++ 2M": SamplerSpec("DPMSolverMultistepScheduler"),
    "DPM++ 2M Karras": SamplerSpec("DPMSolverMultistepScheduler", _KARRAS),
    "DPM++ 2M SDE": SamplerSpec("DPMSolverMultistepScheduler", _SDE),
    "DPM++ 2M SDE Karras": SamplerSpec("DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}),
    "DPM++ 3M SDE": SamplerSpec("DPMSolverMultistepScheduler", {**_SDE, "solver_order": 3}),
    "DPM++ 3M SDE Karras": SamplerSpec(
        "DPMSolverMultistepScheduler", {**_SDE, **_KARRAS, "solver_order": 3}
    ),
    "DPM++ 2S a": SamplerSpec("DPMSolverSinglestepScheduler"),
    "DPM++ 2S a Karras": SamplerSpec("DPMSolverSinglestepScheduler", _KARRAS),
    "DPM++ SDE": SamplerSpec("DPMSolverSDEScheduler"),
    "DPM++ SDE Karras": SamplerSpec("DPMSolverSDEScheduler", _KARRAS),
    "DDIM": SamplerSpec("DDIMScheduler"),
    "PLMS": SamplerSpec("PNDMScheduler"),
    "UniPC": SamplerSpec("UniPCMultistepScheduler"),
}

_BY_LOWER = {name.lower(): name for name in SAMPLERS}


def canonical_sampler_name(name: str) -> str:
    """The A1111 spelling of `name` (matched case-insensitively); error lists valid names."""
    key = " ".join(name.split()).lower()
    if key not in _BY_LOWER:
        valid = ", ".join(SAMPLERS)
        raise LorakitError(f"unknown sampler {name!r}; use one of: {valid}")
    return _BY_LOWER[key]


@functools.lru_cache(maxsize=16)
def _prototype(name: str, config_json: str) -> SchedulerMixin:
    import diffusers

    spec = SAMPLERS[name]
    return getattr(diffusers, spec.scheduler).from_config(json.loads(config_json), **spec.overrides)


def make_scheduler(name: str, scheduler_config: dict[str, Any]) -> SchedulerMixin:
    """Build the scheduler for A1111 sampler `name` from a base model's scheduler config.

    Each call gets its own copy (schedulers keep per-run state), copied from a cached
    instance: some constructors (DPM2) take over a second, once per grid cell otherwise.
    """
    canonical = canonical_sampler_name(name)
    spec = SAMPLERS[canonical]
    if spec.scheduler == "DPMSolverSDEScheduler" and importlib.util.find_spec("torchsde") is None:
        raise LorakitError(
            f"sampler {name!r} needs the torchsde package; install it with "
            "`pip install torchsde` or pick another sampler such as 'DPM++ 2M SDE Karras'"
        )
    config_json = json.dumps(dict(scheduler_config), sort_keys=True, default=str)
    return copy.deepcopy(_prototype(canonical, config_json))
