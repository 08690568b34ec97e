"""LoRANetwork: LoRA modules injected into a base model, saved and loaded by kohya names.

Injection replaces each target layer in its parent with a `LoRAModule` that holds the
original; `remove()` puts the originals back. Networks stack: a second network wraps the
first one's modules, and any of them can be removed in any order, which is how inference
applies several LoRAs at once without merging weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models.base import BaseModel, ModelFamily
from lorakit.network.config import LoRAConfig
from lorakit.network.files import (
    SUFFIXES,
    ModuleDims,
    load_lora_file,
    module_dims,
    parse_dtype,
    save_lora_file,
    split_key,
)
from lorakit.network.metadata import lora_metadata
from lorakit.network.modules import LoRAModule
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
    """The LoRA modules of one network; its parameters are only the LoRA weights."""

    def __init__(
        self,
        base: BaseModel,
        plan: Sequence[tuple[Site, int, float]],
        config: LoRAConfig,
        multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.family = base.family
        self.config = config
        self.loras: list[LoRAModule] = []
        self._sites: list[Site] = []
        self.adapters = nn.ModuleDict()
        for site, rank, alpha in plan:
            module = LoRAModule(
                site.name, getattr(site.parent, site.attr), rank, alpha, config.dropout, multiplier
            )
            setattr(site.parent, site.attr, module)
            self.loras.append(module)
            self._sites.append(site)
            self.adapters[site.name] = nn.ModuleDict(
                {"lora_down": module.lora_down, "lora_up": module.lora_up}
            )
        self._multiplier = float(multiplier)
        self._injected = True

    @classmethod
    def inject(cls, base: BaseModel, config: LoRAConfig, multiplier: float = 1.0) -> LoRANetwork:
        """Wrap sd-scripts' default targets of `base` (plus 3×3 convs when conv_rank is set)."""
        sites = network_sites(
            base,
            unet=config.train_unet,
            text=config.train_text_encoder,
            conv=config.conv_rank is not None,
        )
        linear = (config.rank, float(config.alpha))
        conv = (config.conv_rank, config.effective_conv_alpha) if config.conv_rank else linear
        plan = [(site, *(conv if site.kind == "conv" else linear)) for site in sites]
        return cls(base, plan, config, multiplier)

    @classmethod
    def from_state_dict(
        cls,
        base: BaseModel,
        state: Mapping[str, torch.Tensor],
        multiplier: float = 1.0,
        source: str = "LoRA",
    ) -> LoRANetwork:
        """A network shaped like the kohya weights in `state` (per-module rank/alpha), loaded.

        Any Linear/Conv2d of the base may carry a module, not only sd-scripts' defaults, so
        files from other trainers (LoCon on conv_in, time embedding, ...) load too.
        """
        dims = module_dims(state, source)
        index = site_index(all_sites(base))
        unknown = sorted(name for name in dims if name not in index)
        if unknown:
            raise LorakitError(
                f"{source}: {len(unknown)} modules do not exist in this {base.family.value} base "
                f"(e.g. {unknown[0]}); check the base model family"
            )
        plan = [(index[name], d.rank, d.alpha) for name, d in dims.items()]
        network = cls(base, plan, config_from_dims(dims), multiplier)
        try:
            network.load_kohya_state_dict(state)
        except LorakitError:
            network.remove()
            raise
        return network

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

    def part_modules(self, part: str) -> list[LoRAModule]:
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
            params = [
                p for m in self.part_modules(part) for p in (m.lora_down.weight, m.lora_up.weight)
            ]
            for param in params:
                param.requires_grad_(lr > 0)
            if lr > 0:
                groups.append({"params": params, "lr": float(lr), "name": part})
        return groups

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Weights under sd-scripts' keys: `<name>.lora_down.weight`, `.lora_up.weight`, `.alpha`.

        `.alpha` is a 0-d tensor, as sd-scripts writes it.
        """
        state: dict[str, torch.Tensor] = {}
        for module in self.loras:
            down = module.lora_down.weight.detach()
            up = module.lora_up.weight.detach()
            alpha = torch.tensor(module.alpha_value)
            if dtype is not None:
                down, up, alpha = down.to(dtype), up.to(dtype), alpha.to(dtype)
            state[f"{module.name}.lora_down.weight"] = down
            state[f"{module.name}.lora_up.weight"] = up
            state[f"{module.name}.alpha"] = alpha
        return state

    def load_kohya_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load kohya weights (either SDXL spelling); alpha from the file sets each scale."""
        index = site_index(self._sites)
        modules = {module.name: module for module in self.loras}
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        unexpected = []
        for key, value in state.items():
            name, suffix = split_key(key)
            site = index.get(name)
            if site is None or suffix not in SUFFIXES:
                unexpected.append(key)
                continue
            grouped.setdefault(site.name, {})[suffix] = value
        missing = [name for name in modules if ".lora_down.weight" not in grouped.get(name, {})]
        if strict and (unexpected or missing):
            example = (unexpected or missing)[0]
            raise LorakitError(
                f"LoRA weights do not match the network: {len(unexpected)} unexpected and "
                f"{len(missing)} missing modules (e.g. {example}); use a file made for this base"
            )
        for name, tensors in grouped.items():
            _load_module(modules[name], tensors)

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
            while isinstance(current, LoRAModule) and current.base is not module:
                current = current.base
            if not isinstance(current, LoRAModule):
                raise RuntimeError(f"{module.name}: LoRA module not found where it was injected")
            current.base = module.base
        self._injected = False


def _load_module(module: LoRAModule, tensors: Mapping[str, torch.Tensor]) -> None:
    for suffix, target in (
        (".lora_down.weight", module.lora_down),
        (".lora_up.weight", module.lora_up),
    ):
        value = tensors.get(suffix)
        if value is None:
            raise LorakitError(f"{module.name}: `{suffix}` missing; the LoRA file is incomplete")
        if value.dim() == 2 and target.weight.dim() == 4:
            value = value[:, :, None, None]
        if value.shape != target.weight.shape:
            raise LorakitError(
                f"{module.name}{suffix}: shape {tuple(value.shape)} does not fit "
                f"{tuple(target.weight.shape)}; the LoRA was made for another base model"
            )
        with torch.no_grad():
            target.weight.copy_(value)
    if ".alpha" in tensors:
        module.alpha_value = float(tensors[".alpha"].float().reshape(-1)[0])


def config_from_dims(dims: Mapping[str, ModuleDims]) -> LoRAConfig:
    """The most common linear and conv rank/alpha: what the file was most likely trained with."""
    linear = Counter((d.rank, d.alpha) for d in dims.values() if not d.is_conv)
    conv = Counter((d.rank, d.alpha) for d in dims.values() if d.is_conv)
    rank, alpha = linear.most_common(1)[0][0] if linear else (16, 8.0)
    conv_rank, conv_alpha = conv.most_common(1)[0][0] if conv else (None, None)
    parts = {"train_unet": "lora_unet_", "train_text_encoder": "lora_te"}
    trained = {part: any(n.startswith(prefix) for n in dims) for part, prefix in parts.items()}
    return LoRAConfig(rank, alpha, conv_rank, conv_alpha, **trained)
