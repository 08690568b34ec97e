"""Build the CLIP tokenizer files that lorakit ships, from the BPE list in open_clip's wheel.

sd-scripts and diffusers fetch `openai/clip-vit-large-patch14` from the hub at run time;
lorakit must work offline, so the same vocabulary is rebuilt once from the file that the
`open_clip_torch` wheel carries (`bpe_simple_vocab_16e6.txt.gz`) and committed under
`src/lorakit/models/configs/`. Run:

    pip download --no-deps open_clip_torch==3.3.0 -d /tmp/oc
    python tools/build_clip_tokenizer.py /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "lorakit" / "models" / "configs"
N_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character table, as CLIP uses it."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build(bpe_lines: list[str]) -> tuple[dict[str, int], list[str]]:
    merges = bpe_lines[1 : N_MERGES + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def tokenizer_config(pad: str) -> dict[str, object]:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad,
        "clean_up_tokenization_spaces": True,
        "errors": "replace",
    }


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
    encoder, merges = build(gzip.decompress(raw).decode("utf-8").split("\n"))
    # One folder serves both SDXL tokenizers: the loader passes pad_token="!" for the second.
    out = CONFIGS / "clip_tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    cfg = tokenizer_config("<|endoftext|>")
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    special = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
