"""The one factory for adapter modules: a new one of a configured type, or one shaped
like a file's tensors. The network, the trainer and the loaders go through here, so a
new type is a module class and a line in `_NEW`, not a branch in each of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.network.config import LoRAConfig
from lorakit.network.kinds import (
    DORA_SCALE,
    LABELS,
    LOKR_KEYS,
    SUFFIXES,
    missing_keys,
    module_alpha,
    module_kind,
    module_rank,
)
from lorakit.network.lycoris import LoHaModule, LoKrModule
from lorakit.network.modules import AdapterModule, LoRAModule


def _dora(name: str, base: nn.Module, rank: int, alpha: float, config: LoRAConfig) -> LoRAModule:
    module = LoRAModule(name, base, rank, alpha)
    module.decompose()
    return module


_NEW: dict[str, Callable[[str, nn.Module, int, float, LoRAConfig], AdapterModule]] = {
    "lora": lambda name, base, rank, alpha, c: LoRAModule(name, base, rank, alpha, c.dropout),
    "dora": _dora,
    "loha": lambda name, base, rank, alpha, c: LoHaModule(name, base, rank, alpha),
    "lokr": lambda name, base, rank, alpha, c: LoKrModule.create(name, base, rank, alpha, c.factor),
}


def new_adapter(
    config: LoRAConfig, name: str, base: nn.Module, rank: int, alpha: float
) -> AdapterModule:
    """A fresh module of `config.type` around `base` (a no-op until trained)."""
    return _NEW[config.type](name, base, rank, alpha, config)


def adapter_from_tensors(
    name: str, base: nn.Module, tensors: Mapping[str, torch.Tensor], source: str
) -> AdapterModule:
    """A module shaped like one module's file tensors (by suffix), loaded with them."""
    try:
        kind = module_kind(tensors)
    except LorakitError as exc:
        raise LorakitError(f"{source}: {name}: {exc}") from None
    if kind is None:
        raise LorakitError(f"{source}: {name} holds no LoRA/LoHa/LoKr weights; it is damaged")
    extra = [suffix for suffix in tensors if suffix not in SUFFIXES[kind]]
    if extra:
        raise LorakitError(
            f"{source}: {name}{extra[0]} is no {LABELS[kind]} key; the file mixes formats"
        )
    missing = missing_keys(kind, tensors)
    if missing:
        raise LorakitError(
            f"{source}: {LABELS[kind]} module {name} lacks `{missing[0]}`; the file is damaged"
        )
    rank, alpha = module_rank(kind, tensors), module_alpha(kind, tensors)
    if kind == "lokr":
        shapes = {key: tuple(tensors[key].shape) for key in LOKR_KEYS if key in tensors}
        module: AdapterModule = LoKrModule(name, base, shapes, alpha)
    elif kind == "loha":
        module = LoHaModule(name, base, rank or 1, alpha)
    else:
        module = LoRAModule(name, base, rank or 1, alpha)
    if DORA_SCALE in tensors:
        module.decompose()
    module.load_tensors(tensors)
    return module
