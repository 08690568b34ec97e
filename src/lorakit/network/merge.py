"""`lora merge` without `--model`: several LoRAs into one LoRA.

Σ wᵢ·ΔWᵢ = Σ wᵢ·(αᵢ/rᵢ)·upᵢ @ downᵢ = [w₁(α₁/r₁)up₁ | w₂(α₂/r₂)up₂ | …] @ [down₁; down₂; …],
so stacking the factors along the rank is an exact merge: the module's rank is the sum of
the ranks, alpha equals it (scale 1) and the weights and scales ride in `up`. Merging to a
target rank is that exact merge resized (`lorakit.network.resize`), which is the SVD of the
summed update — computed from the stacked factors, never from the out×in matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lorakit.errors import LorakitError
from lorakit.models import ModelFamily
from lorakit.network.base_weights import family_layout
from lorakit.network.files import parse_dtype, save_lora_file
from lorakit.network.pairs import LoRAFile, LoRAPair, pairs_state, read_lora, reworked_metadata
from lorakit.network.resize import check_output, check_ranks, resize_pairs
from lorakit.network.svd import ModuleFit, check_dynamic


def _check_family(loras: Sequence[tuple[LoRAFile, float]]) -> None:
    first = loras[0][0]
    for lora, _ in loras[1:]:
        if lora.family is not first.family:
            raise LorakitError(
                f"{lora.path}: a {lora.family.value} LoRA, but {first.path} is "
                f"{first.family.value}; merge LoRAs of one family"
            )


def _canonical(lora: LoRAFile) -> dict[str, LoRAPair]:
    """The file's modules under lorakit's spelling (SDXL files may use either; FLUX.1
    files have sd-scripts' one spelling)."""
    if lora.family is ModelFamily.FLUX1:
        return dict(lora.pairs)
    sites, _ = family_layout(lora.family)
    return {sites[name].name if name in sites else name: pair for name, pair in lora.pairs.items()}


def concatenate(loras: Sequence[tuple[LoRAFile, float]]) -> dict[str, LoRAPair]:
    """The exact merge: per module, the weighted factors stacked along the rank."""
    grouped: dict[str, list[tuple[LoRAPair, float, Path]]] = {}
    for lora, weight in loras:
        for name, pair in _canonical(lora).items():
            grouped.setdefault(name, []).append((pair, weight, lora.path))
    merged = {}
    for name, items in grouped.items():
        first, _, first_path = items[0]
        for pair, _, path in items[1:]:
            if pair.delta_shape != first.delta_shape:
                raise LorakitError(
                    f"{path}: module {name} is {pair.delta_shape} there but {first.delta_shape} "
                    f"in {first_path}; the LoRAs were made for different base models"
                )
        down = torch.cat([pair.down for pair, _, _ in items])
        up = torch.cat([pair.up * (weight * pair.scale) for pair, weight, _ in items], dim=1)
        merged[name] = first.like(up, down, float(down.shape[0]))
    return merged


def merge_loras(
    loras: Sequence[tuple[str | Path, float]],
    out: str | Path,
    rank: int | None = None,
    conv_rank: int | None = None,
    dynamic: str | None = None,
    param: float | None = None,
    dtype: str | None = None,
) -> list[ModuleFit]:
    """Merge LoRA files ((file, weight) pairs) into the LoRA `out`.

    Without `rank` the ranks are concatenated (exact, no fits returned); with it the
    result is resized to `rank` / `conv_rank` / a dynamic rule, and the fits say how much
    of the summed update each module keeps.
    """
    if rank is None and (conv_rank is not None or dynamic is not None):
        raise LorakitError("--conv-rank and --dynamic need --rank (the largest rank), e.g. 32")
    if rank is not None:
        check_ranks(rank, conv_rank)
    check_dynamic(dynamic, param)
    out = check_output(out)
    save_dtype = parse_dtype(dtype) if dtype else None
    if len(loras) < 2:
        raise LorakitError("merging LoRAs needs at least two --lora files (or --model BASE)")
    read = [(read_lora(path), float(weight)) for path, weight in loras]
    _check_family(read)
    pairs = concatenate(read)
    fits: list[ModuleFit] = []
    how = "concatenated ranks"
    if rank is not None:
        pairs, fits = resize_pairs(pairs, rank, conv_rank, dynamic, param)
        how = f"SVD to {dynamic}:{param:g}" if dynamic else f"SVD to rank {rank}"
    sources = " + ".join(f"{lora.path.name}×{weight:g}" for lora, weight in read)
    comment = f"merged {sources} ({how})"
    meta = reworked_metadata(read[0][0].family, pairs, comment, dynamic=dynamic is not None)
    save_lora_file(out, pairs_state(pairs, save_dtype or read[0][0].dtype), meta)
    return fits
