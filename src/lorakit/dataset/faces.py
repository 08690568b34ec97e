"""Face-aware dataset checks: head-centred crops, other people, cut faces, mirrored selfies.

The likeness guides crop every photo by hand to "1:1, centring on the head, with a modest
part of the shoulders" and drop photos with other people or mirrored selfies. This module
does the measuring; `prep` and `lint` decide what to do with it.

The face crop rule (`crop_box_for`): with `s` the face box's side and `m` the margin,
the square crop's side is `s · (1 + 2m + SHOULDERS)`. Its top edge lies `m · s` above the
face box, so there is `m · s` above the face, `(m + SHOULDERS/2) · s` at each side and
`(m + SHOULDERS) · s` below it: the centre sits lower than the face's so the crop takes in
neck and shoulders rather than sky. The default margin 0.6 keeps the hair (which Haar boxes
leave out) and the top of the shoulders. The crop is then shifted inside the image, and
shrunk to the image's short side only when it is larger than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lorakit.dataset.choices import FACE_MARGIN
from lorakit.dataset.face_detect import (
    FaceBox,
    FaceDetector,
    HaarFaceDetector,
    YuNetFaceDetector,
    default_detector,
    load_detector,
)
from lorakit.dataset.findings import Finding, Severity
from lorakit.dataset.images import load_rgb
from lorakit.dataset.mirror import MirrorResult, antisymmetry, judge_mirrored
from lorakit.errors import LorakitError
from lorakit.progress import track

__all__ = [
    "FaceBox",
    "FaceDetector",
    "HaarFaceDetector",
    "MirrorResult",
    "YuNetFaceDetector",
    "crop_box_for",
    "face_crop_box",
    "find_mirrored",
    "lint_faces",
    "load_detector",
]

DEFAULT_MARGIN = FACE_MARGIN
SHOULDERS = 0.2
# A face box closer than this fraction of its side to the border has its cheeks, chin or
# brow cut off (the Haar box itself stops short of the jaw and the hairline).
CUT_PAD = 0.1


@dataclass(frozen=True)
class _Seen:
    """What one photo's analysis keeps: its size, faces and the largest one's antisymmetry."""

    path: Path
    size: tuple[int, int]
    faces: list[FaceBox]
    antisymmetry: np.ndarray | None


def crop_box_for(
    face: FaceBox, size: tuple[int, int], margin: float = DEFAULT_MARGIN
) -> tuple[int, int, int, int]:
    """The square crop around `face` for an image of `size` (rule in the module docstring)."""
    if margin < 0:
        raise LorakitError(f"face crop margin must be 0 or more, got {margin}; try 0.6")
    width, height = size
    s = face.side
    ideal = s * (1 + 2 * margin + SHOULDERS)
    side = min(round(ideal), width, height)
    cx = face.center[0]
    cy = face.top - margin * s + ideal / 2
    left = round(cx - side / 2)
    top = round(cy - side / 2)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return left, top, left + side, top + side


def _largest(faces: Sequence[FaceBox]) -> FaceBox:
    return max(faces, key=lambda f: f.width * f.height)


def face_crop_box(
    image: Image.Image, margin: float = DEFAULT_MARGIN, detector: FaceDetector | None = None
) -> tuple[int, int, int, int] | None:
    """Square crop box (left, top, right, bottom) around the largest face; None if none."""
    faces = (detector or default_detector()).detect(image)
    if not faces:
        return None
    return crop_box_for(_largest(faces), image.size, margin)


def _look(path: Path, detector: FaceDetector) -> _Seen:
    image = load_rgb(path)
    faces = detector.detect(image)
    part = antisymmetry(image, _largest(faces)) if faces else None
    return _Seen(path, image.size, faces, part)


def _look_all(paths: Sequence[Path], detector: FaceDetector | None) -> list[_Seen]:
    detector = detector or default_detector()
    return [_look(Path(p), detector) for p in track(paths, "Finding faces")]


def find_mirrored(
    paths: Sequence[Path], detector: FaceDetector | None = None
) -> list[MirrorResult]:
    """One MirrorResult per path, in order; nothing is flipped here."""
    seen = _look_all(paths, detector)
    return judge_mirrored([s.path for s in seen], [s.antisymmetry for s in seen])


def _is_cut(face: FaceBox, size: tuple[int, int]) -> bool:
    pad = face.side * CUT_PAD
    width, height = size
    return (
        face.left < pad or face.top < pad or face.right > width - pad or face.bottom > height - pad
    )


def _photo_findings(seen: _Seen, target_side: int, margin: float) -> list[Finding]:
    warn = Severity.WARNING
    if not seen.faces:
        return [
            Finding(
                "no-face",
                warn,
                seen.path,
                "no face found",
                "keep only photos that show the face (prep --crop face centre-crops these)",
            )
        ]
    found: list[Finding] = []
    face = _largest(seen.faces)
    if len(seen.faces) > 1:
        found.append(
            Finding(
                "other-faces",
                warn,
                seen.path,
                f"{len(seen.faces)} faces: other people are in the photo",
                "crop them out (prep --crop face) or remove the photo",
            )
        )
    if _is_cut(face, seen.size):
        found.append(
            Finding(
                "face-cut",
                warn,
                seen.path,
                "the face is cut off by the image border",
                "use a photo that shows the whole face",
            )
        )
    left, _, right, _ = crop_box_for(face, seen.size, margin)
    crop_side = right - left
    if crop_side < target_side:
        found.append(
            Finding(
                "face-too-small",
                warn,
                seen.path,
                f"face is {face.side} px: its crop ({crop_side} px, margin {margin}) "
                f"needs {target_side / crop_side:.1f}× upscaling to {target_side} px",
                "use a closer or higher-resolution photo, or train at a lower resolution",
            )
        )
    return found


def _mirror_findings(results: Sequence[MirrorResult]) -> list[Finding]:
    return [
        Finding(
            "mirrored",
            Severity.WARNING,
            r.path,
            f"the face looks mirrored against the rest of the set (confidence {r.confidence:.2f})",
            "check it (selfies are often mirrored); prep --fix-orientation writes it flipped",
        )
        for r in results
        if r.flagged
    ]


def lint_faces(
    paths: Sequence[Path],
    target_side: int,
    detector: FaceDetector | None = None,
    *,
    margin: float = DEFAULT_MARGIN,
) -> list[Finding]:
    """Face findings for every photo: no face, other faces, cut faces, faces too small for
    a `target_side` px face crop, and mirrored selfies."""
    seen = _look_all(paths, detector)
    found = [f for s in seen for f in _photo_findings(s, target_side, margin)]
    mirror = judge_mirrored([s.path for s in seen], [s.antisymmetry for s in seen])
    return found + _mirror_findings(mirror)
