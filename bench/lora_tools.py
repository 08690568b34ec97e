"""Time `lora resize` and `lora extract` at full size against the naive SVD, on this machine.

    .venv/bin/python bench/lora_tools.py [--workdir DIR] [--full-reference] [--keep] [--only X]

1. resize: a random rank-128 SDXL LoRA (every module sd-scripts targets, named and shaped by
   lorakit's own network on the real SDXL configs, built on the meta device; fp16 file) to
   rank 32 with `lorakit.network.resize.resize_file` (file in, file out).
2. extract: two random full-size SD1.5 single files in the LDM layout (fp16; the "tuned"
   one adds a rank-64 update plus small full-rank noise to every targeted layer) to a
   rank-32 LoRA with `lorakit.network.extract.extract_lora` (file in, file out).

The reference is the naive approach, one fp32 `torch.linalg.svd(ΔW, full_matrices=False)`
per module (ΔW = up @ down for resize, tuned − base for extract). Its time depends on the
matrix shape only, so by default each distinct shape is timed once and multiplied by its
module count (`--full-reference` runs every module). The same modules check accuracy: the
kept Frobenius norm lorakit reports against the one of the direct SVD, and for resize the
largest difference between the two rank-32 updates. Prints a table; writes nothing outside
DIR (a temporary folder, removed unless --keep).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers.ldm

from tests.helpers.ldm import base_ldm_state_dict

from lorakit.models import ModelFamily, empty_base_model
from lorakit.network.base_weights import open_checkpoint
from lorakit.network.config import LoRAConfig
from lorakit.network.extract import extract_lora
from lorakit.network.files import save_lora_file
from lorakit.network.lora import LoRANetwork, network_sites
from lorakit.network.metadata import lora_metadata
from lorakit.network.pairs import read_lora
from lorakit.network.resize import resize_file, resize_pair
from lorakit.network.svd import overall_fraction
from lorakit.network.tensorfile import Entry, write_streamed
from lorakit.threads import torch_threads

RESIZE_FROM, RESIZE_TO, EXTRACT_RANK, TUNE_RANK = 128, 32, 32, 64


def _load() -> str:
    """The 1-minute load average: timings on a shared machine mean little without it."""
    return f"load average {os.getloadavg()[0]:.1f}"


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def write_sdxl_lora(path: Path) -> Path:
    """A rank-128 SDXL LoRA with random factors (fp16), module list from lorakit itself."""
    config = LoRAConfig(rank=RESIZE_FROM, alpha=RESIZE_FROM / 2)
    network = LoRANetwork.inject(empty_base_model(ModelFamily.SDXL), config)
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(value.shape, generator=generator).half() * 0.02 if value.is_meta else value
        for key, value in network.kohya_state_dict(torch.float16).items()
    }
    return save_lora_file(path, state, lora_metadata(ModelFamily.SDXL, config))


def _weight(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * 0.02


def _tuning(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A fine-tune's change to one layer: rank-64 structure plus small full-rank noise."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = shape[0], int(torch.tensor(shape[1:]).prod())
    low = torch.randn(rows, TUNE_RANK, generator=generator) @ torch.randn(
        TUNE_RANK, cols, generator=generator
    )
    noise = torch.randn(rows, cols, generator=generator)
    return (low * 2e-4 + noise * 2e-5).reshape(shape)


def write_sd15_pair(folder: Path) -> tuple[Path, Path, set[str]]:
    """Random full-size SD1.5 base and tuned single files (fp16), streamed to disk."""
    meta_base = empty_base_model(ModelFamily.SD15)
    layout = {key: tuple(value.shape) for key, value in base_ldm_state_dict(meta_base).items()}
    entries = [Entry(key, torch.float16, shape) for key, shape in layout.items()]
    base = folder / "sd15_base.safetensors"
    seeds = {key: index for index, key in enumerate(layout)}

    def tensors(tuned: set[str]) -> Iterator[torch.Tensor]:
        for key, shape in layout.items():
            weight = _weight(shape, seeds[key])
            if key in tuned:
                weight = weight + _tuning(shape, seeds[key] + 10**6)
            yield weight.half()

    write_streamed(base, entries, tensors(set()))
    checkpoint = open_checkpoint(base)
    targets = {checkpoint.locate(site).key for site in network_sites(meta_base)}
    tuned = folder / "sd15_tuned.safetensors"
    write_streamed(tuned, entries, tensors(targets))
    return base, tuned, targets


def naive(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, float, float]:
    """The reference: a full thin SVD; (rank-k update, kept norm, total norm)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank], float(s[:rank].norm()), float(s.norm())


def by_shape(matrices: dict[str, tuple[int, ...]], full: bool) -> dict[str, int]:
    """Modules to time: one per distinct shape (weighted by its count), or all (weight 1)."""
    if full:
        return dict.fromkeys(matrices, 1)
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for name, shape in matrices.items():
        groups[shape].append(name)
    return {names[0]: len(names) for names in groups.values()}


def bench_resize(folder: Path, full: bool) -> list[str]:
    made, source = timed(lambda: write_sdxl_lora(folder / "sdxl_r128.safetensors"))
    out = folder / "sdxl_r32.safetensors"
    fast, fits = timed(lambda: resize_file(source, out, RESIZE_TO))
    pairs = read_lora(source).pairs
    kept = {fit.name: fit.kept for fit in fits}
    sample = by_shape({n: tuple(p.delta().shape) for n, p in pairs.items()}, full)
    reference = worst_norm = worst_delta = 0.0
    for name, count in sample.items():
        pair = pairs[name]
        with torch_threads(1):  # as resize runs
            seconds, (update, norm, _) = timed(lambda pair=pair: naive(pair.delta(), RESIZE_TO))
        reference += seconds * count
        worst_norm = max(worst_norm, abs(kept[name] - norm) / norm)
        fast_update = resize_pair(name, pair, RESIZE_TO)[0].delta()  # fp32, before storage
        worst_delta = max(
            worst_delta, float((fast_update - update).abs().max() / update.abs().max())
        )
    return [
        f"resize SDXL rank {RESIZE_FROM} → {RESIZE_TO}: {len(pairs)} modules "
        f"({source.stat().st_size / 1e6:.0f} MB fp16, written in {made:.0f} s)",
        f"  lorakit resize (QR + r×r SVD, one thread, file to file): {fast:.1f} s",
        f"  naive fp32 torch.linalg.svd per module, one thread: {reference:.1f} s "
        f"({'every module' if full else f'{len(sample)} shapes timed once, × their counts'})",
        f"  speed-up {reference / fast:.0f}×; kept norm overall {overall_fraction(fits):.2%}; "
        f"largest kept-norm difference {worst_norm:.1e}, largest ΔW difference "
        f"{worst_delta:.1e} (fp32, relative to max |ΔW|) on the timed modules",
    ]


def bench_extract(folder: Path, full: bool) -> list[str]:
    made, (base, tuned, targets) = timed(lambda: write_sd15_pair(folder))
    out = folder / "sd15_extracted.safetensors"
    fast, (fits, skipped) = timed(lambda: extract_lora(base, tuned, out, EXTRACT_RANK))
    before, after = open_checkpoint(base), open_checkpoint(tuned)
    sites = {site.name: site for site in network_sites(empty_base_model(ModelFamily.SD15))}
    kept = {fit.name: fit.kept for fit in fits}
    sample = by_shape({n: before.shape(before.locate(s)) for n, s in sites.items()}, full)
    reference = worst_norm = 0.0
    for name, count in sample.items():
        site = sites[name]
        diff = after.read(after.locate(site)).float() - before.read(before.locate(site)).float()
        matrix = diff.reshape(diff.shape[0], -1)
        seconds, (_, norm, _) = timed(lambda matrix=matrix: naive(matrix, EXTRACT_RANK))
        reference += seconds * count
        worst_norm = max(worst_norm, abs(kept[name] - norm) / norm)
    size = base.stat().st_size / 1e9
    return [
        f"extract SD1.5 (two {size:.1f} GB fp16 files, {len(targets)} target layers) at rank "
        f"{EXTRACT_RANK} (files written in {made:.0f} s)",
        f"  lorakit extract (randomized SVD, {torch.get_num_threads()} threads, file to file): "
        f"{fast:.1f} s, {len(fits)} modules, "
        f"{skipped} skipped",
        f"  naive fp32 torch.linalg.svd per module, same threads: {reference:.1f} s "
        f"({'every module' if full else f'{len(sample)} shapes timed once, × their counts'})",
        f"  speed-up {reference / fast:.1f}×; kept norm overall {overall_fraction(fits):.2%}; "
        f"largest kept-norm shortfall against the direct SVD {worst_norm:.1e} "
        "on the timed modules",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the files go (default: a temp dir)")
    parser.add_argument("--full-reference", action="store_true", help="naive SVD of every module")
    parser.add_argument("--keep", action="store_true", help="keep the files written")
    parser.add_argument("--only", choices=["resize", "extract"], help="run one of the two")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lora_tools_", dir=args.workdir))
    try:
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {_load()}")
        for name, bench in (("resize", bench_resize), ("extract", bench_extract)):
            if args.only in (None, name):
                for line in bench(folder, args.full_reference):
                    print(line, flush=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"peak resident memory of the whole run: {peak:.1f} GB; {_load()}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
