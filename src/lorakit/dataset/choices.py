"""Option values and defaults of the dataset stage, importable without numpy or Pillow.

The command line builds its parser from these on every start, so they live apart from the
modules that use them (`lint`, `prep`), which re-export them.
"""

from __future__ import annotations

# Variance of the Laplacian below which an image counts as blurry (see `lint`).
BLUR_THRESHOLD = 60.0
# The side each family was trained at; smaller images are upscaled by the trainer.
NATIVE_SIDE = {"sd15": 512, "sdxl": 1024}
CROPS = ("none", "square", "face")
