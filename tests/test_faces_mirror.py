"""Mirrored selfies in a set of photos of one real, asymmetric face (the astronaut)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lorakit.dataset.faces import find_mirrored
from tests.test_faces_crop import background, head

MIRRORED = {3, 8, 13, 18}
KINDS = ("noise", "gradient", "solid")


def variation(index: int, mirrored: bool, size: tuple[int, int] = (480, 420)) -> Image.Image:
    """The head shifted, scaled and re-lit (gamma and gain) on a generated background;
    a mirrored one is the whole photo flipped, as a phone stores a selfie."""
    rng = np.random.default_rng(100 + index)
    patch = np.asarray(head(rng.uniform(0.6, 1.3))) / 255.0
    gamma, gain = rng.uniform(0.6, 1.6), rng.uniform(0.8, 1.15)
    relit = Image.fromarray((255 * np.clip(gain * patch**gamma, 0, 1)).astype(np.uint8))
    image = background(KINDS[index % 3], size, seed=index)
    at = (
        int(rng.integers(0, size[0] - relit.width)),
        int(rng.integers(0, size[1] - relit.height)),
    )
    image.paste(relit, at)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else image


def write_set(folder: Path, count: int, mirrored: set[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:02d}.png"
        variation(i, i in mirrored).save(path)
        paths.append(path)
    return paths


def test_four_mirrored_of_twenty_are_found(tmp_path):
    paths = write_set(tmp_path, 20, MIRRORED)
    results = find_mirrored(paths)
    assert [r.path for r in results] == paths
    found = sum(r.flagged for i, r in enumerate(results) if i in MIRRORED)
    false_alarms = sum(r.flagged for i, r in enumerate(results) if i not in MIRRORED)
    confidences = {i: r.confidence for i, r in enumerate(results)}
    print(f"mirrored found {found}/4, false alarms {false_alarms}/16, confidence {confidences}")
    assert found >= 3
    assert false_alarms <= 1
    assert all(0.0 <= r.confidence <= 1.0 for r in results)
    assert all(not r.flagged or r.confidence > 0 for r in results)


def test_sources_are_never_flipped(tmp_path):
    paths = write_set(tmp_path, 5, {2})
    before = [p.read_bytes() for p in paths]
    find_mirrored(paths)
    assert [p.read_bytes() for p in paths] == before


def test_photos_without_a_face_and_tiny_sets_are_not_judged(tmp_path):
    paths = write_set(tmp_path, 2, {1})
    blank = tmp_path / "blank.png"
    background("gradient", (300, 300), seed=9).save(blank)
    results = find_mirrored([*paths, blank])
    assert [(r.flagged, r.confidence) for r in results] == [(False, 0.0)] * 3


def test_a_face_without_a_face_in_a_judged_set_is_not_flagged(tmp_path):
    paths = write_set(tmp_path, 6, {4})
    blank = tmp_path / "blank.png"
    background("noise", (300, 300), seed=9).save(blank)
    results = find_mirrored([*paths, blank])
    assert [r.flagged for r in results] == [False, False, False, False, True, False, False]
    assert results[-1].confidence == 0.0


def test_an_even_split_flips_the_half_without_the_first_photo(tmp_path):
    paths = write_set(tmp_path, 6, {1, 3, 5})
    assert [r.flagged for r in find_mirrored(paths)] == [False, True] * 3
