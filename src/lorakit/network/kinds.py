"""The network types a kohya-named file can hold, told apart by their key suffixes, and
each one's weight update ΔW: the one place the formulas live.

The formulas are LyCORIS' (its `lycoris.functional` and modules, version 4.1.3), which
ComfyUI and A1111 re-implement the same way; tests/test_network_types.py proves the
modules built on them match LyCORIS' own forward within 1e-5:

- LoRA (and LoCon): ΔW = alpha/r · up @ down.
- LoHa: ΔW = alpha/r · (w1_a @ w1_b) ⊙ (w2_a @ w2_b); a conv's `_b` factors are flattened
  to r × (in·kh·kw).
- LoKr: ΔW = alpha/r · w1 ⊗ w2, each side full or a product `_a @ _b`; r is the rank of a
  factorised side (w2 first, as ComfyUI reads it); with both sides full the scale is 1.
  A conv's `w1` is a/c-only, its `w2` carries the kernel (full: 4-D; factorised: flattened).
- DoRA (`dora_scale`, any of the above): W' = (W + ΔW) · m / ‖W + ΔW‖, the norm per
  output row as LyCORIS writes `dora_scale` by default (shape (out, 1[, 1, 1])).

Tucker-decomposed conv files (`hada_t1`, `lokr_t2`, `lora_mid`) are refused in one line.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import torch

from lorakit.errors import LorakitError

LORA_KEYS = (".lora_down.weight", ".lora_up.weight")
LOHA_KEYS = (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b")
LOKR_KEYS = (".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b")
ALPHA = ".alpha"
DORA_SCALE = ".dora_scale"
_TUCKER = (".hada_t1", ".hada_t2", ".lokr_t2", ".lora_mid.weight")
# Every suffix a module of each type may carry; dora_scale goes with any of them.
SUFFIXES = {
    "lora": (*LORA_KEYS, ALPHA, DORA_SCALE),
    "dora": (*LORA_KEYS, ALPHA, DORA_SCALE),
    "loha": (*LOHA_KEYS, ALPHA, DORA_SCALE),
    "lokr": (*LOKR_KEYS, ALPHA, DORA_SCALE),
}
LABELS = {"lora": "LoRA", "dora": "DoRA", "loha": "LoHa", "lokr": "LoKr"}
ALL_SUFFIXES = frozenset(s for suffixes in SUFFIXES.values() for s in suffixes)


def module_kind(suffixes: Collection[str]) -> str | None:
    """ "lora", "dora" (LoRA + dora_scale), "loha" or "lokr" from one module's key suffixes;
    None when they hold none of these. Tucker files get a one-line LorakitError."""
    tucker = [s for s in _TUCKER if s in suffixes]
    if tucker:
        raise LorakitError(
            f"`{tucker[0]}`: Tucker-decomposed (use_tucker) LyCORIS modules are not "
            "supported; retrain without use_tucker"
        )
    if ".hada_w1_a" in suffixes:
        return "loha"
    if any(s.startswith(".lokr_") for s in suffixes):
        return "lokr"
    if LORA_KEYS[0] in suffixes:
        return "dora" if DORA_SCALE in suffixes else "lora"
    return None


def _required(kind: str, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The weight suffixes a module of `kind` needs, given which LoKr sides are factorised."""
    if kind in ("lora", "dora"):
        return list(LORA_KEYS)
    if kind == "loha":
        return list(LOHA_KEYS)
    sides = []
    for side in ("w1", "w2"):
        full = f".lokr_{side}"
        sides += [full] if full in tensors else [f"{full}_a", f"{full}_b"]
    return sides


def missing_keys(kind: str, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    return [s for s in _required(kind, tensors) if s not in tensors]


def module_rank(kind: str, tensors: Mapping[str, torch.Tensor]) -> int | None:
    """The rank alpha is divided by; None for a LoKr with both sides full (scale 1)."""
    if kind in ("lora", "dora"):
        return int(tensors[LORA_KEYS[0]].shape[0])
    if kind == "loha":
        return int(tensors[".hada_w1_b"].shape[0])
    for key in (".lokr_w2_b", ".lokr_w1_b"):
        if key in tensors:
            return int(tensors[key].shape[0])
    return None


def module_alpha(kind: str, tensors: Mapping[str, torch.Tensor]) -> float:
    """The file's alpha, or the rank when it has none (no scaling), as every reader does."""
    rank = module_rank(kind, tensors)
    if ALPHA in tensors:
        return float(tensors[ALPHA].float().reshape(-1)[0])
    return float(rank or 1)


def module_scale(kind: str, tensors: Mapping[str, torch.Tensor]) -> float:
    rank = module_rank(kind, tensors)
    return module_alpha(kind, tensors) / rank if rank else 1.0


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS' split of a LoKr dimension into (m, n), m ≤ n, m·n = dimension: m = `factor`
    when it divides; otherwise the divisor pair closest to a square with m ≤ factor
    (factor -1: no bound). `m` sizes the small Kronecker factor w1, `n` the large w2."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (m, n) if m <= n else (n, m)
    bound = dimension if factor < 0 else factor
    m, n = 1, dimension
    while m < n:
        step = m + 1
        while dimension % step:
            step += 1
        pair = (step, dimension // step)
        if sum(pair) > m + n or step > bound:
            break
        m, n = pair
    return (m, n) if m <= n else (n, m)


def lora_delta(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """up @ down as an out × (in·kh·kw) matrix (unscaled)."""
    return up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)


def loha_delta(
    w1a: torch.Tensor, w1b: torch.Tensor, w2a: torch.Tensor, w2b: torch.Tensor
) -> torch.Tensor:
    """(w1_a @ w1_b) ⊙ (w2_a @ w2_b) as an out × (in·kh·kw) matrix (unscaled)."""
    return (w1a @ w1b) * (w2a @ w2b)


def lokr_delta(w1: torch.Tensor, w2: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """w1 ⊗ w2 in the layer's weight `shape` (unscaled). A conv's w2 gets its kernel back
    from the flattened layout; w1 is broadcast over the kernel, as LyCORIS does."""
    if len(shape) == 4:
        w2 = w2.reshape(w2.shape[0], -1, *shape[2:])
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2).reshape(shape)


def _side(tensors: Mapping[str, torch.Tensor], side: str) -> torch.Tensor:
    full = tensors.get(f".lokr_{side}")
    if full is not None:
        return full.float()
    return tensors[f".lokr_{side}_a"].float() @ tensors[f".lokr_{side}_b"].float()


def delta_weight(
    kind: str, tensors: Mapping[str, torch.Tensor], shape: tuple[int, ...]
) -> torch.Tensor:
    """Scaled ΔW (fp32, the layer's weight `shape`) of one module's file tensors, before
    any DoRA rescaling (see `decomposed`)."""
    t = {suffix: value.float() for suffix, value in tensors.items()}
    if kind in ("lora", "dora"):
        delta = lora_delta(t[LORA_KEYS[0]], t[LORA_KEYS[1]])
    elif kind == "loha":
        delta = loha_delta(*(t[key].reshape(t[key].shape[0], -1) for key in LOHA_KEYS))
    else:
        delta = lokr_delta(_side(t, "w1"), _side(t, "w2"), shape)
    return delta.reshape(shape) * module_scale(kind, tensors)


def decomposed(
    weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, multiplier: float
) -> torch.Tensor:
    """DoRA's change to `weight`: multiplier · ((W + ΔW) · m / ‖W + ΔW‖_row − W).

    At multiplier 1 this is LyCORIS' forward; the multiplier scales the whole change, as
    ComfyUI and A1111 apply a DoRA at a weight, so weight 0 is the base model.
    """
    merged = weight + delta
    norm = merged.reshape(merged.shape[0], -1).norm(dim=1)
    norm = norm.reshape(-1, *[1] * (merged.dim() - 1)) + torch.finfo(merged.dtype).eps
    return (merged * (magnitude.reshape(norm.shape) / norm) - weight) * multiplier


def module_change(
    kind: str, tensors: Mapping[str, torch.Tensor], weight: torch.Tensor, multiplier: float
) -> torch.Tensor:
    """What one module at `multiplier` adds to the layer `weight` (fp32): multiplier · ΔW,
    or DoRA's change when the module has a dora_scale (how merging bakes it in)."""
    delta = delta_weight(kind, tensors, tuple(weight.shape))
    magnitude = tensors.get(DORA_SCALE)
    if magnitude is None:
        return delta * multiplier
    return decomposed(weight, delta, magnitude.float(), multiplier)


def delta_shape_fits(
    kind: str, tensors: Mapping[str, torch.Tensor], shape: tuple[int, ...]
) -> bool:
    """Whether the module's factors make a ΔW of the layer weight `shape` (a 1×1 conv
    also takes 2-D factors) and any dora_scale has one entry per output row."""
    out, fan_in = shape[0], 1
    for size in shape[1:]:
        fan_in *= size
    t = tensors
    if kind in ("lora", "dora"):
        down, up = t[LORA_KEYS[0]], t[LORA_KEYS[1]]
        dims = (up.shape[0], down[0].numel(), up[0].numel(), down.shape[0])
        fits = dims[:2] == (out, fan_in) and dims[2] == dims[3]
        kernel_known = down.dim() == 4 and len(shape) == 4
        fits = fits and (not kernel_known or tuple(down.shape[2:]) == tuple(shape[2:]))
    elif kind == "loha":
        w = [t[key].reshape(t[key].shape[0], -1) for key in LOHA_KEYS]
        fits = all((a.shape[0], b.shape[1]) == (out, fan_in) for a, b in (w[:2], w[2:]))
        fits = fits and w[0].shape[1] == w[1].shape[0] and w[2].shape[1] == w[3].shape[0]
    else:
        try:
            fits = lokr_delta(_side(t, "w1"), _side(t, "w2"), shape).shape == shape
        except RuntimeError:
            fits = False
    scale = t.get(DORA_SCALE)
    return fits and (scale is None or scale.numel() == out)


def refuse_lycoris(kinds: Iterable[str], source: str) -> None:
    """The diffusers/peft LoRA format holds LoRA (and LoCon) modules only: a file with any
    other of `kinds` (one per module) is refused rather than converted into another network."""
    others = sorted({LABELS[kind] for kind in kinds if kind != "lora"})
    if others:
        raise LorakitError(
            f"{source}: a {'/'.join(others)} network (LyCORIS); the diffusers format holds "
            "LoRA/LoCon only, keep the kohya file"
        )
