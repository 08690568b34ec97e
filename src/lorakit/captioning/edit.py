"""Edit tags across the caption files of a dataset: plan, show as a diff, then apply.

The guides fix captions by hand after tagging ("from side" on the side views, remove
"earrings" everywhere). Doing that across many files is error-prone, so edits are planned
first and shown as a diff; only an explicit apply writes them, atomically, file by file.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorakit.captioning.tags import CaptionText
from lorakit.captioning.write import DEFAULT_EXT, normalize_ext
from lorakit.dataset.scan import ImageRecord, scan_dataset
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_bytes

TagOperation = Callable[[CaptionText], bool]


@dataclass(frozen=True)
class CaptionFiles:
    """The caption files of a dataset and the images that have none."""

    root: Path
    captions: list[Path]
    uncaptioned: list[Path]


@dataclass(frozen=True)
class CaptionEdit:
    path: Path
    before: str
    after: str


def _matches(record: ImageRecord, root: Path, pattern: str) -> bool:
    """A glob matches the image or caption file name, or its path under the dataset."""
    names = [record.path]
    if record.caption_path:
        names.append(record.caption_path)
    for path in names:
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        if fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(relative, pattern):
            return True
    return False


def find_caption_files(
    root: Path, ext: str = DEFAULT_EXT, files: str | None = None
) -> CaptionFiles:
    """Caption files of the images the trainer would see, optionally filtered by a glob."""
    scan = scan_dataset(root, caption_ext=normalize_ext(ext))
    records = [r for r in scan.records if files is None or _matches(r, Path(root), files)]
    if files is not None and not records:
        raise LorakitError(f"{root}: no image matches --files {files!r}; check the pattern")
    return CaptionFiles(
        root=Path(root),
        captions=[r.caption_path for r in records if r.caption_path],
        uncaptioned=[r.path for r in records if r.caption_path is None],
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LorakitError(f"{path}: caption is not UTF-8 text; re-save it as UTF-8") from exc


def plan_edits(paths: list[Path], operation: TagOperation) -> list[CaptionEdit]:
    """The files `operation` would change, with their text before and after."""
    edits = []
    for path in paths:
        before = _read_text(path)
        caption = CaptionText.parse(before)
        if operation(caption):
            after = caption.render()
            if after != before:
                edits.append(CaptionEdit(path=path, before=before, after=after))
    return edits


def apply_edits(edits: list[CaptionEdit]) -> None:
    for edit in edits:
        atomic_write_bytes(edit.path, edit.after.encode("utf-8"))


def unified_diff(edit: CaptionEdit, root: Path) -> list[str]:
    name = edit.path.relative_to(root).as_posix() if edit.path.is_relative_to(root) else edit.path
    return list(
        difflib.unified_diff(
            edit.before.splitlines(),
            edit.after.splitlines(),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
            lineterm="",
        )
    )


def add_tags(tags: list[str]) -> TagOperation:
    return lambda caption: any([caption.add(tag) for tag in tags])


def remove_tags(tags: list[str]) -> TagOperation:
    return lambda caption: any([caption.remove(tag) for tag in tags])


def replace_tag(old: str, new: str) -> TagOperation:
    return lambda caption: caption.replace(old, new)
