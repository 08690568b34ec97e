"""LoHa and LoKr adapters, saved under LyCORIS' keys (`hada_*`, `lokr_*`) by kohya names.

Both rebuild ΔW from their factors at every call (`lorakit.network.kinds` has the
formulas) and apply it with the wrapped layer's own op, as LyCORIS' default (non-bypass)
forward does; both have conv variants (the factors flattened over in·kh·kw, a full LoKr
w2 keeping the kernel). Initialisation is LyCORIS': one factor of each starts at zero, so
a new module is a no-op, and the others are random so the first gradient is not zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.network.kinds import LOHA_KEYS, LOKR_KEYS, factorization, loha_delta, lokr_delta
from lorakit.network.modules import AdapterModule, innermost


def _parameter(shape: tuple[int, ...], device: torch.device) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device=device))


class LoHaModule(AdapterModule):
    """LoHa: ΔW = alpha/r · (w1_a @ w1_b) ⊙ (w2_a @ w2_b), rank r per pair."""

    kind = "loha"

    def __init__(
        self, name: str, base: nn.Module, rank: int, alpha: float, multiplier: float = 1.0
    ) -> None:
        super().__init__(name, base, rank, alpha, multiplier)
        weight = self.layer.weight
        out, fan_in = int(weight.shape[0]), int(weight[0].numel())
        shapes = ((out, self.rank), (self.rank, fan_in)) * 2
        self.weights = nn.ParameterDict(
            {
                key[1:]: _parameter(shape, weight.device)
                for key, shape in zip(LOHA_KEYS, shapes, strict=True)
            }
        )
        nn.init.normal_(self.weights["hada_w1_a"], std=0.1)
        nn.init.normal_(self.weights["hada_w1_b"], std=1.0)
        nn.init.zeros_(self.weights["hada_w2_a"])
        nn.init.normal_(self.weights["hada_w2_b"], std=1.0)

    def factors(self) -> dict[str, nn.Parameter]:
        return {f".{key}": value for key, value in self.weights.items()}

    def delta_weight(self) -> torch.Tensor:
        w = self.weights
        delta = loha_delta(w["hada_w1_a"], w["hada_w1_b"], w["hada_w2_a"], w["hada_w2_b"])
        return (delta * self.scale).reshape(self.layer.weight.shape)


class LoKrModule(AdapterModule):
    """LoKr: ΔW = scale · w1 ⊗ w2; `shapes` says which side is full and which a product.

    `create` lays a new module out as LyCORIS does by default: the layer's out and in
    sizes split by `factorization` into (a, b) and (c, d), w1 full (a × c), w2 a rank-r
    product (b × d·kh·kw) unless r ≥ max(b, d) / 2, where it is full too and the scale
    is 1 (alpha is then written as the rank).
    """

    kind = "lokr"

    def __init__(
        self,
        name: str,
        base: nn.Module,
        shapes: Mapping[str, tuple[int, ...]],
        alpha: float,
        multiplier: float = 1.0,
    ) -> None:
        ranks = [shapes[key][0] for key in (".lokr_w2_b", ".lokr_w1_b") if key in shapes]
        super().__init__(name, base, ranks[0] if ranks else max(int(alpha), 1), alpha, multiplier)
        self.factorised = bool(ranks)  # with both sides full the scale is 1
        device = self.layer.weight.device
        unknown = [key for key in shapes if key not in LOKR_KEYS]
        if unknown:
            raise LorakitError(f"{name}: `{unknown[0]}` is not a LoKr key; the file is damaged")
        self.weights = nn.ParameterDict(
            {key[1:]: _parameter(shape, device) for key, shape in shapes.items()}
        )
        for key, param in self.weights.items():
            if key in ("lokr_w2", "lokr_w2_b"):
                nn.init.zeros_(param)
            else:
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))

    @classmethod
    def create(
        cls, name: str, base: nn.Module, rank: int, alpha: float, factor: int = -1
    ) -> LoKrModule:
        shape = tuple(innermost(base).weight.shape)
        a, b = factorization(shape[0], factor)
        c, d = factorization(shape[1], factor)
        kernel = shape[2:]
        shapes: dict[str, tuple[int, ...]] = {".lokr_w1": (a, c)}
        if rank < max(b, d) / 2:
            shapes[".lokr_w2_a"] = (b, rank)
            shapes[".lokr_w2_b"] = (rank, d * math.prod(kernel))
        else:
            shapes[".lokr_w2"] = (b, d, *kernel)
        return cls(name, base, shapes, alpha if ".lokr_w2_b" in shapes else rank)

    @property
    def scale(self) -> float:
        return self.alpha_value / self.rank if self.factorised else 1.0

    def factors(self) -> dict[str, nn.Parameter]:
        return {f".{key}": value for key, value in self.weights.items()}

    def _side(self, side: str) -> torch.Tensor:
        w = self.weights
        full = f"lokr_{side}"
        return w[full] if full in w else w[f"{full}_a"] @ w[f"{full}_b"]

    def delta_weight(self) -> torch.Tensor:
        shape = tuple(self.layer.weight.shape)
        return lokr_delta(self._side("w1"), self._side("w2"), shape) * self.scale
