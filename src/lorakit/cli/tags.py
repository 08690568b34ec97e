"""`lorakit tags`: list tag frequencies, or add/remove/replace tags across caption files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lorakit.captioning.choices import DEFAULT_EXT
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from rich.console import Console

    from lorakit.captioning.edit import CaptionEdit, TagOperation


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tags",
        help="list tag frequencies or edit tags across caption files",
        description=(
            "Without an action, list how many captions hold each tag. With add/remove/replace, "
            "show the diff of every caption file it would change; --write applies it. "
            'Example: lorakit tags img/ add "from side" --files "*side*"'
        ),
    )
    parser.add_argument("dir", help="dataset folder")
    parser.add_argument("--ext", default=DEFAULT_EXT, help="caption extension (default .txt)")
    parser.add_argument("--top", type=int, default=50, help="how many tags to list")
    parser.set_defaults(func=run, action=None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--files", metavar="GLOB", help='only these images/captions, e.g. "*side*"')
    common.add_argument("--write", action="store_true", help="apply (default: show the diff)")
    common.add_argument("--ext", default=argparse.SUPPRESS, help="caption extension")
    add = actions.add_parser("add", parents=[common], help="add tags after the existing ones")
    add.add_argument("tags", nargs="+", help='tags, e.g. "from side" (commas split tags)')
    remove = actions.add_parser("remove", parents=[common], help="remove tags")
    remove.add_argument("tags", nargs="+", help='tags, e.g. "earrings"')
    replace = actions.add_parser("replace", parents=[common], help="replace one tag by another")
    replace.add_argument("old")
    replace.add_argument("new")


def _split(values: list[str]) -> list[str]:
    from lorakit.captioning.tags import parse_tags

    tags = [tag for value in values for tag in parse_tags(value)]
    if not tags:
        raise LorakitError("no tag given; pass at least one non-empty tag")
    return tags


def _operation(args: argparse.Namespace) -> TagOperation:
    from lorakit.captioning.edit import add_tags, remove_tags, replace_tag

    if args.action == "add":
        return add_tags(_split(args.tags))
    if args.action == "remove":
        return remove_tags(_split(args.tags))
    old, new = _split([args.old])[0], _split([args.new])[0]
    return replace_tag(old, new)


def _list(args: argparse.Namespace, console: Console) -> int:
    from lorakit.captioning.tags import tag_frequencies
    from lorakit.captioning.write import frequency_table, normalize_ext
    from lorakit.dataset.scan import scan_dataset

    ext = normalize_ext(args.ext)
    # The scan has read every caption already; count tags from its records.
    records = scan_dataset(Path(args.dir), caption_ext=ext).records
    captions = [r.caption for r in records if r.caption is not None]
    console.print(frequency_table(tag_frequencies(captions), len(captions), top=args.top))
    if len(captions) < len(records):
        console.print(f"{len(records) - len(captions)} images have no {ext} caption file")
    return 0


def _show(edits: list[CaptionEdit], root: Path, console: Console) -> None:
    from rich.text import Text

    from lorakit.captioning.edit import unified_diff

    styles = {"+": "green", "-": "red", "@": "cyan"}
    for edit in edits:
        for line in unified_diff(edit, root):
            style = "bold" if line.startswith(("+++", "---")) else styles.get(line[:1], "")
            console.print(Text(line, style=style))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.captioning.edit import apply_edits, find_caption_files, plan_edits
    from lorakit.captioning.write import normalize_ext

    console = Console()
    if args.action is None:
        return _list(args, console)
    operation = _operation(args)
    root = Path(args.dir)
    found = find_caption_files(root, ext=args.ext, files=args.files)
    edits = plan_edits(found.captions, operation)
    _show(edits, root, console)
    if args.write:
        apply_edits(edits)
        console.print(f"changed {len(edits)} of {len(found.captions)} caption files")
    else:
        console.print(
            f"{len(edits)} of {len(found.captions)} caption files would change; "
            "pass --write to apply"
        )
    if found.uncaptioned:
        console.print(
            f"{len(found.uncaptioned)} matching images have no {normalize_ext(args.ext)} "
            "caption file (skipped; see --ext)"
        )
    return 0
