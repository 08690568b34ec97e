"""The repeats arithmetic every guide makes users do by hand.

kohya counts one step per batch of images, and an epoch shows each image `repeats`
times. The guides pick repeats two ways: `400 / images` (about 400 image views per epoch,
whatever the dataset size) or, from a step budget, `steps / (images × epochs)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lorakit.errors import LorakitError

DEFAULT_VIEWS_PER_EPOCH = 400


def _require_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise LorakitError(f"{name.replace('_', ' ')} must be at least 1, got {value}")


def repeats_for(images: int, target: int = DEFAULT_VIEWS_PER_EPOCH) -> int:
    """round(target / images), at least 1."""
    _require_positive(images=images, target=target)
    return max(1, round(target / images))


def steps_per_epoch(images: int, repeats: int, batch_size: int = 1) -> int:
    """One step per batch; a last, partial batch still costs a step."""
    _require_positive(images=images, repeats=repeats, batch_size=batch_size)
    return math.ceil(images * repeats / batch_size)


def total_steps(images: int, repeats: int, epochs: int, batch_size: int = 1) -> int:
    _require_positive(epochs=epochs)
    return steps_per_epoch(images, repeats, batch_size) * epochs


def repeats_for_steps(total_steps: int, images: int, epochs: int) -> int:
    """round(steps / (images × epochs)), at least 1."""
    _require_positive(total_steps=total_steps, images=images, epochs=epochs)
    return max(1, round(total_steps / (images * epochs)))


@dataclass(frozen=True)
class TrainPlan:
    images: int
    repeats: int
    epochs: int
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.images, self.repeats, self.batch_size)

    @property
    def total_steps(self) -> int:
        return total_steps(self.images, self.repeats, self.epochs, self.batch_size)


def make_plan(
    images: int,
    epochs: int,
    batch_size: int = 1,
    repeats: int | None = None,
    target_steps: int | None = None,
) -> TrainPlan:
    """A plan from explicit repeats, from a step budget, or from the 400 / images rule.

    With a step budget, `steps / (images × epochs)` counts image views; with batches the
    budget is meant in views too, as the guides compute it before choosing a batch size.
    """
    if repeats is not None and target_steps is not None:
        raise LorakitError("give either --repeats or --target-steps, not both")
    if target_steps is not None:
        repeats = repeats_for_steps(target_steps, images, epochs)
    elif repeats is None:
        repeats = repeats_for(images)
    plan = TrainPlan(images=images, repeats=repeats, epochs=epochs, batch_size=batch_size)
    _require_positive(repeats=repeats, epochs=epochs, batch_size=batch_size)
    return plan
