"""A FLUX.1 checkpoint for `lora merge --model`: a BFL transformer file or an all-in-one file.

sd-scripts names each FLUX.1 LoRA module after its BFL layer with dots spelt as
underscores (`lora_unet_double_blocks_0_img_attn_qkv` is `double_blocks.0.img_attn.qkv`,
`lora_te1_text_model_encoder_layers_0_mlp_fc1` is CLIP-L's
`text_model.encoder.layers.0.mlp.fc1`), so the file's own weight keys, spelt that way, say
where each module goes; a fused layer (q/k/v, linear1) takes its module's whole ΔW, as
the LoRA was trained on it. The merge itself is SD's (`merge_checkpoint`): checked first,
then streamed tensor by tensor.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from lorakit.models import ModelFamily
from lorakit.models.flux.detect import detect_flux
from lorakit.network.base_weights import Checkpoint, WeightRef
from lorakit.network.flux_files import full_size_sites

_WEIGHT = ".weight"
# kohya's prefix per component: the transformer ("unet", as sd-scripts keeps it) and CLIP-L.
_UNET, _CLIP_L = "lora_unet_", "lora_te1_"


def kohya_name(prefix: str, path: str) -> str:
    """sd-scripts' module name of the layer at `path` (its key without `.weight`)."""
    return prefix + path.replace(".", "_")


class FluxCheckpoint(Checkpoint):
    """A single FLUX.1 file whose tensors are read one at a time; modules are found by name."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, ModelFamily.FLUX1, [path])
        self.layout = detect_flux(path, self.tensors[path].index)

    @cached_property
    def sites(self) -> dict[str, str]:
        """kohya module name → the file's weight key, for the transformer and, in an
        all-in-one file, CLIP-L (T5 has no LoRA modules in sd-scripts' FLUX.1 network)."""
        parts = [(self.layout.transformer, "", _UNET)]
        if self.layout.clip is not None:
            parts.append((self.layout.clip, "text_model.", _CLIP_L))
        found = {}
        for key in self.tensors[self.path].index:
            if not key.endswith(_WEIGHT):
                continue
            for prefix, inner, kohya in parts:
                if key.startswith(prefix + inner):
                    path = key.removeprefix(prefix).removesuffix(_WEIGHT)
                    found.setdefault(kohya_name(kohya, path), key)
        return found

    def locate(self, site: str) -> WeightRef | None:
        """The weight `sites` found for a module (by then it is known to be in the file)."""
        return WeightRef(self.path, site)

    def targets(self, conv: bool) -> list[tuple[str, bool]]:
        """sd-scripts' FLUX.1 LoRA modules (CLIP-L's included; all Linear, so `conv` adds
        nothing); the ones this file lacks are skipped by whoever asks for them."""
        return [(site.name, False) for site in full_size_sites(self.layout.variant)]

    @property
    def lora_metadata(self) -> dict[str, str]:
        """The variant, so a LoRA made from a schnell file says schnell."""
        return {"modelspec.architecture": f"flux-1-{self.layout.variant}/lora"}
