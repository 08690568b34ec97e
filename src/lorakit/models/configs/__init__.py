"""Bundled model configs and the CLIP tokenizer: everything loading needs besides weights."""

from pathlib import Path

CONFIG_ROOT = Path(__file__).resolve().parent
