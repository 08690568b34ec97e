"""Comma-separated tag captions: parse, compare, count and edit them.

Captions in LoRA datasets are mostly Danbooru-style tag lists ("qz7, woman, from side").
Tags are compared by a key that ignores case, repeated spaces and the underscores of raw
Danbooru names, so "red_shirt" and "Red shirt" are one tag. Kaomoji such as "^_^" keep
their underscores because there the underscore is the face, not a word separator.
Editing goes through `CaptionText`, which keeps every byte between the tags, so adding a
tag and removing it again gives back the file exactly as it was.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# The kaomoji tags of the Danbooru vocabulary used by the WD14 taggers.
KAOMOJIS = frozenset(
    {
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    }
)
DEFAULT_SEPARATOR = ", "
_SEPARATOR = re.compile(r"(\s*,\s*)")
_SPACES = re.compile(r"\s+")


def normalize_tag(tag: str) -> str:
    """Display form of a tag: trimmed, single spaces, underscores as spaces (not kaomoji)."""
    tag = tag.strip()
    if tag not in KAOMOJIS:
        tag = tag.replace("_", " ")
    return _SPACES.sub(" ", tag).strip()


def tag_key(tag: str) -> str:
    """Comparison key: two tags with the same key are the same tag."""
    return normalize_tag(tag).lower()


def parse_tags(text: str) -> list[str]:
    """Non-empty tags of a comma-separated caption, trimmed, in order."""
    return [part.strip() for part in text.split(",") if part.strip()]


def format_tags(tags: Iterable[str]) -> str:
    return DEFAULT_SEPARATOR.join(tags)


def unique_tags(tags: Iterable[str]) -> list[str]:
    """Tags with later duplicates (same `tag_key`) dropped, first spelling kept."""
    seen: set[str] = set()
    kept = []
    for tag in tags:
        key = tag_key(tag)
        if key and key not in seen:
            seen.add(key)
            kept.append(tag)
    return kept


def tag_frequencies(captions: Iterable[str]) -> Counter[str]:
    """How many captions hold each tag (a tag repeated in one caption counts once)."""
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for caption in captions:
        for tag in unique_tags(parse_tags(caption)):
            key = tag_key(tag)
            spelling.setdefault(key, normalize_tag(tag))
            counts[spelling[key]] += 1
    return counts


@dataclass
class CaptionText:
    """A caption as tags plus the exact text around them, for byte-preserving edits.

    `render()` is `lead + tags[0] + separators[0] + tags[1] + ... + trail`; empty entries
    in `tags` stand for empty slots such as a trailing comma and are never matched.
    """

    lead: str
    tags: list[str]
    separators: list[str]
    trail: str

    @classmethod
    def parse(cls, text: str) -> CaptionText:
        body = text.lstrip("\ufeff")
        core = body.strip()
        if not core:
            return cls(lead=text[: len(text) - len(body)], tags=[""], separators=[], trail=body)
        start = text.index(core)
        pieces = _SEPARATOR.split(core)
        return cls(
            lead=text[:start],
            tags=pieces[0::2],
            separators=pieces[1::2],
            trail=text[start + len(core) :],
        )

    def render(self) -> str:
        parts = [self.lead]
        for index, tag in enumerate(self.tags):
            if index:
                parts.append(self.separators[index - 1])
            parts.append(tag)
        parts.append(self.trail)
        return "".join(parts)

    def present(self) -> list[str]:
        return [tag for tag in self.tags if tag.strip()]

    def index_of(self, tag: str) -> int | None:
        key = tag_key(tag)
        return next((i for i, t in enumerate(self.tags) if t.strip() and tag_key(t) == key), None)

    def add(self, tag: str) -> bool:
        """Append `tag` after the last tag unless it is already there."""
        if self.index_of(tag) is not None:
            return False
        if not self.present():
            if self.separators:
                self.tags.insert(0, tag)
                self.separators.insert(0, self._separator())
            else:
                self.tags = [tag]
            return True
        last = max(i for i, t in enumerate(self.tags) if t.strip())
        self.tags.insert(last + 1, tag)
        self.separators.insert(last, self._separator())
        return True

    def remove(self, tag: str) -> bool:
        """Remove every occurrence of `tag` together with the separator in front of it."""
        changed = False
        while (index := self.index_of(tag)) is not None:
            del self.tags[index]
            if self.separators:
                del self.separators[max(index - 1, 0)]
            changed = True
        if not self.tags:
            self.tags = [""]
        return changed

    def replace(self, old: str, new: str) -> bool:
        """Put `new` where `old` was; if `new` is already present, just drop `old`."""
        index = self.index_of(old)
        if index is None:
            return False
        if tag_key(old) == tag_key(new):
            return self._respell(new)
        if self.index_of(new) is not None:
            return self.remove(old)
        self.tags[index] = new
        self.remove(old)
        return True

    def _respell(self, spelling: str) -> bool:
        key = tag_key(spelling)
        before = list(self.tags)
        self.tags = [spelling if t.strip() and tag_key(t) == key else t for t in self.tags]
        return self.tags != before

    def _separator(self) -> str:
        return self.separators[0] if self.separators else DEFAULT_SEPARATOR


def tag_keys(tags: Iterable[str]) -> frozenset[str]:
    return frozenset(tag_key(tag) for tag in tags)
