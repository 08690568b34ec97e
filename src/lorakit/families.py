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
    FLUX1 = "flux1"  # FLUX.1 dev/schnell: trained by `lorakit train`; LoRA files convert/verify


# The side each family was trained at: the default training resolution, and the size below
# which lint warns that the trainer will upscale.
NATIVE_SIDE = {
    ModelFamily.SD15.value: 512,
    ModelFamily.SDXL.value: 1024,
    ModelFamily.TINY.value: 64,
    ModelFamily.FLUX1.value: 1024,
}
# The families whose base models load as `lorakit.models.BaseModel` (a UNet): every stage
# but training refuses FLUX.1 in one line until it has its own path there.
SD_FAMILIES = tuple(family for family in ModelFamily if family is not ModelFamily.FLUX1)
FLUX1 = ModelFamily.FLUX1
