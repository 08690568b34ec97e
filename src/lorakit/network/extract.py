"""`lora extract`: a LoRA from the difference of two checkpoints (a fine-tune and its base).

The layers are sd-scripts' default LoRA targets of the family (plus the 3×3 convs with
`conv_rank`), named as lorakit names them when training (FLUX.1: sd-scripts' FLUX names,
`Checkpoint.targets`). Each layer's difference
ΔW = W_tuned − W_base is read tensor by tensor in fp32, skipped when no entry moved by more
than `min_diff`, and cut to its leading singular directions by a seeded randomized SVD
(`lorakit.network.svd.randomized_svd`), √σ on each side, alpha = rank (scale 1), as
sd-scripts' `extract_lora_from_models.py` writes it — without its quantile clamping, which
would bend even an exactly low-rank difference. Each module's kept Frobenius norm is the
norm of what is written (the approximation is a projection), reported against ‖ΔW‖.
"""

from __future__ import annotations

from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.network.base_weights import Checkpoint, WeightRef, open_checkpoint
from lorakit.network.files import parse_dtype, save_lora_file
from lorakit.network.pairs import LoRAPair, pairs_state, reworked_metadata
from lorakit.network.resize import check_output, check_ranks
from lorakit.network.svd import ModuleFit, randomized_svd
from lorakit.progress import track

DEFAULT_MIN_DIFF = 1e-4


def _layers(
    base: Checkpoint, tuned: Checkpoint, conv: bool
) -> list[tuple[str, bool, WeightRef, WeightRef]]:
    """The target layers both checkpoints hold, with matching shapes: (module name, is a
    3×3 conv, base weight, tuned weight)."""
    if base.family is not tuned.family:
        raise LorakitError(
            f"{tuned.path}: a {tuned.family.value} model, but {base.path} is "
            f"{base.family.value}; extract from a fine-tune of that very base"
        )
    found = []
    for name, is_conv in base.targets(conv):
        refs = base.ref(name), tuned.ref(name)
        if refs == (None, None):
            continue  # not part of this (smaller) model
        if None in refs or base.shape(refs[0]) != tuned.shape(refs[1]):
            raise LorakitError(
                f"{tuned.path}: layer {name} differs in shape from {base.path} or is "
                "missing; the two models are of different architectures"
            )
        found.append((name, is_conv, *refs))
    if not found:
        raise LorakitError(
            f"{base.path}: no LoRA-able layers found; give SD1.5/SDXL or FLUX.1 checkpoints"
        )
    return found


def _extract_layer(
    name: str,
    checkpoints: tuple[Checkpoint, Checkpoint],
    refs: tuple[WeightRef, WeightRef],
    rank: int,
    min_diff: float,
) -> tuple[LoRAPair, ModuleFit] | None:
    """The layer's difference (tuned − base) at `rank`; None when no entry moved > min_diff."""
    (base, tuned), (base_ref, tuned_ref) = checkpoints, refs
    diff = tuned.read(tuned_ref).float() - base.read(base_ref).float()
    if diff.numel() == 0 or float(diff.abs().max()) <= min_diff:
        return None
    matrix = diff.reshape(diff.shape[0], -1)
    rank = min(rank, *matrix.shape)
    svd = randomized_svd(matrix, rank)
    up, down = svd.factors(rank)
    pair = LoRAPair.for_weight(tuple(diff.shape), up, down, float(rank))
    return pair, ModuleFit(name, rank, None, float(matrix.norm()), float(svd.s.norm()))


def extract_lora(
    base: str | Path,
    tuned: str | Path,
    out: str | Path,
    rank: int,
    conv_rank: int | None = None,
    min_diff: float = DEFAULT_MIN_DIFF,
    dtype: str = "fp16",
) -> tuple[list[ModuleFit], int]:
    """Write the LoRA `out` ≈ tuned − base; (fits of the extracted modules, layers skipped)."""
    check_ranks(rank, conv_rank)
    out = check_output(out)
    save_dtype = parse_dtype(dtype)
    if min_diff < 0:
        raise LorakitError(f"--min-diff {min_diff:g} must be ≥ 0; e.g. --min-diff 1e-4")
    pairs: dict[str, LoRAPair] = {}
    fits: list[ModuleFit] = []
    checkpoints = open_checkpoint(base), open_checkpoint(tuned)
    layers = _layers(*checkpoints, conv=conv_rank is not None)
    for name, is_conv, base_ref, tuned_ref in track(layers, "extracting"):
        limit = conv_rank if conv_rank is not None and is_conv else rank
        result = _extract_layer(name, checkpoints, (base_ref, tuned_ref), limit, min_diff)
        if result is not None:
            pairs[name], fit = result
            fits.append(fit)
    if not pairs:
        raise LorakitError(
            f"{tuned}: no layer differs from {base} by more than --min-diff {min_diff:g}; "
            "is it the same model?"
        )
    comment = f"extracted from {Path(tuned).name} - {Path(base).name} at rank {rank}"
    family = checkpoints[0].family
    previous = {"ss_sd_model_name": Path(base).name, **checkpoints[0].lora_metadata}
    meta = reworked_metadata(family, pairs, comment, previous)
    save_lora_file(out, pairs_state(pairs, save_dtype), meta)
    return fits, len(layers) - len(pairs)
