"""Face detection and head-centred crops on a real portrait (scikit-image's astronaut).

The portrait's head is pasted at known places and sizes onto generated backgrounds. Where
the face is was measured by eye on the photo (hairline to chin, cheek to cheek), not taken
from the detector. The helpers here are shared by the other `test_faces_*` files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lorakit.dataset.faces import (
    FaceBox,
    HaarFaceDetector,
    crop_box_for,
    face_crop_box,
    load_detector,
)
from lorakit.errors import LorakitError

# astronaut()[0:260, 110:350]: head, hair and collar of Eileen Collins.
HEAD_PATCH = Image.fromarray(data.astronaut()[0:260, 110:350])
# Inside that patch, measured by eye: the face (hairline to chin, cheek to cheek) and the
# whole head with its hair.
FACE = (72, 75, 159, 178)
HEAD = (42, 15, 193, 178)


def background(kind: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A generated background: white noise, a two-colour gradient or a solid colour."""
    rng = np.random.default_rng(seed)
    width, height = size
    if kind == "noise":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if kind == "gradient":
        x = np.linspace(0, 1, width)[None, :, None]
        y = np.linspace(0, 1, height)[:, None, None]
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        pixels = c0 * (1 - (x + y) / 2) + c1 * (x + y) / 2
        return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))


def head(scale: float = 1.0, mirrored: bool = False) -> Image.Image:
    patch = HEAD_PATCH.resize(
        (round(HEAD_PATCH.width * scale), round(HEAD_PATCH.height * scale)),
        Image.Resampling.LANCZOS,
    )
    return patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else patch


def placed(region: Sequence[int], at: tuple[int, int], scale: float = 1.0) -> tuple[float, ...]:
    """`region` of the head patch after scaling it and pasting it at `at`."""
    x, y = at
    left, top, right, bottom = (v * scale for v in region)
    return (left + x, top + y, right + x, bottom + y)


def portrait(
    at: tuple[int, int], scale: float = 1.0, size: tuple[int, int] = (640, 560), kind="solid"
) -> Image.Image:
    image = background(kind, size)
    image.paste(head(scale), at)
    return image


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def contains(outer: Sequence[float], inner: Sequence[float]) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and outer[2] >= inner[2]
        and outer[3] >= inner[3]
    )


class FakeDetector:
    """Returns fixed boxes: crop and lint rules tested without a detector's judgement."""

    def __init__(self, boxes: Sequence[tuple[int, int, int, int]]) -> None:
        self.boxes = [FaceBox(*b) for b in boxes]

    def detect(self, image: Image.Image) -> list[FaceBox]:
        return list(self.boxes)


@pytest.mark.parametrize(
    ("kind", "scale", "at"),
    [("noise", 0.7, (300, 200)), ("gradient", 1.0, (40, 120)), ("solid", 1.4, (200, 30))],
)
def test_haar_detector_finds_the_real_face_on_generated_backgrounds(kind, scale, at):
    image = portrait(at, scale, kind=kind)
    faces = HaarFaceDetector().detect(image)
    assert len(faces) == 1
    box = faces[0]
    assert iou((box.left, box.top, box.right, box.bottom), placed(FACE, at, scale)) > 0.5


@pytest.mark.parametrize("margin", [0.6, 1.0])
def test_face_crop_contains_the_whole_face_with_the_margin(margin):
    at, scale = (300, 150), 1.5
    image = portrait(at, scale, size=(1000, 800))
    box = face_crop_box(image, margin)
    assert box is not None
    left, top, right, bottom = box
    assert right - left == bottom - top
    assert contains((0, 0, image.width, image.height), box)
    face = placed(FACE, at, scale)
    face_side = face[3] - face[1]
    # The detector's box may be a fifth smaller than the face measured by eye.
    pad = 0.8 * margin * face_side
    assert contains(box, (face[0] - pad, face[1] - pad, face[2] + pad, face[3] + pad))
    assert contains(box, placed(HEAD, at, scale))
    assert right - left <= 1.25 * face_side * (1 + 2 * margin + 0.2)
    assert len(HaarFaceDetector().detect(image.crop(box))) == 1


def test_no_face_gives_no_crop():
    assert face_crop_box(background("gradient", (500, 400), seed=3)) is None
    assert face_crop_box(background("noise", (500, 400), seed=4)) is None


def test_crop_rule_margin_above_sides_and_shoulders_below():
    face = (400, 300, 500, 400)  # side 100
    box = face_crop_box(Image.new("RGB", (1000, 1000)), 0.6, FakeDetector([face]))
    # side = 100 × (1 + 2·0.6 + 0.2) = 240; 60 above, 70 at each side, 80 below.
    assert box == (330, 240, 570, 480)


def test_crop_uses_the_largest_face():
    boxes = [(10, 10, 40, 40), (600, 500, 700, 600)]
    box = face_crop_box(Image.new("RGB", (1000, 1000)), 0.5, FakeDetector(boxes))
    assert box is not None
    assert contains(box, (600, 500, 700, 600))
    assert not contains(box, (10, 10, 40, 40))


def test_crop_is_shifted_inside_the_image_then_shrunk_if_needed():
    corner = crop_box_for(FaceBox(5, 8, 105, 108), (1000, 800), 0.6)
    assert corner == (0, 0, 240, 240)
    narrow = crop_box_for(FaceBox(40, 100, 140, 200), (180, 900), 0.6)
    assert narrow[2] - narrow[0] == narrow[3] - narrow[1] == 180
    assert narrow[0] == 0 and narrow[2] == 180
    assert contains(narrow, (40, 100, 140, 200))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.onnx", None, "face model not found"),
        ("faces.xml", b"<opencv_storage/>", "unsupported face model"),
        ("broken.onnx", b"not a model", "not a YuNet face model"),
    ],
)
def test_bad_face_model_paths_are_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LorakitError, match=message) as caught:
        load_detector(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_no_model_path_gives_the_bundled_haar_detector():
    assert isinstance(load_detector(None), HaarFaceDetector)


def test_a_negative_margin_is_a_one_line_error():
    with pytest.raises(LorakitError, match="margin must be 0 or more"):
        face_crop_box(Image.new("RGB", (100, 100)), -0.5, FakeDetector([(10, 10, 50, 50)]))
