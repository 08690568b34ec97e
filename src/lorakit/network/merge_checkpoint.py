"""`lora merge --model`: LoRAs baked into a base checkpoint, written in the base's own layout.

Every module is matched to its layer's tensor in the checkpoint
(`lorakit.network.base_weights`) and checked — family, layer, shape — before anything is
written. The output then streams tensor by tensor: W' = W + Σ weight · ΔW, with ΔW per
type as `lorakit.network.kinds` computes it (alpha/r · up @ down for LoRA, LoHa's and
LoKr's products; a DoRA module's change is taken against the weight as patched so far, as
ComfyUI applies patches in turn), computed in fp32 and stored in the chosen dtype (fp16 by
default, as checkpoints ship); every other tensor is copied (cast to that dtype when it is
floating-point). A single file keeps its keys, so it loads wherever the input did; a
diffusers folder is written as a new folder with the same configs. A LoRA at weight 0
adds nothing: the base weights come back bit for bit (in their own dtype).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from lorakit.errors import LorakitError
from lorakit.models import ModelFamily
from lorakit.network.base_weights import Checkpoint, WeightRef, open_checkpoint
from lorakit.network.files import parse_dtype
from lorakit.network.kinds import delta_shape_fits, missing_keys, module_change, module_kind
from lorakit.network.pairs import ModulesFile, read_modules
from lorakit.network.tensorfile import Entry, write_streamed
from lorakit.progress import track

# Files a diffusers folder holds weights in; all but the ones rewritten are left out.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx")


@dataclass(frozen=True)
class Addition:
    """One weighted module added to a tensor (to a third of its rows for q/k/v)."""

    kind: str
    tensors: Mapping[str, torch.Tensor]
    weight: float
    ref: WeightRef


def _additions(checkpoint: Checkpoint, lora: ModulesFile, weight: float) -> list[Addition]:
    """Where each module of `lora` goes in `checkpoint`; a one-line error for any misfit."""
    if lora.family is not checkpoint.family:
        raise LorakitError(
            f"{lora.path}: a {lora.family.value} LoRA, but {checkpoint.path} is a "
            f"{checkpoint.family.value} model; merge LoRAs made for that family"
        )
    found = []
    for name, tensors in lora.modules.items():
        kind = module_kind(tensors)
        missing = missing_keys(kind, tensors) if kind else ["weights"]
        if missing:
            raise LorakitError(
                f"{lora.path}: module {name} lacks `{missing[0]}`; the file is damaged"
            )
        site = checkpoint.sites.get(name)
        ref = checkpoint.locate(site) if site is not None else None
        if ref is None:
            raise LorakitError(
                f"{lora.path}: module {name} has no layer in {checkpoint.path}; the LoRA was "
                "made for another base model"
            )
        shape = checkpoint.shape(ref)
        if not delta_shape_fits(kind, tensors, shape):
            raise LorakitError(
                f"{lora.path}: module {name} does not fit its {shape} layer in "
                f"{checkpoint.path}; the LoRA was made for another base model"
            )
        found.append(Addition(kind, tensors, weight, ref))
    return found


def plan_merge(
    checkpoint: Checkpoint, loras: Sequence[tuple[ModulesFile, float]]
) -> dict[tuple[Path, str], list[Addition]]:
    """(file, key) → the additions to that tensor; every LoRA is checked, zero weights skipped."""
    plan: dict[tuple[Path, str], list[Addition]] = {}
    for lora, weight in loras:
        for addition in _additions(checkpoint, lora, weight):
            if weight != 0:
                plan.setdefault((addition.ref.file, addition.ref.key), []).append(addition)
    return plan


def _patched(tensor: torch.Tensor, additions: Sequence[Addition]) -> torch.Tensor:
    merged = tensor.float()
    for addition in additions:
        target = merged[addition.ref.rows(merged.shape[0])]
        target += module_change(addition.kind, addition.tensors, target, addition.weight)
    return merged


def _entry(checkpoint: Checkpoint, file: Path, key: str, dtype: torch.dtype) -> Entry:
    """The output tensor for `key`: floating-point tensors in `dtype`, others as they are."""
    own = checkpoint.dtype(file, key)
    shape = checkpoint.shape(WeightRef(file, key))
    return Entry(key, dtype if own.is_floating_point else own, shape)


def _write_file(
    checkpoint: Checkpoint,
    file: Path,
    target: Path,
    plan: dict[tuple[Path, str], list[Addition]],
    dtype: torch.dtype,
    metadata: dict[str, str] | None,
) -> None:
    """One weight file of the checkpoint, patched and cast, streamed to `target`."""
    entries = [_entry(checkpoint, file, key, dtype) for key in checkpoint.keys(file)]

    def tensors() -> Iterator[torch.Tensor]:
        for entry in track(entries, f"writing {target.name}"):
            tensor = checkpoint.tensor(file, entry.key)
            additions = plan.get((file, entry.key))
            if additions:
                tensor = _patched(tensor, additions)
            yield tensor.to(entry.dtype)

    write_streamed(target, entries, tensors(), metadata)


def _file_metadata(checkpoint: Checkpoint, file: Path, note: str) -> dict[str, str]:
    """The file's own metadata, its hashes dropped (they no longer hold), plus a note."""
    own = checkpoint.metadata(file)
    kept = {key: value for key, value in own.items() if "hash" not in key}
    return kept | {"lorakit_merged_loras": note}


@contextmanager
def _atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside `target`, renamed to it only when everything is written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_folder(
    checkpoint: Checkpoint,
    target: Path,
    plan: dict[tuple[Path, str], list[Addition]],
    dtype: torch.dtype,
    note: str,
) -> None:
    """A copy of the diffusers folder with its weight files rewritten (other variants left out)."""
    skip = shutil.ignore_patterns(*(f"*{suffix}" for suffix in _WEIGHT_SUFFIXES))
    with _atomic_folder(target) as tmp:
        shutil.copytree(checkpoint.path, tmp, ignore=skip, dirs_exist_ok=True)
        for file in checkpoint.files:
            out = tmp / file.relative_to(checkpoint.path)
            _write_file(checkpoint, file, out, plan, dtype, _file_metadata(checkpoint, file, note))


def check_merge_output(model: Path, out: Path) -> None:
    """A single file becomes a .safetensors file, a folder a new folder; never the input."""
    if out.resolve() == model.resolve():
        raise LorakitError(f"{out}: is the input model; write the merge to a new path")
    if model.is_dir():
        if out.exists():
            raise LorakitError(f"{out}: already exists; give a new folder for the merged model")
    elif out.suffix.lower() != ".safetensors" or out.is_dir():
        raise LorakitError(f"{out}: the merged model must be a .safetensors file")


def merge_into_checkpoint(
    model: str | Path,
    loras: Sequence[tuple[str | Path, float]],
    out: str | Path,
    dtype: str | None = None,
) -> Path:
    """Bake `loras` ((file, weight) pairs) into the base `model`, written to `out` in
    `dtype` (default: fp16 for SD, bf16 for FLUX.1, as each ships; fp16 overflows FLUX)."""
    model, out = Path(model), Path(out)
    if dtype is not None:
        parse_dtype(dtype)
    if not loras:
        raise LorakitError("no LoRA to merge; pass --lora FILE[:WEIGHT]")
    check_merge_output(model, out)
    read = [(read_modules(path, lycoris=True, flux=True), float(w)) for path, w in loras]
    note = ", ".join(f"{lora.path.name}:{weight:g}" for lora, weight in read)
    checkpoint = open_checkpoint(model)
    default = "bf16" if checkpoint.family is ModelFamily.FLUX1 else "fp16"
    save_dtype = parse_dtype(dtype or default)
    plan = plan_merge(checkpoint, read)
    if checkpoint.is_folder:
        _write_folder(checkpoint, out, plan, save_dtype, note)
    else:
        meta = _file_metadata(checkpoint, checkpoint.path, note)
        _write_file(checkpoint, checkpoint.path, out, plan, save_dtype, meta)
    return out
