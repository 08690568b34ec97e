"""Turn a folder of photos into kohya's training layout, reproducibly.

`prep` does what the guides' rename-convert-caption scripts do by hand: upright RGB PNGs
named `<trigger>_001.png …` in `OUT/img/<repeats>_<trigger> <class>/`, each with a caption
that contains the trigger. It never writes into the source, writes every file atomically,
and produces byte-identical output when run twice (files whose bytes would not change are
not rewritten), so it is safe to re-run after adding photos.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from lorakit.dataset.captions import has_trigger
from lorakit.dataset.choices import CROPS, FACE_MARGIN
from lorakit.dataset.images import load_rgb
from lorakit.dataset.plan import repeats_for
from lorakit.dataset.scan import DatasetScan, ImageRecord, scan_dataset
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_bytes
from lorakit.progress import track

if TYPE_CHECKING:
    from lorakit.dataset.face_detect import FaceDetector

_TRIGGER = re.compile(r"^[\w-]+$")
_CLASS = re.compile(r"^\w[\w -]*$")


@dataclass(frozen=True)
class PrepOptions:
    trigger: str
    class_name: str
    repeats: int | None = None
    crop: str = "none"
    margin: float = FACE_MARGIN
    size: int | None = None
    max_side: int | None = None
    upscale: bool = False
    caption_ext: str = ".txt"
    fix_orientation: bool = False
    face_model: Path | None = None  # a YuNet .onnx; None = OpenCV's bundled Haar cascades


@dataclass
class PrepResult:
    folder: Path
    repeats: int
    images: list[Path] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    captions_created: list[Path] = field(default_factory=list)
    trigger_added: list[Path] = field(default_factory=list)
    no_face: list[Path] = field(default_factory=list)
    flipped: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


def _validate(options: PrepOptions) -> None:
    if not _TRIGGER.match(options.trigger):
        raise LorakitError(
            f"trigger {options.trigger!r} must be one word of letters, digits, _ or -; "
            "pick a rare token such as 'sks' or 'ohwx'"
        )
    if not _CLASS.match(options.class_name.strip()):
        raise LorakitError(
            f"class {options.class_name!r} must be plain words like 'person' or 'red car'"
        )
    if options.crop not in CROPS:
        raise LorakitError(f"unknown crop {options.crop!r}; use one of {', '.join(CROPS)}")
    if options.margin < 0:
        raise LorakitError(f"--margin must be 0 or more, got {options.margin}; try 0.6")
    if options.size is not None and options.crop == "none":
        raise LorakitError("--size needs --crop square or face; use --max-side otherwise")
    for name in ("size", "max_side", "repeats"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise LorakitError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _check_folders(src: Path, out: Path) -> None:
    """SRC and OUT must not contain each other: prep must never write into the source."""
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or src_r in out_r.parents:
        raise LorakitError(f"{out}: output is inside the source {src}; choose a folder outside")
    if out_r in src_r.parents:
        raise LorakitError(f"{src}: source is inside the output {out}; choose another output")


def _centre_square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def _face_crop(
    image: Image.Image, margin: float, detector: FaceDetector
) -> tuple[Image.Image, bool]:
    """The square crop around the face (`face_crop_box` keeps it inside the image);
    (centre crop, False) if there is no face."""
    from lorakit.dataset.faces import face_crop_box

    box = face_crop_box(image, margin, detector)
    if box is None:
        return _centre_square(image), False
    return image.crop(box), True


def _resize(image: Image.Image, limit: int | None, upscale: bool) -> Image.Image:
    """Long side to `limit`: always when larger, when smaller only with `upscale`."""
    long_side = max(image.size)
    if limit is None or long_side == limit or (long_side < limit and not upscale):
        return image
    scale = limit / long_side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _png_bytes(image: Image.Image) -> bytes:
    """PNG without metadata, so the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def _caption_for(record: ImageRecord, options: PrepOptions) -> tuple[str, str]:
    """(caption, how): carried over, created as 'trigger, class', or trigger prepended."""
    if not record.caption:
        return f"{options.trigger}, {options.class_name}", "created"
    if has_trigger(record.caption, options.trigger):
        return record.caption, "kept"
    return f"{options.trigger}, {record.caption}", "trigger"


def _mirrored(records: Sequence[ImageRecord], detector: FaceDetector) -> set[Path]:
    from lorakit.dataset.faces import find_mirrored

    paths = [rec.path for rec in records]
    return {r.path for r in find_mirrored(paths, detector) if r.flagged}


def _detector(options: PrepOptions) -> FaceDetector | None:
    """Load the face detector once, and only when a face step asks for it (OpenCV is slow
    to import and a model file may be missing)."""
    if options.crop != "face" and not options.fix_orientation:
        return None
    from lorakit.dataset.faces import load_detector

    return load_detector(options.face_model)


def _stale_files(img_dir: Path, folder: Path, trigger: str, keep: set[Path]) -> list[Path]:
    """Files an earlier prep of this subset wrote that this run does not: old numbering
    in the target folder, or the same subset under a different repeat count."""
    subset = folder.name.split("_", 1)[1]
    own_name = re.compile(rf"^{re.escape(trigger)}_\d+\.")
    stale = []
    same_subset = re.compile(rf"^\d+_{re.escape(subset)}$")
    for sub in sorted(img_dir.glob(f"*_{subset}")):
        if sub.is_dir() and same_subset.match(sub.name):
            stale += [p for p in sorted(sub.iterdir()) if own_name.match(p.name) and p not in keep]
    return stale


def _remove(paths: Sequence[Path], folder: Path) -> None:
    parents = {p.parent for p in paths}
    for path in paths:
        path.unlink()
    for parent in parents:
        if parent != folder and not any(parent.iterdir()):
            parent.rmdir()


def _prepare_image(
    record: ImageRecord,
    options: PrepOptions,
    flip: bool,
    result: PrepResult,
    detector: FaceDetector | None,
) -> Image.Image:
    image = load_rgb(record.path)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        result.flipped.append(record.path)
    if options.crop == "square":
        image = _centre_square(image)
    elif options.crop == "face":
        assert detector is not None  # _detector() loads one whenever crop == "face"
        image, found = _face_crop(image, options.margin, detector)
        if not found:
            result.no_face.append(record.path)
    limit = options.size if options.size is not None else options.max_side
    return _resize(image, limit, options.upscale)


def prep_dataset(
    src: Path, out: Path, options: PrepOptions | None = None, **fields: Any
) -> PrepResult:
    """Write `out/img/<repeats>_<trigger> <class>/` from the images of `src`.

    Pass a `PrepOptions`, or its fields as keywords (`trigger=`, `class_name=`, `crop=`…).
    """
    if options is None:
        options = PrepOptions(**fields)
    elif fields:
        raise TypeError("pass either a PrepOptions or its fields, not both")
    _validate(options)
    src, out = Path(src), Path(out)
    scan: DatasetScan = scan_dataset(src, options.caption_ext)
    _check_folders(src, out)
    records = scan.records
    repeats = options.repeats or repeats_for(len(records))
    img_dir = out / "img"
    folder = img_dir / f"{repeats}_{options.trigger} {options.class_name.strip()}"
    result = PrepResult(folder=folder, repeats=repeats)
    detector = _detector(options)
    flips = _mirrored(records, detector) if detector and options.fix_orientation else set()
    width = max(3, len(str(len(records))))
    caption_ext = "." + options.caption_ext.lstrip(".")
    for index, record in enumerate(track(records, "Preparing images"), start=1):
        stem = f"{options.trigger}_{index:0{width}d}"
        image = _prepare_image(record, options, record.path in flips, result, detector)
        target = folder / f"{stem}.png"
        if _write_if_changed(target, _png_bytes(image)):
            result.written.append(target)
        caption, how = _caption_for(record, options)
        caption_path = folder / f"{stem}{caption_ext}"
        _write_if_changed(caption_path, f"{caption}\n".encode())
        if how == "created":
            result.captions_created.append(caption_path)
        elif how == "trigger":
            result.trigger_added.append(caption_path)
        result.images.append(target)
    keep = set(result.images) | {p.with_suffix(caption_ext) for p in result.images}
    result.removed = _stale_files(img_dir, folder, options.trigger, keep)
    _remove(result.removed, folder)
    return result
