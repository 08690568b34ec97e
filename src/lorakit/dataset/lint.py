"""Everything the guides tell users to check by eye, checked for them.

Each rule returns `Finding`s with a severity, the file and the fix. Errors are files a
trainer cannot use (unreadable, bombs, tiny images); warnings are things that measurably
hurt a LoRA (blur, duplicates, mirrored selfies, missing triggers, truncated captions);
info is context (image-count advice, colour modes prep will convert).

Blur uses the variance of the Laplacian (4-neighbour kernel) of the greyscale image,
measured after scaling its long side down to 512 px so the number does not depend on the
camera's resolution. Measured on scikit-image's sample photos at that size: sharp photos
score 400–1400, the same photos after a 1 px Gaussian blur 24–70, after 2 px under 15.
Below `BLUR_THRESHOLD` = 60 an image is flagged as blurry. Plain studio backdrops and
smooth skin lower the score of sharp photos too, so the finding is a warning, never an
error, and `--blur-threshold` tunes it.

Captions follow the family: SD wants the trigger first and at most 75 CLIP tokens; FLUX.1
wants sentences with the trigger inside them (`flux_captions`, guide 003).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lorakit.dataset.captions import (
    CLIP_MAX_TOKENS,
    clip_token_count,
    has_trigger,
    trigger_from_subset,
)
from lorakit.dataset.choices import BLUR_THRESHOLD, NATIVE_SIDE
from lorakit.dataset.findings import Finding, Severity
from lorakit.dataset.flux_captions import flux_caption_findings
from lorakit.dataset.hashing import (
    ImageHashes,
    exact_duplicate_groups,
    file_sha256,
    image_hashes,
    similar_pairs,
)
from lorakit.dataset.images import (
    ImageError,
    ImageHeader,
    decode,
    describe,
    laplacian_variance,
    open_image,
    to_rgb,
    upright,
)
from lorakit.dataset.scan import DatasetScan, ImageRecord, scan_dataset
from lorakit.errors import LorakitError
from lorakit.families import FLUX1
from lorakit.progress import track

ANALYSIS_SIDE = 512
MIN_SIDE = 256
MAX_SIDE = 2048
ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO


@dataclass(frozen=True)
class ImageFacts:
    header: ImageHeader
    sharpness: float
    hashes: ImageHashes
    sha256: str


def native_side(family: str) -> int:
    try:
        return NATIVE_SIDE[family.lower()]
    except KeyError:
        raise LorakitError(
            f"unknown model family {family!r}; use one of {', '.join(NATIVE_SIDE)}"
        ) from None


def analyze_image(path: Path) -> ImageFacts:
    """Decode once, upright, at most ANALYSIS_SIDE px, and measure sharpness and hashes."""
    image = open_image(path)
    with image:
        header = describe(image, path)
        if image.format == "JPEG":
            image.draft("RGB", (ANALYSIS_SIDE, ANALYSIS_SIDE))
        decode(image, path)
        gray = to_rgb(upright(image)).convert("L")
    gray.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.LANCZOS)
    return ImageFacts(
        header=header,
        sharpness=laplacian_variance(np.asarray(gray)),
        hashes=image_hashes(gray),
        sha256=file_sha256(path),
    )


def _size_findings(h: ImageHeader, native: int, family: str) -> list[Finding]:
    short, long = sorted((h.width, h.height))
    size = f"{h.width}×{h.height}"
    if short < MIN_SIDE:
        return [
            Finding(
                "too-small",
                ERROR,
                h.path,
                f"{size} has a side below {MIN_SIDE} px: too little detail to learn from",
                "replace it with a larger original or remove it",
            )
        ]
    found = []
    if short < native:
        found.append(
            Finding(
                "below-native",
                WARNING,
                h.path,
                f"{size} is below {family}'s native {native} px and will be upscaled",
                f"use a photo at least {native} px on the short side",
            )
        )
    if long > MAX_SIDE:
        found.append(
            Finding(
                "too-large",
                WARNING,
                h.path,
                f"{size} has a side above {MAX_SIDE} px; it only costs time and memory",
                f"lorakit dataset prep --max-side {MAX_SIDE} downsizes it",
            )
        )
    return found


def _format_findings(h: ImageHeader) -> list[Finding]:
    """Colour modes and orientation that some trainers get wrong; prep normalises them."""
    checks = [
        (h.mode == "CMYK", "cmyk", WARNING, "CMYK image: colours shift if read as RGB"),
        (h.mode in {"P", "PA"}, "palette", INFO, "palette image (256 colours at most)"),
        (h.has_alpha, "alpha", WARNING, "has transparency: trainers fill it with black"),
        (h.bit_depth > 8, "16-bit", INFO, f"{h.bit_depth}-bit image: most tools read 8 bits"),
        (
            h.orientation != 1,
            "exif-rotated",
            WARNING,
            f"EXIF orientation {h.orientation}: trainers that ignore EXIF see it sideways",
        ),
    ]
    fix = "lorakit dataset prep writes upright 8-bit sRGB PNGs"
    return [Finding(rule, sev, h.path, msg, fix) for cond, rule, sev, msg in checks if cond]


def _blur_finding(facts: ImageFacts, threshold: float) -> list[Finding]:
    if facts.sharpness >= threshold:
        return []
    return [
        Finding(
            "blurry",
            WARNING,
            facts.header.path,
            f"looks blurry (Laplacian variance {facts.sharpness:.0f} < {threshold:.0f})",
            "replace it with a sharp photo; the LoRA learns the blur",
        )
    ]


def _similarity_findings(facts: dict[Path, ImageFacts]) -> list[Finding]:
    paths = list(facts)
    groups = exact_duplicate_groups(paths, [facts[p].sha256 for p in paths])
    found = [
        Finding(
            "exact-duplicate",
            WARNING,
            dup,
            f"same file as {group[0].name}: it is trained twice as often",
            "remove one copy",
        )
        for group in groups
        for dup in group[1:]
    ]
    # Copies are flagged for removal already; comparing them again would repeat each pair.
    copies = {dup for group in groups for dup in group[1:]}
    kept = [p for p in paths if p not in copies]
    hashes = [facts[p].hashes for p in kept]
    found += [
        Finding(
            "near-duplicate",
            WARNING,
            b,
            f"nearly the same picture as {a.name}",
            "keep the better one; variety teaches more than copies",
        )
        for a, b in similar_pairs(kept, hashes, mirrored=False)
    ]
    found += [
        Finding(
            "mirrored-pair",
            WARNING,
            b,
            f"is a horizontal mirror of {a.name}: the subject's sides disagree",
            "remove one of the two: together they teach the subject both ways round",
        )
        for a, b in similar_pairs(kept, hashes, mirrored=True)
    ]
    return found


def _count_finding(count: int) -> Finding:
    """The guides' bands: ≤10 few, 11–20 good, 21–50 ideal, 51–100 many, >100 wasteful."""
    bands = [
        (10, WARNING, "few: the LoRA may not generalise", "add varied photos (20–50 is ideal)"),
        (20, INFO, "good", "20–50 is ideal if you have more varied photos"),
        (50, INFO, "ideal", "nothing to do"),
        (100, INFO, "many: fine for styles, more than a person needs", "drop near-repeats"),
    ]
    for limit, severity, verdict, fix in bands:
        if count <= limit:
            return Finding("image-count", severity, None, f"{count} images: {verdict}", fix)
    return Finding(
        "image-count",
        WARNING,
        None,
        f"{count} images: wasteful, more steps without a better LoRA",
        "keep the best 50–100",
    )


def _caption_findings(
    records: Sequence[ImageRecord], trigger: str | None, family: str
) -> list[Finding]:
    """Per-caption checks, and for FLUX.1 the dataset-wide sentence advice
    (`flux_captions`)."""
    if all(r.caption is None for r in records):
        return [
            Finding(
                "no-captions",
                WARNING,
                None,
                "no caption files: trainers fall back to the folder name for every image",
                "run lorakit caption, or prep to write 'trigger, class' captions",
            )
        ]
    flux = family == FLUX1.value

    def trigger_for(record: ImageRecord) -> str | None:
        return trigger or trigger_from_subset(record.subset)

    found = []
    for r in records:
        found += _one_caption(r, trigger_for(r), flux)
    return found + (flux_caption_findings(records, trigger_for) if flux else [])


def _one_caption(record: ImageRecord, trigger: str | None, flux: bool) -> list[Finding]:
    """Missing caption or trigger; for SD, words past CLIP's 75 tokens. FLUX.1 reads the
    caption with T5 (512 tokens for dev, `lorakit.models.flux.flow.encode_prompts`), so
    CLIP-L's cut only trims its pooled vector and is not reported."""
    if record.caption is None:
        fix = f"add {record.path.with_suffix('.txt').name} describing the image"
        return [Finding("missing-caption", WARNING, record.path, "has no caption file", fix)]
    found = []
    where = record.caption_path
    if trigger and not has_trigger(record.caption, trigger):
        found.append(
            Finding(
                "missing-trigger",
                WARNING,
                where,
                f"caption lacks the trigger word {trigger!r}",
                f"put it in the sentence: 'a photo of {trigger} ...'"
                if flux
                else f"start the caption with '{trigger}, '",
            )
        )
    tokens = 0 if flux else clip_token_count(record.caption)
    if tokens > CLIP_MAX_TOKENS:
        found.append(
            Finding(
                "long-caption",
                WARNING,
                where,
                f"caption is {tokens} CLIP tokens; words after {CLIP_MAX_TOKENS} are cut off",
                "shorten it to the essentials (or train with a longer token limit)",
            )
        )
    return found


def _other_file_findings(scan: DatasetScan) -> list[Finding]:
    return [
        Finding("other-file", INFO, p, "not an image or an image's caption", "ignored")
        for p in scan.other_files
    ]


def _face_findings(paths: Sequence[Path], native: int, face_model: Path | None) -> list[Finding]:
    from lorakit.dataset.faces import lint_faces, load_detector

    return lint_faces(paths, native, load_detector(face_model))


def lint_dataset(
    source: Path | DatasetScan,
    *,
    family: str = "sd15",
    trigger: str | None = None,
    caption_ext: str = ".txt",
    faces: bool = False,
    face_model: Path | None = None,
    blur_threshold: float = BLUR_THRESHOLD,
) -> list[Finding]:
    """All findings for a dataset folder (or an existing scan), errors first."""
    native = native_side(family)
    scan = source if isinstance(source, DatasetScan) else scan_dataset(source, caption_ext)
    findings: list[Finding] = []
    facts: dict[Path, ImageFacts] = {}
    for record in track(scan.records, "Checking images"):
        try:
            facts[record.path] = analyze_image(record.path)
        except ImageError as exc:
            findings.append(Finding("unreadable", ERROR, record.path, exc.reason, exc.fix))
    for f in facts.values():
        findings += _size_findings(f.header, native, family.lower())
        findings += _format_findings(f.header)
        findings += _blur_finding(f, blur_threshold)
    findings += _similarity_findings(facts)
    findings.append(_count_finding(len(scan.records)))
    readable = [r for r in scan.records if r.path in facts]
    findings += _caption_findings(readable, trigger, family.lower()) if readable else []
    findings += _other_file_findings(scan)
    if faces:
        findings += _face_findings(list(facts), native, face_model)
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(findings, key=lambda f: (order[f.severity], str(f.path or ""), f.rule))


def has_errors(findings: Sequence[Finding]) -> bool:
    return any(f.severity is ERROR for f in findings)
