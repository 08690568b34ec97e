"""Bundled model configs and tokenizers: everything loading needs besides weights.

`sd15/`, `sdxl/`, `flux1-dev/` and `flux1-schnell/` are diffusers-layout config folders;
`clip_tokenizer/` is CLIP's BPE (built from the open_clip_torch wheel), `t5_tokenizer/`
T5 v1.1's SentencePiece vocabulary as a `tokenizers` file (from the diffsynth 1.1.9 wheel,
Apache-2.0), which FLUX.1's T5-XXL encoder uses.
"""

from pathlib import Path

CONFIG_ROOT = Path(__file__).resolve().parent
