"""`lora resize`: a LoRA at another rank, each module's update cut by its exact SVD.

Each module's ΔW = alpha/r · up @ down is decomposed without forming it
(`lorakit.network.svd.product_svd`), the rank is chosen as sd-scripts does (fixed, or one of
its dynamic rules), and alpha is set to `alpha/r · new_rank`, so the scale and therefore
the effective weight of every kept direction are unchanged. Resizing to the file's own rank
reproduces every ΔW up to float rounding; a module's own rank is never exceeded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.network.files import parse_dtype, save_lora_file
from lorakit.network.pairs import LoRAPair, pairs_state, read_lora, reworked_metadata
from lorakit.network.svd import ModuleFit, check_dynamic, choose_rank, product_svd
from lorakit.progress import track
from lorakit.threads import torch_threads


def check_output(path: str | Path) -> Path:
    """A LoRA output path must be a .safetensors file (checked before any work)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or path.is_dir():
        raise LorakitError(f"{path}: the output must be a .safetensors file; e.g. out.safetensors")
    return path


def check_ranks(rank: int, conv_rank: int | None) -> None:
    for option, value in (("--rank", rank), ("--conv-rank", conv_rank)):
        if value is not None and value < 1:
            raise LorakitError(f"{option} {value}: a rank must be ≥ 1; e.g. {option} 16")


def resize_pair(
    name: str, pair: LoRAPair, limit: int, method: str | None = None, param: float | None = None
) -> tuple[LoRAPair, ModuleFit]:
    """One module at its new rank (≤ `limit`), and the Frobenius norm it keeps."""
    svd = product_svd(pair.up, pair.down)
    rank = choose_rank(svd.s, min(limit, pair.rank), method, param)
    up, down = svd.factors(rank)
    scale = abs(pair.scale)
    norm = float(svd.s.norm()) * scale
    kept = float(svd.s[:rank].norm()) * scale
    return pair.like(up, down, pair.scale * rank), ModuleFit(name, rank, pair.rank, norm, kept)


def resize_pairs(
    pairs: Mapping[str, LoRAPair],
    rank: int,
    conv_rank: int | None = None,
    method: str | None = None,
    param: float | None = None,
) -> tuple[dict[str, LoRAPair], list[ModuleFit]]:
    """Every module resized: 3×3 conv modules to `conv_rank` (default `rank`).

    On one thread: the work is thousands of thin QRs and r×r SVDs, too small to split, and
    a second thread only waits at each of them (on a busy 2-core machine a 1280×128 QR took
    20 ms on one thread and 450 ms on two). OMP_NUM_THREADS, when set, decides instead.
    """
    resized: dict[str, LoRAPair] = {}
    fits: list[ModuleFit] = []
    with torch_threads(None if os.environ.get("OMP_NUM_THREADS") else 1):
        for name in track(list(pairs), "resizing"):
            pair = pairs[name]
            limit = conv_rank if pair.is_conv and conv_rank is not None else rank
            resized[name], fit = resize_pair(name, pair, limit, method, param)
            fits.append(fit)
    return resized, fits


def _comment(
    old_rank: int, rank: int, conv_rank: int | None, method: str | None, param: float | None
) -> str:
    """sd-scripts' wording of a resize in `ss_training_comment`."""
    if method:
        return f"Dynamic resize with {method}: {param:g} from {old_rank}"
    conv = f" (conv: {conv_rank})" if conv_rank is not None and conv_rank != rank else ""
    return f"dimension is resized from {old_rank} to {rank}{conv}"


def resize_file(
    source: str | Path,
    target: str | Path,
    rank: int,
    conv_rank: int | None = None,
    dynamic: str | None = None,
    param: float | None = None,
    dtype: str | None = None,
) -> list[ModuleFit]:
    """Resize the LoRA `source` into `target` (atomic); per-module fits for the report.

    `dtype` ("fp16", "bf16", "fp32") defaults to the dtype of the source's weights.
    """
    check_ranks(rank, conv_rank)
    check_dynamic(dynamic, param)
    target = check_output(target)
    save_dtype = parse_dtype(dtype) if dtype else None
    lora = read_lora(source)
    resized, fits = resize_pairs(lora.pairs, rank, conv_rank, dynamic, param)
    old_rank = max(pair.rank for pair in lora.pairs.values())
    comment = _comment(old_rank, rank, conv_rank, dynamic, param)
    meta = reworked_metadata(lora.family, resized, comment, lora.metadata, dynamic is not None)
    save_lora_file(target, pairs_state(resized, save_dtype or lora.dtype), meta)
    return fits
