"""lorakit: turn a folder of photos into a LoRA for Stable Diffusion, offline."""

__version__ = "0.1.0"
