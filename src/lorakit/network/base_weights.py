"""Where each LoRA-able layer's weight lives inside a base checkpoint, read one at a time.

`merge` and `extract` touch only the layers a LoRA can wrap, so they do not build the
model: they find each layer's tensor in the file by its key and read just that tensor
(`lorakit.models.tensors`: each tensor read into its own buffer, `.ckpt` files included).
The layers and their kohya names come from lorakit's own module tree of the family
(`all_sites` of the full-size architecture on the meta device), so the names are exactly
the ones training writes. A layer's key depends on the layout:

- diffusers folder: `<part>/…safetensors`, key = the module path + `.weight`;
- single file (SD/SGM "LDM" layout): the UNet path translated by `to_ldm_path` under
  `model.diffusion_model.`; CLIP text encoders under `cond_stage_model.transformer.` (SD1.5)
  or `conditioner.embedders.0.transformer.` (SDXL), always with `text_model.`; SDXL's
  OpenCLIP encoder under `conditioner.embedders.1.model.transformer.resblocks.N.`, where q,
  k and v are the three row blocks of one `attn.in_proj_weight`.

A tiny test model of a family is a subset of the full-size names, so the same tables serve.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from lorakit.errors import LorakitError
from lorakit.models import BaseModel, ModelFamily, detect_family, empty_base_model
from lorakit.models.components import TEXT_ENCODERS
from lorakit.models.tensors import CheckpointTensors
from lorakit.network.lora import all_sites, network_sites
from lorakit.network.naming import UNET_PART, Site, ldm_block_map, site_index, to_ldm_path

LDM_UNET = "model.diffusion_model."
LDM_TEXT = {
    (ModelFamily.SD15, "text_encoder"): "cond_stage_model.transformer.text_model.",
    (ModelFamily.SDXL, "text_encoder"): "conditioner.embedders.0.transformer.text_model.",
}
OPEN_CLIP = "conditioner.embedders.1.model.transformer.resblocks."
_OPEN_CLIP_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")
_OPEN_CLIP_NAMES = {
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = ("q", "k", "v")


@dataclass(frozen=True)
class WeightRef:
    """One layer weight: a tensor of a file, or a block of its rows (OpenCLIP's q/k/v)."""

    file: Path
    key: str
    block: int | None = None  # which third of the rows (q, k, v of a fused in_proj)

    def rows(self, total: int) -> slice:
        """The rows of the file's tensor (`total` of them) that hold this layer's weight."""
        if self.block is None:
            return slice(0, total)
        size = total // len(_QKV)
        return slice(self.block * size, (self.block + 1) * size)


@lru_cache(maxsize=3)
def family_architecture(family: ModelFamily) -> BaseModel:
    """The full-size `family` model on the meta device (built once: it takes seconds)."""
    return empty_base_model(family)


@lru_cache(maxsize=3)
def family_layout(family: ModelFamily) -> tuple[dict[str, Site], dict[str, str]]:
    """(kohya name in either spelling → site, LDM block map) of the full-size `family`."""
    base = family_architecture(family)
    return site_index(all_sites(base)), ldm_block_map(base.unet.config)


def _weight_files(folder: Path) -> list[Path]:
    """A diffusers component's weight files: the plain ones, else the fp16 variant."""
    files = sorted(folder.glob("*.safetensors"))
    return [f for f in files if ".fp16." not in f.name] or files


class Checkpoint:
    """A base checkpoint whose tensors are read one at a time, when asked for."""

    def __init__(self, path: Path, family: ModelFamily, files: list[Path]) -> None:
        self.path = path
        self.family = family
        self.is_folder = path.is_dir()
        self.tensors = {file: CheckpointTensors(file) for file in files}

    @cached_property
    def sites(self) -> Mapping[str, Any]:
        """kohya module name (either spelling) → what `locate` takes."""
        return family_layout(self.family)[0]

    @cached_property
    def _block_map(self) -> dict[str, str]:
        return family_layout(self.family)[1]

    def targets(self, conv: bool) -> list[tuple[str, bool]]:
        """sd-scripts' default LoRA modules of the family as (name, is a 3×3 conv); `conv`
        adds the convs."""
        sites = network_sites(family_architecture(self.family), conv=conv)
        return [(site.name, site.kind == "conv") for site in sites]

    def ref(self, name: str) -> WeightRef | None:
        """Where the module `name`'s weight is in this checkpoint; None without that layer."""
        site = self.sites.get(name)
        return None if site is None else self.locate(site)

    @property
    def lora_metadata(self) -> dict[str, str]:
        """What a LoRA made from this checkpoint inherits besides its name (nothing for SD)."""
        return {}

    @property
    def files(self) -> list[Path]:
        return list(self.tensors)

    def keys(self, file: Path) -> list[str]:
        return list(self.tensors[file].index)

    def _folder_ref(self, site: Site) -> WeightRef | None:
        path = site.path.removeprefix("text_model.")
        keys = [f"{site.path}.weight"]
        if site.part != UNET_PART:
            keys = [f"text_model.{path}.weight", f"{path}.weight"]
        for file, tensors in self.tensors.items():
            if file.parent.name == site.part:
                for key in keys:
                    if key in tensors.index:
                        return WeightRef(file, key)
        return None

    def _single_key(self, site: Site) -> tuple[str, int | None] | None:
        path = site.path.removeprefix("text_model.")
        if site.part == UNET_PART:
            return f"{LDM_UNET}{to_ldm_path(site.path, self._block_map)}.weight", None
        prefix = LDM_TEXT.get((self.family, site.part))
        if prefix is not None:
            return f"{prefix}{path}.weight", None
        match = _OPEN_CLIP_LAYER.match(path)
        if match is None:
            return None
        layer, module, qkv = match.groups()
        if qkv in _QKV:
            return f"{OPEN_CLIP}{layer}.attn.in_proj_weight", _QKV.index(qkv)
        return f"{OPEN_CLIP}{layer}.{_OPEN_CLIP_NAMES[module]}.weight", None

    def locate(self, site: Any) -> WeightRef | None:
        """Where `site`'s weight is in this checkpoint; None when it has no such tensor."""
        if self.is_folder:
            return self._folder_ref(site)
        found = self._single_key(site)
        if found is None or found[0] not in self.tensors[self.path].index:
            return None
        return WeightRef(self.path, *found)

    def dtype(self, file: Path, key: str) -> torch.dtype:
        return self.tensors[file].index[key].dtype

    def shape(self, ref: WeightRef) -> tuple[int, ...]:
        rows, *rest = self.tensors[ref.file].index[ref.key].shape
        selected = ref.rows(rows)
        return (selected.stop - selected.start, *rest)

    def tensor(self, file: Path, key: str) -> torch.Tensor:
        return self.tensors[file][key]

    def read(self, ref: WeightRef) -> torch.Tensor:
        """The layer weight `ref` points to (only its rows, for a fused q/k/v)."""
        tensor = self.tensor(ref.file, ref.key)
        return tensor[ref.rows(tensor.shape[0])]

    def metadata(self, file: Path) -> dict[str, str]:
        """The `__metadata__` of a safetensors file (empty for a `.ckpt`)."""
        if file.suffix.lower() != ".safetensors":
            return {}
        with safe_open(str(file), framework="pt") as handle:
            return dict(handle.metadata() or {})


def _folder_files(path: Path, family: ModelFamily) -> list[Path]:
    """The weight files of a diffusers folder's UNet, VAE and text encoders."""
    parts = [UNET_PART, "vae", *(subfolder for subfolder, _ in TEXT_ENCODERS[family])]
    files = []
    for part in parts:
        found = _weight_files(path / part)
        if not found:
            raise LorakitError(
                f"{path / part}: no .safetensors weights; lorakit merges and extracts only "
                "safetensors diffusers folders (re-save it with safe_serialization=True)"
            )
        files += found
    return files


def open_checkpoint(path: str | Path) -> Checkpoint:
    """A diffusers folder or a single-file checkpoint, ready for layer-by-layer reading;
    only headers are read here."""
    path = Path(path)
    family = detect_family(path)
    if family is ModelFamily.FLUX1:
        if path.is_dir():
            raise LorakitError(
                f"{path}: a FLUX.1 diffusers folder; merging and extracting take FLUX.1 as a "
                "single file (flux1-dev.safetensors or an all-in-one checkpoint)"
            )
        from lorakit.network.flux_checkpoint import FluxCheckpoint  # it subclasses Checkpoint

        return FluxCheckpoint(path)
    files = _folder_files(path, family) if path.is_dir() else [path]
    return Checkpoint(path, family, files)
