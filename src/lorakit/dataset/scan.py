"""Find the images and captions of a dataset, in the layouts people actually use.

Users arrive with one of three shapes: a flat folder of photos, kohya's `img/` folder
whose `N_name/` subfolders carry the repeat count in their name, or a whole run folder
that holds `img/`. Scanning accepts all three so every later stage (lint, prep, training)
sees the same `DatasetScan`. The scan reads names and captions only; whether the image
bytes are any good is `lint`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.errors import LorakitError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    caption: str | None
    caption_path: Path | None
    repeats: int
    subset: str


@dataclass
class DatasetScan:
    root: Path
    layout: str
    records: list[ImageRecord]
    other_files: list[Path] = field(default_factory=list)

    @property
    def subsets(self) -> dict[str, list[ImageRecord]]:
        """Records grouped by subset name, in scan order."""
        groups: dict[str, list[ImageRecord]] = {}
        for record in self.records:
            groups.setdefault(record.subset, []).append(record)
        return groups


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def _visible_entries(folder: Path) -> list[Path]:
    """Folder entries in a stable order, skipping hidden files (editor and temp files)."""
    try:
        entries = list(folder.iterdir())
    except PermissionError as exc:
        raise LorakitError(f"{folder}: cannot read the folder; check its permissions") from exc
    return sorted(p for p in entries if not p.name.startswith("."))


def read_caption(path: Path) -> str:
    """Caption text, stripped; a one-line error for files that are not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise LorakitError(
            f"{path}: caption is not UTF-8 text; re-save it with UTF-8 encoding"
        ) from exc


def _kohya_name(folder: Path) -> tuple[int, str] | None:
    """(repeats, subset) of an `N_name` folder with N ≥ 1, else None."""
    match = _KOHYA_FOLDER.match(folder.name)
    if match is None or int(match.group(1)) < 1:
        return None
    return int(match.group(1)), match.group(2)


def _parse_kohya_name(folder: Path) -> tuple[int, str]:
    parsed = _kohya_name(folder)
    if parsed is None:
        raise LorakitError(
            f"{folder}: folder name must start with a repeat count, e.g. "
            f"'10_{folder.name}'; rename it to N_name with N ≥ 1"
        )
    return parsed


def _scan_folder(
    folder: Path, repeats: int, subset: str, caption_ext: str
) -> tuple[list[ImageRecord], list[Path]]:
    """Images of one folder with their same-stem captions; everything else is 'other'."""
    files = [p for p in _visible_entries(folder) if p.is_file()]
    images = [p for p in files if is_image_file(p)]
    stems = {p.stem for p in images}
    records = []
    for image in images:
        caption_path = image.with_suffix(caption_ext)
        has_caption = caption_path.is_file()
        records.append(
            ImageRecord(
                path=image,
                caption=read_caption(caption_path) if has_caption else None,
                caption_path=caption_path if has_caption else None,
                repeats=repeats,
                subset=subset,
            )
        )
    others = [
        p
        for p in files
        if not is_image_file(p)
        and not (p.suffix.lower() == caption_ext.lower() and p.stem in stems)
    ]
    return records, others


def _image_root(root: Path) -> Path:
    """The folder holding images or `N_name/` subfolders: a run folder's `img/` if present."""
    img = root / "img"
    return img if img.is_dir() else root


def _folder_has_images(folder: Path) -> bool:
    return any(p.is_file() and is_image_file(p) for p in _visible_entries(folder))


def scan_dataset(root: Path, caption_ext: str = ".txt") -> DatasetScan:
    """Scan a flat folder, an `img/` folder of `N_name/` subfolders, or a run folder.

    A folder that itself is named `N_name` (a user pointing at one kohya subset) is read
    as a one-subset kohya dataset so its repeat count is not lost.
    """
    root = Path(root)
    if not root.exists():
        raise LorakitError(f"{root}: folder not found; check the path")
    if not root.is_dir():
        raise LorakitError(f"{root}: not a folder; pass the folder that holds the images")
    if not caption_ext.startswith("."):
        caption_ext = "." + caption_ext
    base = _image_root(root)
    subfolders = [p for p in _visible_entries(base) if p.is_dir() and _folder_has_images(p)]
    if subfolders:
        if _folder_has_images(base):
            raise LorakitError(
                f"{base}: holds both images and N_name subfolders; "
                "move the loose images into a subfolder such as 10_name"
            )
        layout = "kohya"
        records: list[ImageRecord] = []
        others: list[Path] = []
        for sub in subfolders:
            repeats, subset = _parse_kohya_name(sub)
            sub_records, sub_others = _scan_folder(sub, repeats, subset, caption_ext)
            records += sub_records
            others += sub_others
    elif (own := _kohya_name(base)) is not None:
        layout = "kohya"
        repeats, subset = own
        records, others = _scan_folder(base, repeats, subset, caption_ext)
    else:
        layout = "flat"
        records, others = _scan_folder(base, 1, "", caption_ext)
    if not records:
        raise LorakitError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTS))}); "
            "add photos or pass the right folder"
        )
    return DatasetScan(root=root, layout=layout, records=records, other_files=others)
