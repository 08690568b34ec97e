"""Option values and defaults of the dataset stage, importable without numpy or Pillow.

The command line builds its parser from these on every start, so they live apart from the
modules that use them (`lint`, `prep`), which re-export them.
"""

from __future__ import annotations

from lorakit.families import NATIVE_SIDE

__all__ = ["BLUR_THRESHOLD", "CROPS", "FACE_MARGIN", "NATIVE_SIDE"]

# Variance of the Laplacian below which an image counts as blurry (see `lint`).
BLUR_THRESHOLD = 60.0
CROPS = ("none", "square", "face")
# Room around the face box in a face crop, in box sides (rule in `faces`).
FACE_MARGIN = 0.6
