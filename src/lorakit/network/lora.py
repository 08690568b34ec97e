"""LoRANetwork: adapter modules injected into a base model, saved and loaded by kohya names.

One class serves every network type (LoRA/LoCon, DoRA, LoHa, LoKr): the modules come from
`lorakit.network.adapters`, by the config's type or by a file's keys, and all of them
save, load, scale and stack the same way. Injection replaces each target layer in its
parent with an adapter module that holds the original; `remove()` puts the originals
back. Networks stack: a second network wraps the first one's modules, and any of them can
be removed in any order, which is how inference applies several LoRAs at once without
merging weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models.base import BaseModel, ModelFamily
from lorakit.network.adapters import adapter_from_tensors, new_adapter
from lorakit.network.config import LoRAConfig
from lorakit.network.files import (
    ModuleDims,
    group_by_module,
    load_lora_file,
    parse_dtype,
    refuse_unmatched,
    save_lora_file,
    split_key,
)
from lorakit.network.kinds import ALL_SUFFIXES, LABELS, module_kind
from lorakit.network.metadata import lora_metadata
from lorakit.network.modules import AdapterModule
from lorakit.network.naming import (
    TEXT_PARTS,
    UNET_PART,
    Site,
    site_index,
    text_sites,
    unet_sites,
)


def network_sites(
    base: BaseModel, *, unet: bool = True, text: bool = True, conv: bool = False
) -> list[Site]:
    """The sites sd-scripts targets in `base` (text encoders first, as sd-scripts lists them)."""
    sites = text_sites(base.text_encoders) if text else []
    if unet:
        sites += unet_sites(base.unet, ldm_names=base.family is ModelFamily.SDXL, conv=conv)
    return sites


def all_sites(base: BaseModel) -> list[Site]:
    """Every Linear/Conv2d of the text encoders and UNet: what A1111/ComfyUI can patch."""
    sites = text_sites(base.text_encoders, everything=True)
    return sites + unet_sites(base.unet, ldm_names=base.family is ModelFamily.SDXL, everything=True)


class LoRANetwork(nn.Module):
    """The adapter modules of one network; its parameters are only the adapter weights."""

    def __init__(
        self,
        base: BaseModel,
        modules: Sequence[tuple[Site, AdapterModule]],
        config: LoRAConfig,
        multiplier: float = 1.0,
    ) -> None:
        """Inject `modules` (each built around its site's current layer) at their sites."""
        super().__init__()
        self.family = base.family
        self.config = config
        self.loras: list[AdapterModule] = []
        self._sites: list[Site] = []
        self.adapters = nn.ModuleDict()
        for site, module in modules:
            module.multiplier = float(multiplier)
            setattr(site.parent, site.attr, module)
            self.loras.append(module)
            self._sites.append(site)
            own = module.tensors_by_suffix().items()
            weights = {suffix.strip(".").replace(".", "_"): p for suffix, p in own}
            self.adapters[site.name] = nn.ParameterDict(weights)
        self._multiplier = float(multiplier)
        self._injected = True

    @classmethod
    def inject(cls, base: BaseModel, config: LoRAConfig, multiplier: float = 1.0) -> LoRANetwork:
        """Wrap sd-scripts' default targets of `base` (plus 3×3 convs when conv_rank is set)
        with new modules of `config.type`."""
        sites = network_sites(
            base,
            unet=config.train_unet,
            text=config.train_text_encoder,
            conv=config.conv_rank is not None,
        )
        linear = (config.rank, float(config.alpha))
        conv = (config.conv_rank, config.effective_conv_alpha) if config.conv_rank else linear
        modules = [
            (site, new_adapter(config, site.name, getattr(site.parent, site.attr), *dims))
            for site in sites
            for dims in [conv if site.kind == "conv" else linear]
        ]
        return cls(base, modules, config, multiplier)

    @classmethod
    def from_state_dict(
        cls,
        base: BaseModel,
        state: Mapping[str, torch.Tensor],
        multiplier: float = 1.0,
        source: str = "LoRA",
    ) -> LoRANetwork:
        """A network shaped like the kohya weights in `state` (per-module type, rank,
        alpha), loaded: LoRA/LoCon, DoRA, LoHa and LoKr modules, mixed if need be.

        Any Linear/Conv2d of the base may carry a module, not only sd-scripts' defaults, so
        files from other trainers (LoCon on conv_in, time embedding, ...) load too.
        """
        grouped = _group(state, source)
        if not grouped:
            raise LorakitError(f"{source}: no LoRA, LoHa or LoKr keys; not a kohya-format LoRA")
        index = site_index(all_sites(base))
        unknown = sorted(name for name in grouped if name not in index)
        if unknown:
            raise LorakitError(
                f"{source}: {len(unknown)} modules do not exist in this {base.family.value} base "
                f"(e.g. {unknown[0]}); check the base model family"
            )
        modules = []
        for name, tensors in grouped.items():
            site = index[name]
            layer = getattr(site.parent, site.attr)
            modules.append((site, adapter_from_tensors(site.name, layer, tensors, source)))
        config = config_from_modules([module for _, module in modules])
        return cls(base, modules, config, multiplier)

    @classmethod
    def from_file(cls, base: BaseModel, path: str | Path, multiplier: float = 1.0) -> LoRANetwork:
        state, _ = load_lora_file(path)
        return cls.from_state_dict(base, state, multiplier, source=str(path))

    @property
    def sites(self) -> list[Site]:
        """Where each module sits (parallel to `loras`): part, module path, both names."""
        return list(self._sites)

    @property
    def names(self) -> list[str]:
        return [module.name for module in self.loras]

    @property
    def multiplier(self) -> float:
        return self._multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        self._multiplier = float(value)
        for module in self.loras:
            module.multiplier = self._multiplier

    def part_modules(self, part: str) -> list[AdapterModule]:
        """Modules of one part: "unet", "text_encoder" or "text_encoder_2"."""
        return [m for m, site in zip(self.loras, self._sites, strict=True) if site.part == part]

    def param_groups(
        self, unet_lr: float, text_encoder_lr: float | Sequence[float]
    ) -> list[dict[str, object]]:
        """One optimizer group per part; a part with lr 0 is frozen and left out."""
        text_lrs = (
            list(text_encoder_lr) if isinstance(text_encoder_lr, Sequence) else [text_encoder_lr]
        )
        parts = sorted({site.part for site in self._sites}, key=lambda p: (p != UNET_PART, p))
        groups: list[dict[str, object]] = []
        for part in parts:
            if part == UNET_PART:
                lr = unet_lr
            else:
                lr = text_lrs[min(TEXT_PARTS.index(part), len(text_lrs) - 1)]
            params = [p for m in self.part_modules(part) for p in m.trainable()]
            for param in params:
                param.requires_grad_(lr > 0)
            if lr > 0:
                groups.append({"params": params, "lr": float(lr), "name": part})
        return groups

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Weights under kohya names and each type's keys: `<name>.lora_down.weight`,
        `.lora_up.weight` (+ `.dora_scale`), `.hada_w1_a`…, `.lokr_w1`…, and `.alpha`.

        `.alpha` is a 0-d tensor, as sd-scripts writes it.
        """
        state: dict[str, torch.Tensor] = {}
        for module in self.loras:
            for suffix, tensor in module.kohya_tensors().items():
                state[f"{module.name}{suffix}"] = tensor if dtype is None else tensor.to(dtype)
        return state

    def load_kohya_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load kohya weights (either SDXL spelling); alpha from the file sets each scale.

        A module whose file type differs from the network's (a LoHa file into a LoRA
        network, say) is refused in one line, strict or not.
        """
        index = site_index(self._sites)
        modules = {module.name: module for module in self.loras}

        def module_of(name: str, suffix: str) -> str | None:
            site = index.get(name)
            return site.name if site is not None and suffix in ALL_SUFFIXES else None

        grouped, unexpected = group_by_module(state, module_of)
        missing = [name for name in modules if name not in grouped]
        if strict:
            refuse_unmatched(
                "LoRA weights do not match the network",
                unexpected,
                missing,
                "use a file made for this base",
            )
        for name, tensors in grouped.items():
            module = modules[name]
            kind = module_kind(tensors)
            if kind != module.kind:
                held = f"a {LABELS[kind]} module" if kind else f"only {', '.join(sorted(tensors))}"
                raise LorakitError(
                    f"{name}: the file holds {held}, the network is {LABELS[module.kind]}; "
                    "use a file of the network's type"
                )
            module.load_tensors(tensors)

    def save(
        self,
        path: str | Path,
        *,
        dtype: torch.dtype | str = torch.float16,
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Write a kohya-format safetensors file atomically, with ss_/modelspec/sshs metadata."""
        meta = lora_metadata(self.family, self.config)
        meta.update(metadata or {})
        return save_lora_file(path, self.kohya_state_dict(parse_dtype(dtype)), meta)

    def remove(self) -> None:
        """Put the original layers back, wherever this network sits in a stack of networks."""
        if not self._injected:
            return
        for module, site in zip(self.loras, self._sites, strict=True):
            current = getattr(site.parent, site.attr)
            if current is module:
                setattr(site.parent, site.attr, module.base)
                continue
            while isinstance(current, AdapterModule) and current.base is not module:
                current = current.base
            if not isinstance(current, AdapterModule):
                raise RuntimeError(f"{module.name}: LoRA module not found where it was injected")
            current.base = module.base
        self._injected = False


def _group(state: Mapping[str, torch.Tensor], source: str) -> dict[str, dict[str, torch.Tensor]]:
    """Tensors by module name and suffix, for the modules whose keys name a known type."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name, suffix = split_key(key)
        grouped.setdefault(name, {})[suffix] = value
    try:
        return {name: tensors for name, tensors in grouped.items() if module_kind(tensors)}
    except LorakitError as exc:
        raise LorakitError(f"{source}: {exc}") from None


def config_from_modules(modules: Sequence[AdapterModule]) -> LoRAConfig:
    """The config a network of `modules` was most likely trained with (see config_from_dims)."""
    dims = {m.name: ModuleDims(m.rank, m.alpha_value, m.is_conv, m.kind) for m in modules}
    return config_from_dims(dims)


def config_from_dims(dims: Mapping[str, ModuleDims]) -> LoRAConfig:
    """The most common type and linear and conv rank/alpha: what the file was most likely
    trained with."""
    linear = Counter((d.rank, d.alpha) for d in dims.values() if not d.is_conv)
    conv = Counter((d.rank, d.alpha) for d in dims.values() if d.is_conv)
    rank, alpha = linear.most_common(1)[0][0] if linear else (16, 8.0)
    conv_rank, conv_alpha = conv.most_common(1)[0][0] if conv else (None, None)
    parts = {"train_unet": "lora_unet_", "train_text_encoder": "lora_te"}
    trained = {part: any(n.startswith(prefix) for n in dims) for part, prefix in parts.items()}
    kind = Counter(d.kind for d in dims.values()).most_common(1)[0][0]
    return LoRAConfig(rank, alpha, conv_rank, conv_alpha, type=kind, **trained)
