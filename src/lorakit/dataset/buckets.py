"""Aspect-ratio buckets, as kohya builds them.

Training in batches needs equal shapes, but cropping every photo square throws away
composition. Buckets are a fixed set of shapes, each with area ≤ resolution² and sides
a multiple of 64 (the VAE's factor 8 times the UNet's down-sampling by 8), so every
image is resized to the bucket whose aspect ratio is nearest to its own and only a thin
border is cropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lorakit.errors import LorakitError


@dataclass(frozen=True, order=True)
class Bucket:
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height


@dataclass(frozen=True)
class ResizeCrop:
    """Resize the image to `resized_*`, then crop the bucket's size from (`left`, `top`)."""

    resized_width: int
    resized_height: int
    left: int
    top: int


def make_buckets(
    resolution: int, min_side: int = 256, max_side: int = 2048, step: int = 64
) -> list[Bucket]:
    """kohya's bucket set: for each width, the tallest height that keeps area ≤ res².

    Both orientations are included, plus the square of the (step-rounded) resolution: the
    same set as sd-scripts' `make_bucket_resolutions`, so a dataset lands in the buckets
    kohya users know.
    """
    if step < 1 or resolution < step or min_side < step or max_side < min_side:
        raise LorakitError(
            f"bucket settings resolution={resolution}, min_side={min_side}, "
            f"max_side={max_side}, step={step} are inconsistent; use e.g. 512/256/2048/64"
        )
    max_area = resolution * resolution
    square = min(max_side, resolution // step * step)
    buckets = {Bucket(square, square)}
    width = math.ceil(min_side / step) * step
    while width <= max_side:
        height = min(max_side, (max_area // width) // step * step)
        if height >= min_side:
            buckets.add(Bucket(width, height))
            buckets.add(Bucket(height, width))
        width += step
    return sorted(buckets)


def assign_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is nearest (in log space, so 2:1 and 1:2 are
    equally far from 1:1); ties go to the larger bucket, which crops less detail."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if not buckets:
        raise ValueError("no buckets to choose from")
    log_aspect = math.log(width / height)
    return min(
        buckets,
        key=lambda b: (abs(math.log(b.aspect) - log_aspect), -(b.width * b.height)),
    )


def resize_crop_for(width: int, height: int, bucket: Bucket) -> ResizeCrop:
    """Scale so the image covers the bucket, then centre-crop the overflow."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    scale = max(bucket.width / width, bucket.height / height)
    resized_width = max(bucket.width, round(width * scale))
    resized_height = max(bucket.height, round(height * scale))
    return ResizeCrop(
        resized_width=resized_width,
        resized_height=resized_height,
        left=(resized_width - bucket.width) // 2,
        top=(resized_height - bucket.height) // 2,
    )
