"""Did a LoRA learn its subject? Fidelity, flexibility and bleed, judged by the classifier.

- fidelity: "TRIGGER SUBJECT" alone shows the subject;
- flexibility: "TRIGGER SUBJECT, X background" shows the subject on background X, for every
  background (the concept set has each, so this checks the LoRA did not fix one);
- bleed: prompts of the base model's own scenes, without the trigger, show the subject;
  their attribute accuracy under the LoRA is reported too (what the LoRA costs the base).

Each figure is the share of images, one seed per image, so it is reproducible.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lorakit.fileio import atomic_write_text
from lorakit.inference.generate import applied_loras
from lorakit.inference.prompt import LoraRef
from lorakit.models.base import BaseModel
from lorakit.progress import track
from lorakit.synthetic.classifier import AttributeClassifier, judge
from lorakit.synthetic.evaluate import attribute_accuracy, generate
from lorakit.synthetic.scenes import BACKGROUNDS, Scene, random_scene

SAMPLES = 24


@dataclass(frozen=True)
class Quality:
    fidelity: float
    flexibility: float
    bleed: float
    base_prompts: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def bleed_scenes(count: int = SAMPLES, seed: int = 11) -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def measure(
    base: BaseModel,
    classifier: AttributeClassifier,
    subject: str,
    trigger: str,
    samples: int = SAMPLES,
) -> Quality:
    """The three figures for whatever LoRAs are applied to `base` right now."""
    phrase = f"{trigger} {subject}"
    per_background = max(1, samples // len(BACKGROUNDS))
    backgrounds = [name for name in BACKGROUNDS for _ in range(per_background)]
    others = bleed_scenes(samples)
    prompts = [
        *([phrase] * samples),
        *(f"{phrase}, {name} background" for name in backgrounds),
        *(scene.caption() for scene in others),
    ]
    verdicts = judge(classifier, generate(base, prompts))
    plain, flexible, unrelated = (
        verdicts[:samples],
        verdicts[samples : samples + len(backgrounds)],
        verdicts[samples + len(backgrounds) :],
    )
    return Quality(
        fidelity=_share(v.subject == subject for v in plain),
        flexibility=_share(
            v.subject == subject and v.values["background"] == name
            for v, name in zip(flexible, backgrounds, strict=True)
        ),
        bleed=_share(v.subject == subject for v in unrelated),
        base_prompts=attribute_accuracy(others, unrelated)["mean"],
    )


def _share(hits: Iterable[bool]) -> float:
    values = list(hits)
    return sum(values) / len(values)


def epoch_files(lora_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, file) for every epoch the trainer saved, from the run's summary.json."""
    from lorakit.training.checkpoint import read_summary

    return [
        (entry["epoch"], lora_dir / entry["file"])
        for entry in read_summary(lora_dir).get("epochs", [])
        if entry.get("file")
    ]


def measure_lora(
    base: BaseModel,
    classifier: AttributeClassifier,
    lora: Path,
    subject: str,
    trigger: str,
    samples: int = SAMPLES,
) -> Quality:
    with applied_loras(base, [LoraRef(lora.stem, lora, 1.0)]):
        return measure(base, classifier, subject, trigger, samples)


def load_judged_base() -> tuple[BaseModel, AttributeClassifier]:
    """The shipped tiny base model and the classifier that judges its pictures."""
    from lorakit.models import load_base_model
    from lorakit.models.components import TINY_BASE_DIR
    from lorakit.synthetic.classifier import load_classifier

    return load_base_model(TINY_BASE_DIR), load_classifier()


def score_run(
    base: BaseModel,
    classifier: AttributeClassifier,
    lora_dir: Path,
    subject: str,
    trigger: str,
    samples: int = SAMPLES,
) -> list[dict]:
    """One row per saved epoch of the run in `lora_dir`: the figures at LoRA weight 1."""
    rows = []
    for epoch, path in track(epoch_files(lora_dir), "scoring epochs"):
        figures = measure_lora(base, classifier, path, subject, trigger, samples)
        rows.append({"epoch": epoch, "file": path.name, **figures.as_dict()})
    return rows


def best_scoring(rows: list[dict], max_bleed: float = 0.1) -> int | None:
    """The epoch with the highest fidelity + flexibility among those that bleed at most
    `max_bleed`: what a user looking at the grid would keep."""
    clean = [row for row in rows if row["bleed"] <= max_bleed]
    best = max(clean, key=lambda row: row["fidelity"] + row["flexibility"], default=None)
    return None if best is None else best["epoch"]


def report(
    lora_dir: Path,
    subject: str,
    trigger: str,
    rows: list[dict],
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Print the table with the epochs `lorakit pick` (or, before it ran, the lowest
    validation loss) and the scores choose, and write quality.json (with `extra` entries,
    e.g. the base's own accuracy)."""
    from lorakit.training.checkpoint import read_summary

    summary = read_summary(lora_dir)
    picked = summary.get("pick") or {}
    best = picked.get("best_epoch", summary.get("best_epoch"))
    how = f"lorakit pick, by {picked['decided_by']}" if "decided_by" in picked else "lowest loss"
    scoring = best_scoring(rows)
    table = Table(title=f"{trigger} {subject}: share of images per check, LoRA weight 1")
    for column in ("epoch", "fidelity", "flexibility", "bleed", "base prompts"):
        table.add_column(column, justify="right")
    for row in rows:
        chosen = (("pick", best), ("best", scoring))
        marks = [name for name, epoch in chosen if epoch == row["epoch"]]
        mark = f" ← {'+'.join(marks)}" if marks else ""
        figures = (
            f"{row[key]:.2f}" for key in ("fidelity", "flexibility", "bleed", "base_prompts")
        )
        table.add_row(f"{row['epoch']}{mark}", *figures)
    Console().print(table)
    print(f"pick: {how}; best: highest fidelity + flexibility with bleed ≤ 0.1")
    path = lora_dir / "quality.json"
    document = {
        "subject": subject,
        "trigger": trigger,
        "picked_epoch": best,
        "best_scoring_epoch": scoring,
        "epochs": rows,
        **(extra or {}),
    }
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
    return path
