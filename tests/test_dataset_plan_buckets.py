"""Repeats arithmetic from the guides and the bucket set's invariants."""

from __future__ import annotations

import itertools
import math

import pytest

from lorakit.dataset.buckets import Bucket, assign_bucket, make_buckets, resize_crop_for
from lorakit.dataset.plan import (
    make_plan,
    repeats_for,
    repeats_for_steps,
    steps_per_epoch,
    total_steps,
)
from lorakit.errors import LorakitError


def test_guide_example_42_images_10_repeats_8_epochs() -> None:
    assert steps_per_epoch(42, 10) == 420
    assert total_steps(42, 10, 8) == 3360


def test_guide_example_4800_steps_32_images_10_epochs() -> None:
    assert repeats_for_steps(4800, 32, 10) == 15


def test_400_over_images_rule() -> None:
    assert repeats_for(20) == 20
    assert repeats_for(30) == 13
    assert repeats_for(1000) == 1


def test_batches_round_up() -> None:
    assert steps_per_epoch(10, 3, batch_size=4) == 8
    assert total_steps(10, 3, 2, batch_size=4) == 16


def test_make_plan_modes() -> None:
    assert make_plan(32, 10, target_steps=4800).repeats == 15
    assert make_plan(20, 5).repeats == 20
    plan = make_plan(42, 8, repeats=10, batch_size=2)
    assert (plan.steps_per_epoch, plan.total_steps) == (210, 1680)


@pytest.mark.parametrize("call", [lambda: repeats_for(0), lambda: total_steps(5, 1, 0)])
def test_nonpositive_inputs_are_user_errors(call) -> None:
    with pytest.raises(LorakitError):
        call()


@pytest.mark.parametrize("resolution", [512, 768, 1024])
def test_bucket_area_and_multiples(resolution: int) -> None:
    buckets = make_buckets(resolution)
    assert Bucket(resolution, resolution) in buckets
    for b in buckets:
        assert b.width * b.height <= resolution * resolution
        assert b.width % 64 == 0 and b.height % 64 == 0
        assert 256 <= b.width <= 2048 and 256 <= b.height <= 2048
        assert Bucket(b.height, b.width) in buckets


def kohya_rule(resolution: int, min_side: int, max_side: int) -> set[Bucket]:
    """sd-scripts' `make_bucket_resolutions`, stated as a rule: the square of the
    resolution, and for every width w (multiple of 64 from min to max side) the tallest
    multiple-of-64 height h ≤ max side with w·h ≤ resolution², in both orientations,
    when that h is at least the min side."""
    area = resolution * resolution
    found = {Bucket(resolution, resolution)}
    for w in range(min_side, max_side + 1, 64):
        heights = [h for h in range(64, max_side + 1, 64) if w * h <= area]
        if heights and max(heights) >= min_side:
            found |= {Bucket(w, max(heights)), Bucket(max(heights), w)}
    return found


@pytest.mark.parametrize(
    ("resolution", "max_side"), [(512, 1024), (512, 2048), (768, 1024), (1024, 2048)]
)
def test_bucket_set_is_kohyas(resolution: int, max_side: int) -> None:
    assert set(make_buckets(resolution, 256, max_side)) == kohya_rule(resolution, 256, max_side)


@pytest.mark.parametrize("resolution", [512, 1024])
def test_every_aspect_ratio_in_range_gets_a_close_bucket(resolution: int) -> None:
    buckets = make_buckets(resolution)
    aspects = sorted(b.aspect for b in buckets)
    widest_gap = max(math.log(b / a) for a, b in itertools.pairwise(aspects))
    lo, hi = math.log(aspects[0]), math.log(aspects[-1])
    for i in range(201):
        log_ar = lo + (hi - lo) * i / 200
        w, h = round(1000 * math.exp(log_ar)), 1000
        chosen = assign_bucket(w, h, buckets)
        error = abs(math.log(chosen.aspect) - math.log(w / h))
        assert error <= widest_gap / 2 + 1e-3
        assert all(error <= abs(math.log(b.aspect) - math.log(w / h)) + 1e-12 for b in buckets)


def test_assign_exact_and_orientation() -> None:
    buckets = make_buckets(512)
    assert assign_bucket(1024, 1024, buckets) == Bucket(512, 512)
    portrait = assign_bucket(600, 900, buckets)
    assert portrait.height > portrait.width


@pytest.mark.parametrize("size", [(1000, 700), (300, 900), (512, 512), (100, 60)])
def test_resize_crop_covers_bucket(size: tuple[int, int]) -> None:
    w, h = size
    bucket = assign_bucket(w, h, make_buckets(512))
    rc = resize_crop_for(w, h, bucket)
    assert rc.resized_width >= bucket.width and rc.resized_height >= bucket.height
    assert 0 <= rc.left <= rc.resized_width - bucket.width
    assert 0 <= rc.top <= rc.resized_height - bucket.height
    # one side fits exactly: only one direction is cropped
    assert rc.resized_width == bucket.width or rc.resized_height == bucket.height
    assert abs(rc.resized_width / rc.resized_height - w / h) < 0.02


def test_inconsistent_bucket_settings() -> None:
    with pytest.raises(LorakitError):
        make_buckets(512, min_side=1024, max_side=512)
