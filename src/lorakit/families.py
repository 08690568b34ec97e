"""The model families lorakit supports, in a module that imports nothing heavy.

`lorakit.models` loads diffusers and transformers; the command line needs only the names
(for `choices=`), so the enum lives here and `lorakit.models` re-exports it.
"""

from __future__ import annotations

from enum import StrEnum


class ModelFamily(StrEnum):
    SD15 = "sd15"
    SDXL = "sdxl"
    TINY = "tiny"  # lorakit's pretrained 64 px model in the SD1.5 layout (make demo, bench)


# The side each family was trained at: the default training resolution, and the size below
# which lint warns that the trainer will upscale.
NATIVE_SIDE = {
    ModelFamily.SD15.value: 512,
    ModelFamily.SDXL.value: 1024,
    ModelFamily.TINY.value: 64,
}
# FLUX.1 LoRA files (`lora convert|inspect|verify`, `lorakit.network.flux_files`): a family
# name on the command line before FLUX.1 is a ModelFamily of every stage.
FLUX1 = "flux1"
