"""Writing a safetensors file one tensor at a time, so a merged SDXL never sits in memory.

`safetensors.torch.save_file` needs every tensor at once (an SDXL checkpoint is 7–14 GB).
The format is simple enough to stream: 8 bytes of header length, a JSON header giving each
tensor's dtype, shape and byte range, then the raw little-endian bytes in that order. The
header is known before any tensor is computed (shapes and dtypes are), so each tensor is
written and dropped as soon as it is made. Output is atomic (`lorakit.fileio.atomic_path`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lorakit.fileio import atomic_path
from lorakit.models.tensors import SAFETENSORS_DTYPES

DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class Entry:
    """One tensor of the file to write: its key, dtype and shape."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * self.dtype.itemsize


def _header(entries: Sequence[Entry], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for entry in entries:
        header[entry.key] = {
            "dtype": DTYPE_NAMES[entry.dtype],
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return blob + b" " * (-len(blob) % 8)  # the data starts 8-byte aligned


def write_streamed(
    path: str | Path,
    entries: Sequence[Entry],
    tensors: Iterable[torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `tensors` (made lazily, in `entries` order) as a safetensors file at `path`."""
    path = Path(path)
    header = _header(entries, metadata)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little"))
        handle.write(header)
        for entry, tensor in zip(entries, tensors, strict=True):
            if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
                raise ValueError(f"{entry.key}: got {tensor.dtype} {tuple(tensor.shape)}")
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            handle.write(data.numpy().data)
    return path
