"""network stage: LoRA modules injected by kohya names, saved, loaded, converted, verified."""

from lorakit.network.config import LoRAConfig
from lorakit.network.files import load_lora_file
from lorakit.network.lora import LoRANetwork
from lorakit.network.metadata import lora_metadata

__all__ = ["LoRAConfig", "LoRANetwork", "load_lora_file", "lora_metadata"]
