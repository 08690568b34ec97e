"""The adapter layers: modules that wrap one Linear or Conv2d of the base model.

Each replaces the wrapped module in its parent (no forward hooks, no monkey-patched
`forward`) and computes `base(x) + multiplier · Δ(x)`. `AdapterModule` holds what every
network type shares (name, rank/alpha, multiplier, the optional DoRA magnitude, loading
and saving by kohya suffix); the types differ only in their factors and in how they make
ΔW (`lorakit.network.kinds` has the formulas). LoRA keeps its two-matmul hot path, so
training a plain LoRA costs what it did: no Python dict lookups, no per-call allocation
beyond the two small matmuls. Its forward is `base(x) + multiplier * scale *
up(dropout(down(x)))` with `scale = alpha / rank`, exactly sd-scripts' LoRAModule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lorakit.errors import LorakitError
from lorakit.network.kinds import ALPHA, DORA_SCALE, decomposed, lora_delta

LoRATarget = nn.Linear | nn.Conv2d


def innermost(module: nn.Module) -> nn.Module:
    """The original layer under any stack of adapters (several networks may stack)."""
    while isinstance(module, AdapterModule):
        module = module.base
    return module


def load_module_tensors(
    module: nn.Module, targets: Mapping[str, nn.Parameter], tensors: Mapping[str, torch.Tensor]
) -> None:
    """Copy one module's file tensors (by kohya suffix) into `targets` and take the file's
    alpha; a missing or misshapen tensor is a one-line error naming the module. 2-D
    weights fit 1×1 convs, as kohya files store them either way."""
    for suffix, target in targets.items():
        value = tensors.get(suffix)
        if value is None:
            raise LorakitError(f"{module.name}: `{suffix}` missing; the file is incomplete")
        if value.numel() == target.numel() and value.dim() != target.dim():
            value = value.reshape(target.shape)
        if value.shape != target.shape:
            raise LorakitError(
                f"{module.name}{suffix}: shape {tuple(value.shape)} does not fit "
                f"{tuple(target.shape)}; the file was made for another base model"
            )
        with torch.no_grad():
            target.copy_(value)
    if ALPHA in tensors:
        module.alpha_value = float(tensors[ALPHA].float().reshape(-1)[0])


class AdapterModule(nn.Module):
    """What every adapter type shares; subclasses add their factors and `delta_weight`.

    `magnitude` (DoRA's `dora_scale`) switches the forward to the weight-decomposed one:
    the update is then computed against the original layer weight (the innermost layer,
    so a DoRA stacked on other adapters decomposes the base weight, not their sum).
    """

    kind = ""

    def __init__(
        self, name: str, base: nn.Module, rank: int, alpha: float, multiplier: float = 1.0
    ) -> None:
        super().__init__()
        layer = innermost(base)
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            raise TypeError(f"{name}: adapters wrap Linear or Conv2d, not {type(layer).__name__}")
        self.name = name
        self.base = base
        self.rank = int(rank)
        self.alpha_value = float(alpha) if alpha else float(rank)
        self.multiplier = float(multiplier)
        self.magnitude: nn.Parameter | None = None

    @property
    def layer(self) -> LoRATarget:
        layer = innermost(self.base)
        assert isinstance(layer, nn.Linear | nn.Conv2d)
        return layer

    @property
    def is_conv(self) -> bool:
        """A k×k conv (trained at conv_rank); Linear and 1×1 convs count as linear."""
        layer = self.layer
        return isinstance(layer, nn.Conv2d) and layer.kernel_size != (1, 1)

    @property
    def scale(self) -> float:
        """alpha / rank: derived, so loading a file's alpha is all it takes to rescale."""
        return self.alpha_value / self.rank

    def decompose(self) -> None:
        """Add DoRA's magnitude, initialised to the base weight's row norms (ΔW = 0 then)."""
        weight = self.layer.weight.detach().float()
        norms = weight.reshape(weight.shape[0], -1).norm(dim=1)
        self.magnitude = nn.Parameter(norms.reshape(-1, *[1] * (weight.dim() - 1)))

    def factors(self) -> dict[str, nn.Parameter]:
        """The trained tensors by kohya suffix (weights only, not alpha)."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """Scaled ΔW in the layer weight's shape (without multiplier or DoRA)."""
        raise NotImplementedError

    def tensors_by_suffix(self) -> dict[str, nn.Parameter]:
        """The trained tensors by kohya suffix: the factors and any DoRA magnitude."""
        own = dict(self.factors())
        if self.magnitude is not None:
            own[DORA_SCALE] = self.magnitude
        return own

    def trainable(self) -> list[nn.Parameter]:
        return list(self.tensors_by_suffix().values())

    def _weight_delta(self) -> torch.Tensor:
        """multiplier · ΔW as applied, DoRA included."""
        delta = self.delta_weight()
        if self.magnitude is None:
            return delta * self.multiplier
        weight = self.layer.weight.to(delta.dtype)
        return decomposed(weight, delta, self.magnitude.to(delta.dtype), self.multiplier)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """multiplier · Δ(x) through the rebuilt ΔW and the layer's own op (LyCORIS'
        default forward), so a conv keeps its stride, padding and groups."""
        delta, layer = self._weight_delta().to(x.dtype), self.layer
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(
                x, delta, None, layer.stride, layer.padding, layer.dilation, layer.groups
            )
        return F.linear(x, delta)

    def adapter_input(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Under autocast the adapter ops pick their own dtype (casting x here would only
        copy it); without it the adapter runs in its parameters' `dtype` (fp32 beside bf16
        frozen weights) and the forward hands the base's dtype back."""
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
            return x.to(dtype)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        x = self.adapter_input(x, next(iter(self.factors().values())).dtype)
        return out + self.adapter_output(x).to(out.dtype)

    def kohya_tensors(self) -> dict[str, torch.Tensor]:
        """This module's file tensors by suffix; alpha 0-d, as sd-scripts writes it."""
        tensors = {suffix: p.detach() for suffix, p in self.tensors_by_suffix().items()}
        tensors[ALPHA] = torch.tensor(self.alpha_value)
        return tensors

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy a file's tensors in (2-D weights fit 1×1 convs); one-line errors."""
        load_module_tensors(self, self.tensors_by_suffix(), tensors)

    def extra_repr(self) -> str:
        return f"name={self.name}, {self.kind}, rank={self.rank}, alpha={self.alpha_value:g}"


class LoRAModule(AdapterModule):
    """One low-rank adapter around `base` (a Linear, a 1×1 conv or a k×k conv); with a
    magnitude it is DoRA (LyCORIS' `dora_wd`), whose file adds `dora_scale`.

    Conv layers keep the base's kernel, stride and padding in `lora_down` and use a 1×1
    `lora_up`, as sd-scripts does, so a 3×3 LoCon file has the same weight shapes.
    Dropout acts on the rank-sized activation after `lora_down` (sd-scripts' "neuron
    dropout"); it is a no-op in eval mode, and DoRA has none (as in LyCORIS).
    """

    kind = "lora"

    def __init__(
        self,
        name: str,
        base: nn.Module,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        multiplier: float = 1.0,
    ) -> None:
        super().__init__(name, base, rank, alpha, multiplier)
        self.lora_down, self.lora_up = _make_pair(self.layer, self.rank)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Down like Microsoft's LoRA (kaiming uniform, a=√5); up zero, so it starts as a no-op."""
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def decompose(self) -> None:
        super().decompose()
        self.kind = "dora"

    def factors(self) -> dict[str, nn.Parameter]:
        return {".lora_down.weight": self.lora_down.weight, ".lora_up.weight": self.lora_up.weight}

    def delta_weight(self) -> torch.Tensor:
        delta = lora_delta(self.lora_down.weight, self.lora_up.weight) * self.scale
        return delta.reshape(self.layer.weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.magnitude is not None:
            return super().forward(x)
        out = self.base(x)
        x = self.adapter_input(x, self.lora_down.weight.dtype)
        lora = self.lora_up(self.dropout(self.lora_down(x)))
        # The scale rides in the add: no extra pass over the output.
        return out.add(lora.to(out.dtype), alpha=self.multiplier * self.scale)


def _make_pair(layer: LoRATarget, rank: int) -> tuple[nn.Module, nn.Module]:
    """Down/up layers on the base layer's device; fp32 so training updates are not lost."""
    device = layer.weight.device
    if isinstance(layer, nn.Conv2d):
        down = nn.Conv2d(
            layer.in_channels,
            rank,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            bias=False,
            device=device,
        )
        up = nn.Conv2d(rank, layer.out_channels, 1, bias=False, device=device)
        return down, up
    down = nn.Linear(layer.in_features, rank, bias=False, device=device)
    up = nn.Linear(rank, layer.out_features, bias=False, device=device)
    return down, up
