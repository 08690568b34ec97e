"""WD14-style Danbooru taggers in ONNX, in the layout SmilingWolf publishes them.

A release folder holds `model.onnx` (input NHWC float32, BGR, 0–255, square; output one
sigmoid probability per tag) and `selected_tags.csv` (`tag_id,name,category,count`, with
category 9 = rating, 0 = general, 4 = character). The preprocessing follows the
reference code of those releases (pad to a white square, bicubic resize, RGB → BGR),
because a tagger fed differently-prepared pixels gives quietly worse tags.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lorakit.captioning.choices import CHARACTER_THRESHOLD, GENERAL_THRESHOLD
from lorakit.captioning.tags import normalize_tag
from lorakit.errors import LorakitError

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
RATING, GENERAL, CHARACTER = 9, 0, 4
_WHERE = (
    "WD14 taggers are published on Hugging Face as SmilingWolf/wd-v1-4-moat-tagger-v2, "
    "SmilingWolf/wd-swinv2-tagger-v3 and similar; download one once and pass its folder "
    "(lorakit downloads nothing)"
)


@dataclass(frozen=True)
class TagThresholds:
    """Minimum probabilities; character tags need more confidence than general ones."""

    general: float = GENERAL_THRESHOLD
    character: float = CHARACTER_THRESHOLD
    include_ratings: bool = False

    def __post_init__(self) -> None:
        for name in ("general", "character"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise LorakitError(
                    f"{name} threshold {value}: must be a probability between 0 and 1 "
                    f"(--{name}-threshold, e.g. 0.35)"
                )


@dataclass(frozen=True)
class ScoredTag:
    name: str
    score: float


@dataclass(frozen=True)
class TagTable:
    names: list[str]
    categories: np.ndarray


def locate_tagger(path: str | Path) -> tuple[Path, Path]:
    """`(model.onnx, selected_tags.csv)` of a release folder (or of its model file)."""
    path = Path(path).expanduser()
    folder = path.parent if path.name == MODEL_FILE else path
    model, tags = folder / MODEL_FILE, folder / TAGS_FILE
    missing = [p.name for p in (model, tags) if not p.is_file()]
    if missing:
        problem = "not found" if not path.exists() else f"missing {' and '.join(missing)}"
        raise LorakitError(
            f"{path}: no WD14 tagger ({problem}; expected a folder with {MODEL_FILE} and "
            f"{TAGS_FILE}); {_WHERE}"
        )
    return model, tags


def read_tag_table(path: Path) -> TagTable:
    """Tag names (underscores → spaces) and categories, in the model's output order."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        names = [normalize_tag(row["name"]) for row in rows]
        categories = np.array([int(row["category"]) for row in rows], dtype=np.int64)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise LorakitError(
            f"{path}: not a tagger tag list; it needs the columns tag_id,name,category,count "
            "as in the SmilingWolf releases"
        ) from exc
    if not names:
        raise LorakitError(f"{path}: the tag list is empty; use the file from the tagger release")
    return TagTable(names=names, categories=categories)


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    """HWC float32 BGR 0–255 array: centred on a white square, resized to `size`."""
    rgb = image.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


def select_tags(
    probabilities: np.ndarray, table: TagTable, thresholds: TagThresholds
) -> list[ScoredTag]:
    """Tags over their category's threshold, most confident first.

    With ratings on, only the most likely rating is kept: a caption saying both
    "general" and "sensitive" would teach nothing.
    """
    cats = table.categories
    chosen = np.flatnonzero(
        ((cats == GENERAL) & (probabilities >= thresholds.general))
        | ((cats == CHARACTER) & (probabilities >= thresholds.character))
    ).tolist()
    ratings = np.flatnonzero(cats == RATING)
    if thresholds.include_ratings and ratings.size:
        chosen.append(int(ratings[np.argmax(probabilities[ratings])]))
    tags = [ScoredTag(table.names[i], float(probabilities[i])) for i in chosen]
    return sorted(tags, key=lambda tag: -tag.score)


class WD14Tagger:
    """A WD14 tagger run with onnxruntime on the CPU."""

    def __init__(self, path: str | Path, thresholds: TagThresholds | None = None) -> None:
        import onnxruntime

        model_path, tags_path = locate_tagger(path)
        self.thresholds = thresholds or TagThresholds()
        self.table = read_tag_table(tags_path)
        try:
            self.session = onnxruntime.InferenceSession(
                str(model_path), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise LorakitError(
                f"{model_path}: onnxruntime cannot load it ({str(exc).splitlines()[0]}); "
                "re-download the tagger's model.onnx"
            ) from exc
        self.input_name, self.input_size, self.max_batch = self._read_input(model_path)
        self._check_outputs(model_path)

    def _read_input(self, model_path: Path) -> tuple[str, int, int | None]:
        """Input name, square size and fixed batch size (None when the batch is dynamic)."""
        node = self.session.get_inputs()[0]
        shape = node.shape
        if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int):
            raise LorakitError(
                f"{model_path}: input shape {shape} is not NHWC [batch, size, size, 3]; "
                "pass a WD14 tagger model"
            )
        batch = shape[0] if isinstance(shape[0], int) else None
        return node.name, shape[1], batch

    def _check_outputs(self, model_path: Path) -> None:
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.table.names):
            raise LorakitError(
                f"{model_path}: the model scores {width} tags but {TAGS_FILE} lists "
                f"{len(self.table.names)}; use the CSV from the same release"
            )

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Sigmoid output, one row per image, run in chunks the model accepts."""
        batch = np.stack([prepare_image(image, self.input_size) for image in images])
        step = self.max_batch or len(images)
        rows = [
            self.session.run(None, {self.input_name: batch[i : i + step]})[0]
            for i in range(0, len(batch), step)
        ]
        return np.concatenate(rows).astype(np.float32)

    def score(self, images: Sequence[Image.Image]) -> list[list[ScoredTag]]:
        return [select_tags(row, self.table, self.thresholds) for row in self.probabilities(images)]

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        return [[tag.name for tag in tags] for tags in self.score(images)]
