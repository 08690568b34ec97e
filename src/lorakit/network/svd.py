"""Low-rank factorisations behind `lora resize`, `lora merge` and `lora extract`.

A LoRA module's update `up @ down` has rank ≤ r, so its SVD never needs the full out×in
matrix: with `up = Qu·Ru` and `downᵀ = Qd·Rd` (thin QR), `up @ down = Qu·(Ru·Rdᵀ)·Qdᵀ`, and
the SVD of the r×r core gives the exact singular vectors at a small fraction of the cost of
`torch.linalg.svd(up @ down)` (measured in `bench/lora_tools.py`). A difference of two
checkpoints is full-rank, so `extract` uses a randomized range finder with power iterations
(Halko, Martinsson & Tropp 2011), which is exact when the difference has rank ≤ its sketch.

Ranks are chosen as sd-scripts' `networks/resize_lora.py` chooses them, with σ the singular
values in decreasing order and k the rank kept (1 ≤ k ≤ the rank limit):

- fixed: k = the limit;
- `sv_ratio` p: k = the number of σᵢ > σ₀ / p;
- `sv_cumulative` p: the smallest k with Σ_{i<k} σᵢ ≥ p · Σ σᵢ;
- `sv_fro` p: the smallest k with Σ_{i<k} σᵢ² ≥ p² · Σ σᵢ² (the kept Frobenius norm ≥ p);
- a module whose σ₀ ≤ 1e-6 (nothing learnt) keeps rank 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lorakit.errors import LorakitError

MIN_SINGULAR_VALUE = 1e-6  # sd-scripts' MIN_SV: below it a module counts as empty
DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")
# Randomized SVD: sketch twice the kept rank (as sd-scripts' svd_lowrank call does) plus a
# margin, two power iterations; matrices not much wider than the sketch get an exact SVD.
_OVERSAMPLE = 8
_POWER_ITERATIONS = 2


@dataclass(frozen=True)
class SVD:
    """`u @ diag(s) @ vh`, singular values in decreasing order."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(up, down) of the best rank-`rank` approximation, √σ on each side.

        Splitting σ evenly keeps both factors on the same scale, as trained LoRAs are,
        which is what fp16 storage and further training want.
        """
        root = self.s[:rank].sqrt()
        return self.u[:, :rank] * root, root[:, None] * self.vh[:rank]


@dataclass(frozen=True)
class ModuleFit:
    """How much of one module's update a low-rank file keeps (Frobenius norms, scale applied)."""

    name: str
    rank: int
    source_rank: int | None  # the module's rank before (None: a full-rank difference)
    norm: float
    kept: float

    @property
    def fraction(self) -> float:
        return self.kept / self.norm if self.norm > 0 else 1.0


def overall_fraction(fits: Iterable[ModuleFit]) -> float:
    """Kept Frobenius norm of all modules together: √Σ kept² / √Σ norm²."""
    fits = list(fits)
    total = math.sqrt(sum(fit.norm**2 for fit in fits))
    kept = math.sqrt(sum(fit.kept**2 for fit in fits))
    return kept / total if total > 0 else 1.0


def product_svd(up: torch.Tensor, down: torch.Tensor) -> SVD:
    """Exact thin SVD of `up @ down` (out×r times r×in) without forming the product."""
    q_up, r_up = torch.linalg.qr(up)
    q_down, r_down = torch.linalg.qr(down.T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T)
    return SVD(q_up @ u, s, vh @ q_down.T)


def randomized_svd(matrix: torch.Tensor, rank: int, seed: int = 0) -> SVD:
    """The leading `rank` singular triplets of `matrix` from a seeded random sketch.

    The sketch has `2·rank + 8` columns; the result is `U Uᵀ matrix` (a projection), so the
    Frobenius norm it keeps is exactly √Σσᵢ² of what it returns. Matrices whose smaller
    side is at most twice the sketch get an exact SVD instead, which is as cheap there.
    """
    sketch = 2 * rank + _OVERSAMPLE
    if min(matrix.shape) <= 2 * sketch:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return SVD(u[:, :rank], s[:rank], vh[:rank])
    generator = torch.Generator(device=matrix.device).manual_seed(seed)
    probe = torch.randn(
        matrix.shape[1], sketch, generator=generator, device=matrix.device, dtype=matrix.dtype
    )
    basis = torch.linalg.qr(matrix @ probe).Q
    for _ in range(_POWER_ITERATIONS):
        basis = torch.linalg.qr(matrix @ torch.linalg.qr(matrix.T @ basis).Q).Q
    u, s, vh = torch.linalg.svd(basis.T @ matrix, full_matrices=False)
    return SVD(basis @ u[:, :rank], s[:rank], vh[:rank])


def check_dynamic(method: str | None, param: float | None) -> None:
    """Refuse a dynamic method without a sensible parameter, before any work."""
    if method is None:
        return
    if method not in DYNAMIC_METHODS:
        raise LorakitError(f"--dynamic {method!r} unknown; use one of {', '.join(DYNAMIC_METHODS)}")
    if param is None:
        raise LorakitError(f"--dynamic {method} needs --param (e.g. --param 0.9)")
    if method == "sv_ratio" and param < 1:
        raise LorakitError(f"--dynamic sv_ratio: --param {param:g} must be ≥ 1 (e.g. 4)")
    if method != "sv_ratio" and not 0 < param <= 1:
        raise LorakitError(f"--dynamic {method}: --param {param:g} must be in (0, 1], e.g. 0.9")


def choose_rank(s: torch.Tensor, limit: int, method: str | None, param: float | None) -> int:
    """The rank to keep for singular values `s` (decreasing), as the module docstring says."""
    if s.numel() == 0 or float(s[0]) <= MIN_SINGULAR_VALUE:
        return 1
    s = s.double()
    if method is None:
        rank = limit
    elif method == "sv_ratio":
        rank = int((s > s[0] / param).sum())
    elif method == "sv_cumulative":
        rank = int(torch.searchsorted(s.cumsum(0) / s.sum(), torch.tensor(param).double())) + 1
    else:
        squares = s.square()
        target = torch.tensor(param).double() ** 2
        rank = int(torch.searchsorted(squares.cumsum(0) / squares.sum(), target)) + 1
    return max(1, min(rank, limit, s.numel()))
