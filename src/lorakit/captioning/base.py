"""The one interface every tagger and captioner implements.

The writer only needs "images in, caption parts out", so a WD14 tagger (many tags per
image) and a BLIP-style captioner (one sentence per image) plug into the same loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image


class Captioner(Protocol):
    """Captions a batch of RGB images; returns, per image, its parts in caption order.

    A tagger returns its tags (most confident first); a sentence captioner returns a
    one-element list. The writer adds the prefix and removes undesired parts.
    """

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]: ...
