"""A single-file checkpoint read one tensor at a time, with plain reads instead of a mapping.

safetensors' `safe_open` and `torch.load(mmap=True)` map the file, and every page a read
touches stays in the process's resident set until the mapping closes: converting an SDXL
fp16 file to bf16 that way peaks at the file plus the converted copy. Plain reads leave
the file in the page cache, which the kernel reclaims at will and RSS does not count, so a
load peaks at the weights in the target dtype plus a 16 MiB buffer.

The index (names, dtypes, shapes, where the bytes lie) comes from the header alone: the
JSON header of a safetensors file, or for a `.ckpt` `torch.load(map_location="meta",
weights_only=True)`, which unpickles only the small `data.pkl` and records each storage's
offset in the zip (the route torch's own partial checkpoint reader takes). So naming the
family of a 4 GB `.ckpt` reads a few hundred kilobytes.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open

from lorakit.errors import LorakitError
from lorakit.models.checkpoint import (
    SAFETENSORS_EXTS,
    check_checkpoint_path,
    safetensors_error,
    torch_load,
)

_CHUNK_BYTES = 1 << 24  # the read buffer of a tensor cast on the way in
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes lie in its file, and how to lay them out."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # byte offset of the tensor's first element

    @property
    def nbytes(self) -> int:
        """Bytes from the first element to the end of the last one the strides reach."""
        if 0 in self.shape:
            return 0
        reach = zip(self.shape, self.stride, strict=True)
        span = 1 + sum((size - 1) * step for size, step in reach)
        return span * self.dtype.itemsize


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, step = [], 1
    for size in reversed(shape):
        stride.append(step)
        step *= max(size, 1)
    return tuple(reversed(stride))


def _safetensors_index(path: Path) -> dict[str, TensorInfo]:
    # safe_open checks the header against the file (valid JSON, offsets inside the file)
    # without reading tensor data; the offsets themselves it does not expose.
    try:
        with safe_open(path, framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as exc:
        raise safetensors_error(path, exc) from None
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    index = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise LorakitError(
                f"{path}: tensor {key} has dtype {entry['dtype']}, which lorakit does not "
                "read; convert the checkpoint to fp16, bf16 or fp32"
            )
        shape = tuple(entry["shape"])
        index[key] = TensorInfo(
            SAFETENSORS_DTYPES[entry["dtype"]],
            shape,
            _contiguous_stride(shape),
            8 + length + entry["data_offsets"][0],
        )
    return index


def _pickle_index(path: Path) -> dict[str, TensorInfo]:
    tensors = torch_load(path, map_location="meta")  # checks the zip and the pickle
    with zipfile.ZipFile(path) as archive:
        if any(item.compress_type != zipfile.ZIP_STORED for item in archive.infolist()):
            raise LorakitError(
                f"{path}: a compressed zip, which torch.save never writes; save it again with "
                "torch.save or convert it to .safetensors"
            )
    index = {}
    for key, tensor in tensors.items():
        start = getattr(tensor.untyped_storage(), "_checkpoint_offset", None)
        if start is None:
            raise LorakitError(
                f"{path}: this PyTorch ({torch.__version__}) does not say where a .ckpt's "
                "tensors lie; upgrade torch (lorakit's lock has 2.13) or convert the file to "
                ".safetensors"
            )
        index[key] = TensorInfo(
            tensor.dtype,
            tuple(tensor.shape),
            tuple(tensor.stride()),
            start + tensor.storage_offset() * tensor.element_size(),
        )
    return index


def read_index(path: Path) -> dict[str, TensorInfo]:
    """Name → dtype, shape and file position of every tensor, from the header only."""
    check_checkpoint_path(path)
    if path.suffix.lower() in SAFETENSORS_EXTS:
        return _safetensors_index(path)
    return _pickle_index(path)


def _read_into(handle: BinaryIO, buffer: torch.Tensor, path: Path) -> None:
    """Fill the uint8 `buffer` from the file's current position."""
    if handle.readinto(buffer.numpy()) != buffer.numel():
        raise LorakitError(
            f"{path}: ends inside a tensor; the file is truncated: download it again"
        )


class CheckpointTensors(Mapping[str, torch.Tensor]):
    """A single-file checkpoint as a mapping that reads each tensor when it is looked up,
    floating-point ones in `dtype` (None: as stored); `read_via` gives one in another dtype
    with the rounding of a load in `dtype` (FLUX's fp8 base).

    diffusers' LDM converters take a state dict; handed this mapping (or a lazy part of
    it) they see real tensors while the rest of the file stays on disk.

    A tensor in the file's dtype is read straight into its own storage. A cast one is
    filled a chunk at a time through buffers kept for the mapping's life: a full-size
    temporary per tensor would be freed a thousand times, and each free of a large block
    raises glibc's mmap threshold, after which tensors land in a heap those frees leave
    fragmented (SDXL fp16 → bf16 peaked 1.27× the weights that way, 1.0× this way; FLUX
    fp16 → bf16 → fp8 1.6× with a bf16 temporary per tensor).
    """

    def __init__(self, path: Path, dtype: torch.dtype | None = None) -> None:
        self.path = path
        self.dtype = dtype
        self.index = read_index(path)
        self._buffers: dict[torch.dtype, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        info = self.index[key]
        cast = self.dtype is not None and info.dtype.is_floating_point
        return self._read(info, self.dtype if cast else info.dtype)

    def read_via(self, key: str, target: torch.dtype) -> torch.Tensor:
        """`key` in `target` (floating point), rounded through the mapping's `dtype` first:
        file → dtype → target, bit for bit a load in `dtype` cast afterwards, without that
        tensor in `dtype`. One stored in `target` is read as it is."""
        info = self.index[key]
        if self.dtype is None or info.dtype == target or self.dtype in (info.dtype, target):
            return self._read(info, target)
        return self._read(info, target, self.dtype)

    def _read(
        self, info: TensorInfo, target: torch.dtype, via: torch.dtype | None = None
    ) -> torch.Tensor:
        with self.path.open("rb") as handle:
            handle.seek(info.offset)
            if target == info.dtype or info.stride != _contiguous_stride(info.shape):
                raw = torch.empty(info.nbytes, dtype=torch.uint8)
                _read_into(handle, raw, self.path)
                tensor = raw.view(info.dtype).as_strided(info.shape, info.stride)
                return (tensor if via is None else tensor.to(via)).to(target)
            return self._read_cast(handle, info, target, via)

    def _buffer(self, dtype: torch.dtype, count: int) -> torch.Tensor:
        """The first `count` elements of the kept buffer of `dtype` (grown if short)."""
        kept = self._buffers.get(dtype)
        if kept is None or kept.numel() < count:
            kept = self._buffers[dtype] = torch.empty(count, dtype=dtype)
        return kept[:count]

    def _read_cast(
        self, handle: BinaryIO, info: TensorInfo, target: torch.dtype, via: torch.dtype | None
    ) -> torch.Tensor:
        out = torch.empty(info.shape, dtype=target)
        flat, per_chunk = out.view(-1), _CHUNK_BYTES // info.dtype.itemsize
        for start in range(0, flat.numel(), per_chunk):
            count = min(per_chunk, flat.numel() - start)
            chunk = self._buffer(torch.uint8, _CHUNK_BYTES)[: count * info.dtype.itemsize]
            _read_into(handle, chunk, self.path)
            values = chunk.view(info.dtype)
            if via is not None:
                values = self._buffer(via, per_chunk)[:count].copy_(values)
            flat[start : start + count].copy_(values)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)
