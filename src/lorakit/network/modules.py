"""The LoRA layer: a module that wraps one Linear or Conv2d of the base model.

It replaces the wrapped module in its parent (no forward hooks, no monkey-patched
`forward`), so the training hot path is one extra down/up product per layer and nothing
else: no Python dict lookups, no per-call allocation beyond the two small matmuls. The
forward is `base(x) + multiplier * scale * up(dropout(down(x)))` with `scale = alpha /
rank`, exactly sd-scripts' LoRAModule, so files trained here behave the same everywhere.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LoRATarget = nn.Linear | nn.Conv2d


def innermost(module: nn.Module) -> nn.Module:
    """The original layer under any stack of LoRA wrappers (several networks may stack)."""
    while isinstance(module, LoRAModule):
        module = module.base
    return module


class LoRAModule(nn.Module):
    """One low-rank adapter around `base` (a Linear, a 1×1 conv or a k×k conv).

    Conv layers keep the base's kernel, stride and padding in `lora_down` and use a 1×1
    `lora_up`, as sd-scripts does, so a 3×3 LoCon file has the same weight shapes.
    Dropout acts on the rank-sized activation after `lora_down` (sd-scripts' "neuron
    dropout"); it is a no-op in eval mode.
    """

    def __init__(
        self,
        name: str,
        base: nn.Module,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        layer = innermost(base)
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            raise TypeError(f"{name}: LoRA wraps Linear or Conv2d, not {type(layer).__name__}")
        self.name = name
        self.base = base
        self.rank = int(rank)
        self.alpha_value = float(alpha) if alpha else float(rank)
        self.multiplier = float(multiplier)
        self.lora_down, self.lora_up = _make_pair(layer, self.rank)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Down like Microsoft's LoRA (kaiming uniform, a=√5); up zero, so it starts as a no-op."""
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    @property
    def scale(self) -> float:
        """alpha / rank: derived, so loading a file's alpha is all it takes to rescale."""
        return self.alpha_value / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        dtype = self.lora_down.weight.dtype
        # Under autocast the two matmuls pick their own dtype (casting x here would only
        # copy it); without it the adapter runs in its parameters' dtype (fp32 beside bf16
        # frozen weights) and hands the base's dtype back. The scale rides in the add.
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(dtype)
        lora = self.lora_up(self.dropout(self.lora_down(x)))
        return out.add(lora.to(out.dtype), alpha=self.multiplier * self.scale)

    def extra_repr(self) -> str:
        return f"name={self.name}, rank={self.rank}, alpha={self.alpha_value:g}"


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
