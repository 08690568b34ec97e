"""A trainable FLUX.1 LoRA in kohya's layout, on diffusers' split layers.

sd-scripts trains FLUX.1 on BFL's fused Linears (`img_attn.qkv`, `linear1`): one
`lora_down` (rank × in) and one `lora_up` (rows × rank) per fused layer. diffusers splits
those layers (`to_q`/`to_k`/`to_v`, + `proj_mlp`), so here each kohya module keeps kohya's
two matrices and every split Linear it covers adds its own rows of the update:
`base(x) + multiplier · alpha/rank · up[rows] · down · x`. That is exactly what a kohya
file means and what `network.flux.flux_kohya_to_diffusers` hands to diffusers, so the
tensors trained are the tensors saved, with no conversion or refactoring on the way out.

The shared `lora_down` is applied once per split Linear (3–4× for a fused layer): rank ×
in per token, small beside the base layer, and it keeps each wrapper independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models.flux.memory import Fp8Linear
from lorakit.models.flux.model import FluxModel
from lorakit.network.files import (
    group_by_module,
    module_dims,
    parse_dtype,
    refuse_unmatched,
    save_lora_file,
)
from lorakit.network.flux import CLIP_PREFIX, FluxSite, flux_module, flux_sites
from lorakit.network.flux_files import flux_lora_metadata
from lorakit.network.kinds import refuse_lycoris
from lorakit.network.lora import config_from_dims
from lorakit.network.modules import load_module_tensors

_DOWN, _UP, _ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"


class FluxLoRAModule(nn.Module):
    """One kohya module: `lora_down` shared by its Linears, `lora_up` over all their rows.

    fp32 parameters on the base layer's device, so updates are not lost beside bf16
    weights; initialised as sd-scripts does (down kaiming-uniform a=√5, up zero), so the
    network starts as a no-op."""

    def __init__(self, site: FluxSite, rank: int, alpha: float, device: torch.device) -> None:
        super().__init__()
        self.name = site.name
        self.rank = int(rank)
        self.alpha_value = float(alpha) if alpha else float(rank)
        self.multiplier = 1.0
        self.lora_down = nn.Linear(site.in_features, self.rank, bias=False, device=device)
        self.lora_up = nn.Linear(self.rank, sum(site.rows), bias=False, device=device)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    @property
    def scale(self) -> float:
        return self.alpha_value / self.rank

    def extra_repr(self) -> str:
        return f"name={self.name}, rank={self.rank}, alpha={self.alpha_value:g}"


class FluxLoRALinear(nn.Module):
    """A diffusers Linear plus rows [start, stop) of one kohya module's update."""

    def __init__(self, base: nn.Linear, lora: FluxLoRAModule, start: int, stop: int) -> None:
        super().__init__()
        self.base, self.lora, self.start, self.stop = base, lora, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        lora = self.lora
        down = lora.lora_down.weight
        # Outside autocast the adapter runs in its own (fp32) dtype, as network.modules does.
        if x.dtype != down.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(down.dtype)
        delta = F.linear(F.linear(x, down), lora.lora_up.weight[self.start : self.stop])
        return out.add(delta.to(out.dtype), alpha=lora.multiplier * lora.scale)


def _refuse_injected(model: FluxModel) -> None:
    """One line instead of a double wrap when a FLUX LoRA is already in `model`."""
    for root in (model.transformer, model.text_encoders[0]):
        if any(isinstance(module, FluxLoRALinear) for module in root.modules()):
            raise LorakitError("the model already carries a FLUX.1 LoRA; remove it first")


def _parent(model: FluxModel, key: str) -> tuple[nn.Module, str]:
    """The module holding the Linear a diffusers key names, and its attribute there."""
    path, _, attr = key.rpartition(".")
    return flux_module(model, path), attr


class FluxLoRANetwork(nn.Module):
    """Kohya FLUX.1 LoRA modules injected into a FluxModel; its parameters are only theirs."""

    def __init__(
        self, model: FluxModel, sites: list[FluxSite], dims: Mapping[str, tuple[int, float]]
    ) -> None:
        """Wrap every target Linear of `sites` with a module of `dims[name]` (rank, alpha)."""
        super().__init__()
        self.variant = model.variant
        self.sites = list(sites)
        self.loras = nn.ModuleDict()
        self._wrapped: list[tuple[nn.Module, str, FluxLoRALinear]] = []
        found = []
        for site in self.sites:  # every layer checked before any is wrapped
            parents = [_parent(model, target) for target in site.targets]
            layers = [getattr(parent, attr) for parent, attr in parents]
            if not all(type(layer) in (nn.Linear, Fp8Linear) for layer in layers):
                raise LorakitError(f"{site.name}: the layer is not a plain Linear; remove its LoRA")
            found.append((site, parents, layers))
        for site, parents, layers in found:
            lora = FluxLoRAModule(site, *dims[site.name], layers[0].weight.device)
            self.loras[site.name] = lora
            start = 0
            for (parent, attr), layer, rows in zip(parents, layers, site.rows, strict=True):
                wrapper = FluxLoRALinear(layer, lora, start, start + rows)
                setattr(parent, attr, wrapper)
                self._wrapped.append((parent, attr, wrapper))
                start += rows

    @classmethod
    def inject(
        cls, model: FluxModel, rank: int, alpha: float, *, text_encoder: bool = False
    ) -> FluxLoRANetwork:
        """sd-scripts' default FLUX.1 modules (the transformer's blocks; CLIP-L's too when
        `text_encoder`) at one rank and alpha."""
        _refuse_injected(model)
        sites = flux_sites(model, text_encoder=text_encoder)
        return cls(model, sites, dict.fromkeys((s.name for s in sites), (rank, alpha)))

    @classmethod
    def from_state_dict(
        cls, model: FluxModel, state: Mapping[str, torch.Tensor], source: str = "LoRA"
    ) -> FluxLoRANetwork:
        """A network shaped like a kohya FLUX.1 file (per-module rank and alpha), loaded."""
        _refuse_injected(model)
        found = module_dims(state, source)
        refuse_lycoris((d.kind for d in found.values()), source)
        clip = any(name.startswith(CLIP_PREFIX) for name in found)
        by_name = {site.name: site for site in flux_sites(model, text_encoder=clip)}
        unknown = sorted(set(found) - set(by_name))
        if unknown:
            raise LorakitError(
                f"{source}: {len(unknown)} modules are not FLUX.1 LoRA layers of this model "
                f"(e.g. {unknown[0]}); check the file"
            )
        sites = [site for name, site in by_name.items() if name in found]
        network = cls(model, sites, {n: (d.rank, d.alpha) for n, d in found.items()})
        network.load_kohya_state_dict(state, source=source)
        return network

    @property
    def modules_by_name(self) -> dict[str, FluxLoRAModule]:
        return dict(self.loras.items())  # type: ignore[arg-type]

    @property
    def multiplier(self) -> float:
        return next(iter(self.modules_by_name.values())).multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        for lora in self.modules_by_name.values():
            lora.multiplier = float(value)

    def param_groups(
        self, transformer_lr: float, text_encoder_lr: float | None = None
    ) -> list[dict[str, object]]:
        """Optimizer groups: the transformer's modules, and CLIP-L's at their own rate
        (default: the transformer's); a part with lr 0 is frozen and left out."""
        rates = {"transformer": transformer_lr, "text_encoder": text_encoder_lr}
        if text_encoder_lr is None:
            rates["text_encoder"] = transformer_lr
        groups = []
        for part, lr in rates.items():
            is_clip = part == "text_encoder"
            params = [
                p
                for name, lora in self.modules_by_name.items()
                if name.startswith(CLIP_PREFIX) == is_clip
                for p in lora.parameters()
            ]
            for param in params:
                param.requires_grad_(lr > 0)
            if params and lr > 0:
                groups.append({"params": params, "lr": float(lr), "name": part})
        return groups

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """`<name>.lora_down.weight`, `.lora_up.weight` and a 0-d `.alpha` per module, the
        keys sd-scripts' `networks/lora_flux.py` writes."""
        state: dict[str, torch.Tensor] = {}
        for name, lora in self.modules_by_name.items():
            down, up = lora.lora_down.weight.detach(), lora.lora_up.weight.detach()
            state[name + _DOWN] = down if dtype is None else down.to(dtype)
            state[name + _UP] = up if dtype is None else up.to(dtype)
            state[name + _ALPHA] = torch.tensor(lora.alpha_value)
        return state

    def load_kohya_state_dict(
        self, state: Mapping[str, torch.Tensor], strict: bool = True, source: str = "LoRA"
    ) -> None:
        """Copy kohya tensors in; alpha from the file sets each scale. Strict: every module
        present and nothing else; shapes must fit in any case."""
        modules = self.modules_by_name

        def module_of(name: str, suffix: str) -> str | None:
            return name if name in modules and suffix in (_DOWN, _UP, _ALPHA) else None

        grouped, unexpected = group_by_module(state, module_of)
        missing = [n for n in modules if _DOWN not in grouped.get(n, {})]
        if strict:
            refuse_unmatched(source, unexpected, missing, "use a FLUX.1 LoRA made for this model")
        for name, tensors in grouped.items():
            lora = modules[name]
            targets = {_DOWN: lora.lora_down.weight, _UP: lora.lora_up.weight}
            try:
                load_module_tensors(lora, targets, tensors)
            except LorakitError as exc:
                raise LorakitError(f"{source}: {exc}") from None

    def metadata(self, **training: object) -> dict[str, str]:
        """sd-scripts' and modelspec metadata for this network (see `flux_lora_metadata`)."""
        config = config_from_dims(module_dims(self.kohya_state_dict()))
        return flux_lora_metadata(self.variant, config, **training)

    def save(
        self,
        path: str | Path,
        *,
        dtype: torch.dtype | str = torch.float16,
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Write the kohya file atomically with FLUX.1 metadata (+ `metadata` on top)."""
        meta = self.metadata()
        meta.update(metadata or {})
        return save_lora_file(path, self.kohya_state_dict(parse_dtype(dtype)), meta)

    def remove(self) -> None:
        """Put the original Linears back (idempotent)."""
        moved = [w.lora.name for parent, attr, w in self._wrapped if getattr(parent, attr) is not w]
        if moved:
            raise LorakitError(f"{moved[0]}: wrapped again since; remove that first")
        for parent, attr, wrapper in self._wrapped:
            setattr(parent, attr, wrapper.base)
        self._wrapped = []
