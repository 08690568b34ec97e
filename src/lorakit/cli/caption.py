"""`lorakit caption`: tag or caption a dataset folder with a local model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lorakit.captioning import choices
from lorakit.captioning.choices import DEFAULT_EXT, ExistingCaptions

if TYPE_CHECKING:
    from lorakit.captioning.base import Captioner

_EXISTING_HELP = {
    ExistingCaptions.OVERWRITE: "replace existing captions",
    ExistingCaptions.APPEND: "keep existing captions and add the new tags after them",
    ExistingCaptions.SKIP: "leave images that have a caption alone",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="caption images with a local WD14 tagger or BLIP-style captioner",
        description=(
            "Write one caption file per image, next to it, with a local model "
            "(nothing is downloaded). Example: lorakit caption run/img --tagger ~/models/wd14 "
            '--prefix "qz7, woman" --undesired "nose, lips, 1girl"'
        ),
    )
    parser.add_argument("dir", help="dataset folder (flat, img/ with N_name/ subfolders, or run)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--tagger", metavar="PATH", help="WD14 folder: model.onnx + selected_tags.csv"
    )
    model.add_argument(
        "--captioner", metavar="PATH", help="transformers folder of a BLIP-style captioner"
    )
    parser.add_argument("--prefix", default="", help='put first, once: "TRIGGER, CLASS"')
    parser.add_argument("--undesired", default="", help='tags to drop: "nose, lips, 1girl"')
    tagger = parser.add_argument_group("tagger options")
    for kind, default in (
        ("general", choices.GENERAL_THRESHOLD),
        ("character", choices.CHARACTER_THRESHOLD),
    ):
        tagger.add_argument(
            f"--{kind}-threshold",
            type=float,
            default=default,
            help=f"minimum probability of a {kind} tag (default %(default)s)",
        )
    tagger.add_argument(
        "--include-ratings", action="store_true", help="add the most likely rating tag"
    )
    captioner = parser.add_argument_group("captioner options")
    for flag, default, text in (
        ("--beams", choices.BEAMS, "default %(default)s"),
        ("--min-length", choices.MIN_LENGTH, "in tokens (default %(default)s)"),
        ("--max-length", choices.MAX_LENGTH, "in tokens (default %(default)s)"),
    ):
        captioner.add_argument(flag, type=int, default=default, help=text)
    parser.add_argument("--batch-size", type=int, default=4, help="default %(default)s")
    parser.add_argument(
        "--ext", default=DEFAULT_EXT, help="caption extension (default .txt, as the trainer)"
    )
    existing = parser.add_mutually_exclusive_group()
    for mode, text in _EXISTING_HELP.items():
        existing.add_argument(
            f"--{mode.value}", dest="existing", action="store_const", const=mode, help=text
        )
    parser.set_defaults(func=run, existing=None)


def _load_model(args: argparse.Namespace) -> Captioner:
    from lorakit.captioning.blip import GenerationSettings, TransformersCaptioner
    from lorakit.captioning.wd14 import TagThresholds, WD14Tagger

    if args.tagger:
        thresholds = TagThresholds(
            general=args.general_threshold,
            character=args.character_threshold,
            include_ratings=args.include_ratings,
        )
        return WD14Tagger(args.tagger, thresholds)
    settings = GenerationSettings(
        beams=args.beams, min_length=args.min_length, max_length=args.max_length
    )
    return TransformersCaptioner(args.captioner, settings)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.captioning.blip import locate_captioner
    from lorakit.captioning.prefix import CaptionStyle
    from lorakit.captioning.wd14 import locate_tagger
    from lorakit.captioning.write import (
        frequency_table,
        normalize_ext,
        plan_captions,
        run_captions,
    )

    # Check the model files before scanning and loading so a typo fails in a second.
    if args.tagger:
        locate_tagger(args.tagger)
    else:
        locate_captioner(args.captioner)
    plan = plan_captions(Path(args.dir), ext=args.ext, existing=args.existing)
    console = Console()
    if not plan.jobs:
        console.print(f"nothing to caption: all {len(plan.skipped)} images already have captions")
        return 0
    captioner = _load_model(args)
    style = CaptionStyle.from_text(prefix=args.prefix, undesired=args.undesired)
    result = run_captions(plan, captioner, style, batch_size=args.batch_size)
    frequencies = result.frequencies
    if frequencies:
        console.print(frequency_table(frequencies, len(result.written)))
    console.print(
        f"wrote {len(result.written)} {normalize_ext(args.ext)} captions next to their images"
        + (f", skipped {len(result.skipped)} already captioned" if result.skipped else "")
    )
    return 0
