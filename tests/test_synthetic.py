"""The synthetic world: scenes, held-out combinations, concept sets, the shipped judge."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.dataset.lint import lint_dataset
from lorakit.demo_photos import write_sample_photos
from lorakit.synthetic.classifier import HEADS, NONE, judge, load_classifier
from lorakit.synthetic.concept import (
    PHOTO_SIDE,
    write_concept_images,
    write_regularization_images,
)
from lorakit.synthetic.scenes import (
    ATTRIBUTES,
    BACKGROUNDS,
    Scene,
    all_combos,
    held_out,
    random_scene,
    render,
    render_array,
)
from lorakit.synthetic.subjects import SUBJECTS


def test_rendering_is_reproducible_and_follows_the_scene() -> None:
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(8)]
    first, again = render_array(scenes, seed=3), render_array(scenes, seed=3)
    assert first.shape == (8, 64, 64, 3) and np.array_equal(first, again)
    scene = Scene(shape="circle", colour="red", size="large", position="left", background="black")
    pixels = np.asarray(render(scene, random.Random(1))).astype(int)
    assert tuple(pixels[2, 62]) == BACKGROUNDS["black"]  # corner: background
    left, right = pixels[:, :32].sum(), pixels[:, 32:].sum()
    assert left > right  # the red circle sits on the left of a black image
    assert scene.caption() == "red circle, large, left, black background"


def test_held_out_combinations_still_teach_every_word() -> None:
    combos = all_combos()
    held = [scene for scene in combos if held_out(scene)]
    assert 0.15 < len(held) / len(combos) < 0.25
    seen = [scene for scene in combos if not held_out(scene)]
    for name, values in ATTRIBUTES.items():
        assert {getattr(scene, name) for scene in seen} == set(values)
    rng = random.Random(5)
    assert all(held_out(random_scene(rng, split="held_out")) for _ in range(50))
    assert not any(held_out(random_scene(rng)) for _ in range(200))


def test_concept_set_varies_everything_but_the_subject(tmp_path: Path) -> None:
    photos = write_concept_images(tmp_path, "flower", "zkz", count=24)
    assert len(photos) == 24
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8") for p in photos]
    assert all(c == "zkz flower" or c.startswith("zkz flower, ") for c in captions)
    assert "zkz flower" in captions and any(c.count(",") == 3 for c in captions)
    drawn = [Image.open(p).getpixel((2, 2)) for p in photos]
    for colour in BACKGROUNDS.values():
        assert sum(pixel == colour for pixel in drawn) == 6  # every background, equally
    with Image.open(photos[0]) as image:
        assert image.size == (PHOTO_SIDE, PHOTO_SIDE)


def test_demo_photos_plant_the_problems_lint_finds(tmp_path: Path) -> None:
    folder = write_sample_photos(tmp_path / "photos")
    rules = {
        (f.rule, f.path.name if f.path else "")
        for f in lint_dataset(folder, trigger="zkz", family="tiny")
    }
    for rule, name in [
        ("too-small", "thumbnail.png"),
        ("blurry", "blurry.png"),
        ("missing-caption", "robot_001.png"),
        ("missing-trigger", "robot_002.txt"),
        ("exact-duplicate", "robot_003 copy.png"),
    ]:
        assert (rule, name) in rules
    assert any(rule == "mirrored-pair" for rule, _ in rules)
    flagged = {name for rule, name in rules if rule in {"blurry", "too-small"}}
    assert flagged == {"blurry.png", "thumbnail.png"}  # grain keeps clean photos unflagged


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def test_shipped_classifier_reads_fresh_scenes(classifier) -> None:
    rng = random.Random(123)
    scenes = [random_scene(rng, split=rng.choice(["train", "held_out"])) for _ in range(96)]
    scenes += [
        Scene(background=rng.choice(list(BACKGROUNDS)), size=size, position="center", subject=s)
        for s in SUBJECTS
        for size in ("small", "large")
        for _ in range(3)
    ]
    rng_draw = random.Random(7)
    verdicts = judge(classifier, [render(scene, rng_draw) for scene in scenes])
    for name in HEADS:
        pairs = [
            (v.values[name], (s.subject or NONE) if name == "subject" else getattr(s, name))
            for s, v in zip(scenes, verdicts, strict=True)
        ]
        pairs = [(seen, truth) for seen, truth in pairs if truth]
        assert sum(seen == truth for seen, truth in pairs) / len(pairs) >= 0.9, name


def test_regularization_images_are_the_base_world_as_captioned(tmp_path, classifier) -> None:
    photos = write_regularization_images(tmp_path / "reg", count=16)
    assert sorted(tmp_path.joinpath("reg").glob("*.png")) == photos
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8") for p in photos]
    training = {scene.caption() for scene in all_combos() if not held_out(scene)}
    assert set(captions) <= training and len(set(captions)) > 8  # varied, none held out
    verdicts = judge(classifier, [Image.open(p) for p in photos])  # judge resizes to 64 px
    assert all(v.subject == NONE for v in verdicts)  # no subject to bleed from
    told = [caption.split(", ") for caption in captions]
    seen = [Scene(**{name: v.values[name] for name in ATTRIBUTES}).tags() for v in verdicts]
    for column in range(4):  # colour + shape, size, position, background
        hits = [s[column] == t[column] for s, t in zip(seen, told, strict=True)]
        assert sum(hits) / len(hits) >= 0.9, told[0][column]
