"""Kohya module names: which layers get a LoRA and what sd-scripts calls them.

A1111, ComfyUI, InvokeAI and diffusers all read LoRA files by sd-scripts' names, so they
are the file format. sd-scripts builds them from its own model classes: for SD1.5 the
diffusers module path, for SDXL the SAI/LDM path (`input_blocks.4.1…`), for the text
encoders the transformers 4 path with its `text_model.` level. lorakit walks the diffusers
and transformers 5 modules it really has and translates each path to that spelling; the
SDXL block numbering is derived from the UNet config (layers per block, block types), so
it follows the architecture instead of a hard-coded list.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from lorakit.network.modules import AdapterModule, innermost

UNET_PREFIX = "lora_unet"
# sd-scripts' defaults: every Linear / 1×1 conv inside a Transformer2DModel; with conv_dim
# also everything inside the ResNet and resampling blocks (3×3 convs at conv_dim, their
# time-embedding Linear and 1×1 shortcut at the linear dim).
UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
UNET_PART = "unet"
TEXT_PARTS = ("text_encoder", "text_encoder_2")

# diffusers → LDM names inside a ResNet block and a downsampler.
_RESNET_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_DOWNSAMPLER_LDM = {"conv": "op"}
# Top-level UNet layers outside the down/mid/up blocks.
_TOP_LEVEL_LDM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


@dataclass(eq=False)
class Site:
    """One layer a LoRA can wrap: where it lives and its kohya name(s)."""

    name: str  # canonical kohya name (what lorakit writes)
    alt_name: str  # the other UNet spelling (diffusers path ↔ LDM path); == name for TEs
    path: str  # module path inside its model (diffusers / transformers naming)
    part: str  # "unet", "text_encoder" or "text_encoder_2"
    parent: nn.Module
    attr: str

    @property
    def layer(self) -> nn.Linear | nn.Conv2d:
        found = innermost(getattr(self.parent, self.attr))
        assert isinstance(found, nn.Linear | nn.Conv2d)
        return found

    @property
    def kind(self) -> str:
        """ "linear" (Linear or 1×1 conv, trained at `rank`) or "conv" (k×k, `conv_rank`)."""
        layer = self.layer
        if isinstance(layer, nn.Conv2d) and layer.kernel_size != (1, 1):
            return "conv"
        return "linear"


def kohya_name(prefix: str, path: str) -> str:
    return f"{prefix}_{path}".replace(".", "_")


def text_prefixes(count: int) -> list[str]:
    """`lora_te` for SD1.5's single encoder, `lora_te1`/`lora_te2` for SDXL's pair."""
    return ["lora_te"] if count == 1 else [f"lora_te{index + 1}" for index in range(count)]


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(path, module) like `named_modules`, without entering LoRA wrappers."""
    yield prefix, module
    if isinstance(module, AdapterModule):
        return
    for name, child in module._modules.items():
        if child is not None:
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)


def leaf_layers(root: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, str]]:
    """(path, parent, attribute) of every Linear/Conv2d under `root`, LoRA-wrapped or not."""
    seen: set[int] = set()
    for path, module in _walk(root, prefix):
        if isinstance(module, AdapterModule | nn.Linear | nn.Conv2d):
            continue
        for attr, child in module._modules.items():
            layer = innermost(child) if child is not None else None
            if isinstance(layer, nn.Linear | nn.Conv2d) and id(child) not in seen:
                seen.add(id(child))
                yield (f"{path}.{attr}" if path else attr), module, attr


def ldm_block_map(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers block path → LDM block path (`down_blocks.1.attentions.0` → `input_blocks.4.1`).

    LDM numbers the input blocks after conv_in (0) in order, one per layer plus one per
    downsampler; output blocks have one more layer per level and put the upsampler inside
    the level's last block, after the attention when there is one.
    """
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    layers = config["layers_per_block"]
    per_level = list(layers) if isinstance(layers, Sequence) else [int(layers)] * len(down)
    mapping = dict(_TOP_LEVEL_LDM)
    index = 1
    for level, block_type in enumerate(down):
        for layer in range(per_level[level]):
            mapping[f"down_blocks.{level}.resnets.{layer}"] = f"input_blocks.{index}.0"
            if "CrossAttn" in block_type:
                mapping[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{index}.1"
            index += 1
        if level < len(down) - 1:
            mapping[f"down_blocks.{level}.downsamplers.0"] = f"input_blocks.{index}.0"
            index += 1
    mapping["mid_block.resnets.0"] = "middle_block.0"
    mapping["mid_block.attentions.0"] = "middle_block.1"
    mapping["mid_block.resnets.1"] = "middle_block.2"
    index = 0
    for level, block_type in enumerate(up):
        cross = "CrossAttn" in block_type
        for layer in range(list(reversed(per_level))[level] + 1):
            mapping[f"up_blocks.{level}.resnets.{layer}"] = f"output_blocks.{index}.0"
            if cross:
                mapping[f"up_blocks.{level}.attentions.{layer}"] = f"output_blocks.{index}.1"
            index += 1
        if level < len(up) - 1:
            mapping[f"up_blocks.{level}.upsamplers.0"] = (
                f"output_blocks.{index - 1}.{2 if cross else 1}"
            )
    return mapping


def to_ldm_path(path: str, block_map: Mapping[str, str]) -> str:
    """The LDM spelling of a diffusers UNet layer path (unchanged if it has none)."""
    parts = path.split(".")
    for size in (4, 3, 2, 1):
        block = ".".join(parts[:size])
        if block in block_map:
            rest = parts[size:]
            renames = _RESNET_LDM if ".resnets." in f".{block}." else {}
            if ".downsamplers." in f".{block}.":
                renames = _DOWNSAMPLER_LDM
            if rest and rest[0] in renames:
                rest = [renames[rest[0]], *rest[1:]]
            return ".".join([block_map[block], *rest])
    return path


def _unet_containers(unet: nn.Module, classes: Sequence[str]) -> Iterator[tuple[str, nn.Module]]:
    for path, module in _walk(unet):
        if type(module).__name__ in classes:
            yield path, module


def unet_sites(
    unet: nn.Module, *, ldm_names: bool, conv: bool = False, everything: bool = False
) -> list[Site]:
    """LoRA sites of a diffusers UNet in sd-scripts' order and naming.

    `ldm_names` selects the canonical spelling (True for SDXL). `conv` adds the ResNet and
    resampler layers (sd-scripts' conv_dim); `everything` takes every Linear/Conv2d of the
    UNet, which is what A1111/ComfyUI accept when they map a file's keys.
    """
    block_map = ldm_block_map(unet.config)
    if everything:
        layers = list(leaf_layers(unet))
    else:
        classes = UNET_TARGETS + (UNET_CONV_TARGETS if conv else ())
        layers = [
            entry
            for path, box in _unet_containers(unet, classes)
            for entry in leaf_layers(box, path)
        ]
    sites = []
    for path, parent, attr in layers:
        diffusers_name = kohya_name(UNET_PREFIX, path)
        ldm_name = kohya_name(UNET_PREFIX, to_ldm_path(path, block_map))
        name, alt = (ldm_name, diffusers_name) if ldm_names else (diffusers_name, ldm_name)
        sites.append(Site(name, alt, path, UNET_PART, parent, attr))
    return sites


def text_sites(text_encoders: Sequence[nn.Module], *, everything: bool = False) -> list[Site]:
    """LoRA sites of the CLIP text encoder(s): attention q/k/v/out and MLP fc1/fc2.

    transformers 5's CLIPTextModel has no `text_model.` level; sd-scripts' names (from
    transformers 4) do, so it is put back: the file format must not follow a refactor.
    """
    sites = []
    for index, (encoder, prefix) in enumerate(
        zip(text_encoders, text_prefixes(len(text_encoders)), strict=True)
    ):
        level = "" if hasattr(encoder, "text_model") else "text_model."
        if everything:
            layers = list(leaf_layers(encoder))
        else:
            layers = [
                entry
                for path, box in _walk(encoder)
                if type(box).__name__ in TEXT_TARGETS
                for entry in leaf_layers(box, path)
            ]
        for path, parent, attr in layers:
            name = kohya_name(prefix, level + path)
            sites.append(Site(name, name, path, TEXT_PARTS[index], parent, attr))
    return sites


def site_index(sites: Sequence[Site]) -> dict[str, Site]:
    """Both spellings of every site → the site (loading accepts either)."""
    index = {site.alt_name: site for site in sites}
    index.update({site.name: site for site in sites})
    return index
