"""Caption checks that need to know how Stable Diffusion reads text.

SD1.5 and SDXL encode captions with CLIP, which sees 77 tokens including its start and
end markers: anything past 75 tokens is silently cut off by trainers that do not extend
the context. Counting words is not enough (names and rare words split into several BPE
tokens), so the count uses the bundled CLIP vocabulary through the `tokenizers` library,
which loads in milliseconds where importing transformers takes seconds.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

CLIP_MAX_TOKENS = 75
# CLIP's own pre-tokenizer split: contractions, letter runs, single digits, punctuation runs.
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@cache
def _clip_tokenizer() -> Tokenizer:
    folder = files("lorakit").joinpath("models", "configs", "clip_tokenizer")
    bpe = models.BPE.from_file(
        str(folder.joinpath("vocab.json")),
        str(folder.joinpath("merges.txt")),
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
        fuse_unk=False,
        unk_token="<|endoftext|>",
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tokenizer


def clip_token_count(text: str) -> int:
    """CLIP tokens in `text`, without the start/end markers."""
    return len(_clip_tokenizer().encode(text).ids)


def has_trigger(caption: str, trigger: str) -> bool:
    """Whether `trigger` appears as a whole word (case-insensitive)."""
    pattern = rf"(?<![\w]){re.escape(trigger)}(?![\w])"
    return re.search(pattern, caption, flags=re.IGNORECASE) is not None


def trigger_from_subset(subset: str) -> str | None:
    """The trigger of a kohya `N_trigger class` folder: its first word."""
    words = subset.split()
    return words[0] if words else None
