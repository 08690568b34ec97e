"""Natural-language captions from a local transformers image-to-text model (BLIP and kin).

Anything `AutoProcessor` + `AutoModelForImageTextToText` (transformers' successor of
`AutoModelForVision2Seq`) can load from a folder works; BLIP is what the guides use,
with beam search (9 beams) and a minimum length so captions are not three words long.
Loading is strictly local: `local_files_only=True`, nothing is ever fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lorakit.captioning.choices import BEAMS, MAX_LENGTH, MIN_LENGTH
from lorakit.errors import LorakitError

_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
_PROCESSOR = ("preprocessor_config.json", "processor_config.json")
_WHERE = (
    "BLIP captioners are published on Hugging Face as Salesforce/blip-image-captioning-large "
    "(or -base); download one once and pass its folder (lorakit downloads nothing)"
)


@dataclass(frozen=True)
class GenerationSettings:
    """Beam search settings; lengths are in tokens, as transformers counts them."""

    beams: int = BEAMS
    min_length: int = MIN_LENGTH
    max_length: int = MAX_LENGTH

    def __post_init__(self) -> None:
        if self.beams < 1 or self.min_length < 0 or self.max_length < max(self.min_length, 1):
            raise LorakitError(
                f"beams {self.beams}, min length {self.min_length}, max length "
                f"{self.max_length}: need beams ≥ 1 and 0 ≤ min length ≤ max length"
            )


def locate_captioner(path: str | Path) -> Path:
    """The model folder, after checking it holds a config, weights and processor files."""
    folder = Path(path).expanduser()
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(next(folder.glob(pattern), None) for pattern in _WEIGHTS):
        missing.append("weights (*.safetensors or pytorch_model.bin)")
    if not any((folder / name).is_file() for name in _PROCESSOR):
        missing.append("processor files (preprocessor_config.json or processor_config.json)")
    if missing:
        problem = "not found" if not folder.exists() else f"missing {', '.join(missing)}"
        raise LorakitError(
            f"{folder}: no transformers captioner ({problem}; "
            "expected a save_pretrained folder with config.json, weights, processor and "
            f"tokenizer files); {_WHERE}"
        )
    return folder


class TransformersCaptioner:
    """One sentence per image from a local image-to-text model."""

    def __init__(
        self,
        path: str | Path,
        settings: GenerationSettings | None = None,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = locate_captioner(path)
        self.settings = settings or GenerationSettings()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise LorakitError(
                f"{folder}: transformers cannot load this captioner "
                f"({str(exc).splitlines()[0]}); {_WHERE}"
            ) from exc
        self.model = model.to(self.device).eval()

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        import torch

        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            tokens = self.model.generate(
                **inputs,
                num_beams=self.settings.beams,
                min_length=self.settings.min_length,
                max_length=self.settings.max_length,
            )
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
        return [[text.strip()] for text in texts]
