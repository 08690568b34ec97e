"""Keep the libraries lorakit builds on offline, quiet, and free of backends it does not use.

lorakit never downloads and shows its own progress, so the Hugging Face libraries are told
to fail fast instead of reaching for the hub, and to keep their loading bars and optional-
backend chatter (e.g. "requires torchvision") to themselves.

bitsandbytes is imported by diffusers, transformers and peft at start-up whenever it is
installed, although only the 8-bit optimizers use it: that costs every command over a
second and, on CPUs with AVX512-BF16, prints a warning about a missing `kernels` package.
All three decide with `importlib.util.find_spec`, which answers "not installed" for a name
whose `sys.modules` entry is None, so `configure()` sets that entry and `bitsandbytes()`
lifts it for the one caller that needs the package.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import ModuleType

HIDDEN_UNTIL_USED = ("bitsandbytes",)


def configure() -> None:
    """Call before the first diffusers/transformers import (the CLI does)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in HIDDEN_UNTIL_USED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def bitsandbytes() -> ModuleType:
    """The bitsandbytes package, imported now; its CPU-kernel notice is not shown, since
    the 8-bit optimizers lorakit uses do not need those kernels."""
    if "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
        del sys.modules["bitsandbytes"]
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    return importlib.import_module("bitsandbytes")
