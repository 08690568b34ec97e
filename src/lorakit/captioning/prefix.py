"""Turn a model's output into the caption a LoRA trainer wants.

The guides all end up with the same shape: "TRIGGER, CLASS, <what varies>". The trigger
and class come first, exactly once (a tagger that also says "woman" must not produce
"qz7, woman, ..., woman"), and tags that describe what every photo shares ("nose, lips,
1girl") are dropped so the trigger absorbs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lorakit.captioning.tags import format_tags, parse_tags, tag_key, tag_keys, unique_tags


@dataclass(frozen=True)
class CaptionStyle:
    """What to put first and what to leave out of every generated caption."""

    prefix: tuple[str, ...] = ()
    undesired: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_text(cls, prefix: str = "", undesired: str = "") -> CaptionStyle:
        """Build from the CLI's comma-separated strings ("qz7, woman", "nose, lips")."""
        return cls(prefix=tuple(parse_tags(prefix)), undesired=tag_keys(parse_tags(undesired)))

    def keep(self, tag: str) -> bool:
        return tag_key(tag) not in self.undesired

    def compose(self, generated: Sequence[str], existing: str | None = None) -> str:
        """The caption: prefix, then `existing` tags (append mode), then the new ones.

        Undesired tags are removed from the generated part only: text the user wrote
        themselves is never silently dropped.
        """
        body = [tag for tag in generated if self.keep(tag)]
        kept = parse_tags(existing) if existing else []
        return format_tags(unique_tags([*self.prefix, *kept, *body]))
