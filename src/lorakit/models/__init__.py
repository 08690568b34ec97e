"""Base-model families (SD1.5, SDXL; FLUX.1 in `lorakit.models.flux`): offline loading."""

from lorakit.models.base import BaseModel, ModelFamily
from lorakit.models.checkpoint import file_hashes
from lorakit.models.components import empty_base_model
from lorakit.models.family import detect_family
from lorakit.models.loader import load_base_model

__all__ = [
    "BaseModel",
    "ModelFamily",
    "detect_family",
    "empty_base_model",
    "file_hashes",
    "load_base_model",
]
