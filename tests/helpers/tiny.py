"""Tiny random SD1.5/SDXL models for the tests: they live in `lorakit.models.tiny`."""

from lorakit.models.tiny import save_tiny, tiny_sd15_pipeline, tiny_sdxl_pipeline, tiny_vae

__all__ = ["save_tiny", "tiny_sd15_pipeline", "tiny_sdxl_pipeline", "tiny_vae"]
