"""Prove a LoRA file loads where users use it, and list every key that would be ignored.

Two independent checks: diffusers' own `load_lora_weights` (its kohya converter and peft
injection) into a pipeline of the base, and the name → layer mapping A1111, ComfyUI and
InvokeAI apply (`lorakit.network.keymap`, re-derived from their loaders). A key any of
them drops is how users get "lora key not loaded".

diffusers (0.3x) loads kohya LoRA/LoCon only: LoHa and LoKr keys make its converter raise
a bare "keys have not been correctly renamed", and DoRA's `dora_scale` is filtered out
with a warning, so the file would load as a plain LoRA and give other images. For files
with such modules the diffusers load is not tried; `diffusers_unsupported` says why.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from lorakit.models import BaseModel, ModelFamily, empty_base_model
from lorakit.models.checkpoint import brief
from lorakit.network.convert import diffusers_to_kohya
from lorakit.network.detect import detect_lora_family, is_kohya_format
from lorakit.network.files import load_lora_file, module_dims, split_key
from lorakit.network.keymap import accepted_names, family_accepted_names, keymap_ignored
from lorakit.network.kinds import LABELS
from lorakit.network.lora import all_sites
from lorakit.network.naming import Site, site_index

ADAPTER = "lorakit_verify"


@dataclass
class VerifyReport:
    path: Path
    family: str  # a ModelFamily, or "flux1" (`network.flux_verify`)
    base: str
    modules: int
    keymap_ignored: list[str] = field(default_factory=list)
    diffusers_ignored: list[str] = field(default_factory=list)
    diffusers_errors: list[str] = field(default_factory=list)
    diffusers_unsupported: str | None = None  # why diffusers cannot load the file at all

    @property
    def ok(self) -> bool:
        return not (
            self.keymap_ignored
            or self.diffusers_ignored
            or self.diffusers_errors
            or self.diffusers_unsupported
        )


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip().splitlines()[0])


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    bars = [diffusers_logging, transformers_logging]
    enabled = [module.is_progress_bar_enabled() for module in bars]
    for module in bars:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, was_enabled in zip(bars, enabled, strict=True):
            if was_enabled:
                module.enable_progress_bar()


@contextlib.contextmanager
def quiet_libraries() -> Iterator[_Collect]:
    """Collect diffusers' warnings (they name dropped keys); silence transformers' reports."""
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers", "peft")]
    saved = [(lg.propagate, lg.level, list(lg.handlers)) for lg in loggers]
    for lg in loggers:
        lg.handlers, lg.propagate = [], False
    loggers[0].addHandler(collect)
    loggers[0].setLevel(logging.WARNING)
    loggers[1].setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _no_progress_bars():
            warnings.simplefilter("ignore")
            yield collect
    finally:
        for lg, (propagate, level, handlers) in zip(loggers, saved, strict=True):
            lg.propagate, lg.handlers = propagate, handlers
            lg.setLevel(level)


def _applied(pipe: object, site: Site | None) -> bool:
    """Whether diffusers put our adapter on the layer of `site`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = getattr(pipe, site.part, None) if site else None
    if model is None or site is None:
        return False
    module = model.get_submodule(site.path)
    return isinstance(module, BaseTunerLayer) and ADAPTER in module.lora_A


def diffusers_ignored(
    state: Mapping[str, torch.Tensor], base: BaseModel
) -> tuple[list[str], list[str]]:
    """(module names diffusers did not apply, its error/warning lines) for a kohya `state`.

    The adapter is unloaded afterwards, so `base` is left as it was.
    """
    index = site_index(all_sites(base))
    names = sorted({split_key(key)[0] for key in state})
    return load_and_check(
        base.pipeline(), state, names, lambda pipe, name: _applied(pipe, index.get(name))
    )


def load_and_check(
    pipe: Any, state: Mapping[str, torch.Tensor], names: list[str], applied: Callable
) -> tuple[list[str], list[str]]:
    """Load `state` with the pipeline's own `load_lora_weights` and unload it again:
    (the `names` for which `applied(pipe, name)` is false, diffusers' failure lines); any
    exception fails every name with its one-line reason."""
    with quiet_libraries() as collect:
        try:
            pipe.load_lora_weights(dict(state), adapter_name=ADAPTER, low_cpu_mem_usage=True)
            missing = [name for name in names if not applied(pipe, name)]
        except Exception as exc:
            return names, [f"{type(exc).__name__}: {brief(exc)}"]
        finally:
            with contextlib.suppress(Exception):
                pipe.unload_lora_weights()
    return missing, [line for line in collect.messages if is_failure(line)]


def is_failure(line: str) -> bool:
    """diffusers' lines that mean keys were dropped. Its notice that a part (a text encoder
    of a UNet-only LoRA) has no keys says "unexpected" too, but names no dropped key."""
    if line.startswith("No LoRA keys associated to"):
        return False
    return "unsuccessful" in line or "unexpected" in line


def diffusers_unsupported(state: Mapping[str, torch.Tensor]) -> str | None:
    """Why diffusers' load_lora_weights cannot load `state` as it is, or None when it can."""
    counts = Counter(d.kind for d in module_dims(state).values() if d.kind != "lora")
    if not counts:
        return None
    found = ", ".join(f"{count} {LABELS[kind]}" for kind, count in sorted(counts.items()))
    return (
        f"diffusers' load_lora_weights loads LoRA/LoCon only, not these {found} modules "
        "(it drops DoRA's dora_scale, refuses LoHa/LoKr); use lorakit, ComfyUI or A1111"
    )


def verify_lora(
    path: str | Path, base: BaseModel | None = None, family: ModelFamily | str | None = None
) -> VerifyReport:
    """Check a LoRA file against `base` (or the full-size architecture of its family)."""
    path = Path(path)
    state, metadata = load_lora_file(path)
    if base is not None:
        family = base.family
    family = ModelFamily(family) if family else detect_lora_family(state, metadata, str(path))
    if not is_kohya_format(state):
        state = diffusers_to_kohya(state, family, metadata, str(path))
    if base is None:
        base, label, names = (
            empty_base_model(family),
            f"{family.value} (empty)",
            family_accepted_names(family),
        )
    else:
        label, names = str(base.source), accepted_names(base)
    report = VerifyReport(path, family, label, len({split_key(k)[0] for k in state}))
    report.keymap_ignored = keymap_ignored(state, names)
    report.diffusers_unsupported = diffusers_unsupported(state)
    if report.diffusers_unsupported is None:
        report.diffusers_ignored, report.diffusers_errors = diffusers_ignored(state, base)
    return report
