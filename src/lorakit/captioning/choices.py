"""Option values and defaults of the captioning stage, importable without numpy or Pillow.

The command line shows these defaults in its help on every start, so they live apart from
the modules that load models (`wd14`, `blip`, `write`), which use and re-export them.
"""

from __future__ import annotations

from enum import StrEnum

DEFAULT_EXT = ".txt"
# Tagger thresholds: character tags need more confidence than general ones.
GENERAL_THRESHOLD = 0.35
CHARACTER_THRESHOLD = 0.85
# Captioner beam search, as the guides run BLIP; lengths in tokens.
BEAMS = 9
MIN_LENGTH = 15
MAX_LENGTH = 75


class ExistingCaptions(StrEnum):
    OVERWRITE = "overwrite"
    APPEND = "append"
    SKIP = "skip"
