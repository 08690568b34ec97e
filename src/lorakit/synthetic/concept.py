"""A concept dataset: 15–40 images of one subject, as a user would bring for a LoRA.

Backgrounds, sizes, positions and poses vary; captions name the trigger and class first
and then what varies (kohya-style tags), so the LoRA ties the trigger to the subject and
leaves the rest to the words. Images are drawn at 256 px, a size lint accepts as a photo;
the trainer resizes them to the tiny model's 64 px.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from lorakit.fileio import atomic_path, atomic_write_text
from lorakit.synthetic.scenes import BACKGROUNDS, POSITIONS, SIZES, Scene, random_scene, render

PHOTO_SIDE = 256


def concept_scenes(subject: str, count: int, seed: int) -> list[Scene]:
    """`count` scenes of `subject` cycling through every background, size and position.

    Never mirrored: a mirrored twin of another image is what lint reports as a mirrored
    selfie, and the set should only show the problems the demo plants on purpose.
    """
    rng = random.Random(seed)
    combos = [(b, s, p) for b in BACKGROUNDS for s in SIZES for p in POSITIONS]
    rng.shuffle(combos)
    return [
        Scene(
            background=combos[i % len(combos)][0],
            size=combos[i % len(combos)][1],
            position=combos[i % len(combos)][2],
            subject=subject,
        )
        for i in range(count)
    ]


def concept_caption(scene: Scene, trigger: str, rng: random.Random) -> str:
    """ "TRIGGER SUBJECT" and each other tag at even odds ("size, position, background").

    Varied captions, as a careful user writes them: the trigger is the one word in every
    caption, so it, and not "large" or "gray background", takes the subject (less bleed),
    and the bare trigger prompt is one the LoRA has seen.
    """
    tags = [tag for tag in scene.tags()[1:] if rng.random() < 0.5]
    return ", ".join([f"{trigger} {scene.subject}", *tags])


def write_concept_images(
    folder: Path, subject: str, trigger: str, *, count: int = 24, seed: int = 0
) -> list[Path]:
    """Write `count` PNGs of `subject` with `.txt` captions into `folder`; return the PNGs."""
    rng = random.Random(seed + 1)
    scenes = concept_scenes(subject, count, seed)
    return _write_photos(folder, subject, scenes, rng, lambda s, r: concept_caption(s, trigger, r))


def write_regularization_images(folder: Path, *, count: int = 48, seed: int = 0) -> list[Path]:
    """Write `count` scenes of the base model's own world with their tag captions.

    Regularization (prior-preservation) images for `dataset.reg_path`: training on them
    next to the concept reminds the LoRA what "red circle, gray background" looked like
    before, which is what keeps the subject out of prompts without the trigger.
    """
    rng = random.Random(seed + 2)
    scenes = [random_scene(rng) for _ in range(count)]
    return _write_photos(folder, "scene", scenes, rng, lambda s, _: s.caption())


def _write_photos(
    folder: Path,
    stem: str,
    scenes: list[Scene],
    rng: random.Random,
    caption: Callable[[Scene, random.Random], str],
) -> list[Path]:
    """Each scene as a PHOTO_SIDE PNG plus its `.txt` caption, written atomically.

    One `rng` draws the jitter and then the caption of each scene in turn, so a seed gives
    the same files every time."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, scene in enumerate(scenes, start=1):
        path = folder / f"{stem}_{index:03d}.png"
        with atomic_path(path) as tmp:
            render(scene, rng, side=PHOTO_SIDE).save(tmp, format="PNG")
        atomic_write_text(path.with_suffix(".txt"), caption(scene, rng))
        written.append(path)
    return written
