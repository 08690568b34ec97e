"""Caption advice for FLUX.1 datasets: sentences, with the trigger inside them.

Guide 003 ("Match model style - Natural language for FLUX/SD3, tag-style for SD 1.5")
gives one caption per model: SD 1.5 "xyz_style, digital art, landscape, mountains, sunset,
vibrant colors", FLUX "A beautiful mountain landscape at sunset in the xyz_style, with
vibrant orange and purple colors". FLUX.1 reads captions with T5-XXL, a language model, so
a WD14 tag list or a lone leading "qz7," tag gives it less to go on than a sentence.

A caption counts as a tag list when it has at least `MIN_TAGS` comma-separated parts and
at least `TAG_SHARE` of them are `TAG_WORDS` words or fewer: guide 003's SD 1.5 example is
6 parts of 1–2 words; its SDXL ("mixed") example leads with a 7-word part and its FLUX
example is two clauses, and both pass. The findings are about the whole dataset (one line
each, with a count and an example file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lorakit.dataset.captions import has_trigger
from lorakit.dataset.findings import Finding, Severity
from lorakit.dataset.scan import ImageRecord

MIN_TAGS = 3
TAG_WORDS = 3
TAG_SHARE = 0.8
SENTENCE_FIX = "write sentences like 'a photo of {trigger} smiling in a park'"


def _parts(caption: str) -> list[str]:
    return [part.strip() for part in caption.split(",") if part.strip()]


def _name(record: ImageRecord) -> str:
    return (record.caption_path or record.path).name


def looks_like_tags(caption: str) -> bool:
    """Whether a caption is a comma-separated tag list (WD14 style) rather than prose."""
    parts = _parts(caption)
    if len(parts) < MIN_TAGS:
        return False
    short = sum(len(part.split()) <= TAG_WORDS for part in parts)
    return short >= TAG_SHARE * len(parts)


def trigger_only_as_tag(caption: str, trigger: str) -> bool:
    """Whether `trigger` stands alone as a comma-separated part ("qz7, a woman smiling")
    and never inside a sentence part."""
    parts = _parts(caption)
    alone = [part for part in parts if part.lower() == trigger.lower()]
    in_text = [part for part in parts if part.lower() != trigger.lower()]
    return bool(alone) and not any(has_trigger(part, trigger) for part in in_text)


def flux_caption_findings(
    records: Sequence[ImageRecord], trigger_for: Callable[[ImageRecord], str | None]
) -> list[Finding]:
    """Dataset-level advice for FLUX.1: tag-list captions, and triggers used as a tag."""
    captioned = [r for r in records if r.caption is not None]
    if not captioned:
        return []
    example = next((t for t in map(trigger_for, captioned) if t), "qz7")
    fix = SENTENCE_FIX.format(trigger=f"{example} woman")
    found = []
    tags = [r for r in captioned if looks_like_tags(r.caption or "")]
    if tags:
        found.append(
            Finding(
                "tag-captions",
                Severity.WARNING,
                None,
                f"{len(tags)} of {len(captioned)} captions are comma-separated tag lists "
                f"(e.g. {_name(tags[0])}); FLUX.1 reads sentences (T5)",
                f"recaption with lorakit caption --captioner (BLIP-style) or {fix}",
            )
        )
    as_tag = [
        r for r in captioned if (t := trigger_for(r)) and trigger_only_as_tag(r.caption or "", t)
    ]
    if as_tag:
        found.append(
            Finding(
                "trigger-as-tag",
                Severity.WARNING,
                None,
                f"{len(as_tag)} of {len(captioned)} captions have the trigger only as a "
                f"separate tag, outside the sentence (e.g. {_name(as_tag[0])})",
                f"put it inside the sentence: {fix}",
            )
        )
    return found
