"""Training items, aspect buckets and the deterministic batch order.

Every random choice of an epoch (image order, flips, caption shuffle and dropout) is drawn
up front in `BucketBatchSampler` from a generator seeded by (seed, epoch). Loading a sample
is then a pure function of its `SampleKey`, so a resumed run sees exactly the batches an
uninterrupted run would, whichever process or worker loads them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from lorakit.dataset.buckets import Bucket, ResizeCrop, assign_bucket, make_buckets, resize_crop_for
from lorakit.dataset.images import describe, load_rgb, open_image
from lorakit.dataset.scan import ImageRecord, scan_dataset
from lorakit.training.config import TrainConfig

# EXIF orientations 5–8 turn the image by 90°: its upright width is the stored height.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class TrainItem:
    """One image with everything needed to load it at its bucket size."""

    path: Path
    caption: str
    repeats: int
    width: int
    height: int
    bucket: Bucket
    crop: ResizeCrop
    is_reg: bool = False


@dataclass(frozen=True)
class SampleKey:
    """One draw of an item in an epoch: which image, flipped or not, and its caption seed."""

    index: int
    flip: bool
    seed: int


@dataclass
class Items:
    train: list[TrainItem]
    validation: list[TrainItem]
    reg: list[TrainItem]

    @property
    def all(self) -> list[TrainItem]:
        return [*self.train, *self.reg]


def _image_size(path: Path) -> tuple[int, int]:
    """The size `load_rgb` returns (EXIF-upright), read from the header alone."""
    with open_image(path) as image:
        header = describe(image, path)
    if header.orientation in _TRANSPOSING_ORIENTATIONS:
        return header.height, header.width
    return header.width, header.height


def _caption_for(record: ImageRecord, trigger: str) -> str:
    """The caption file's text; without one, the `N_name` subset name or the trigger."""
    if record.caption:
        return record.caption
    return record.subset or trigger


def _make_item(
    record: ImageRecord, config: TrainConfig, buckets: list[Bucket], reg: bool
) -> TrainItem:
    width, height = _image_size(record.path)
    bucket = assign_bucket(width, height, buckets)
    return TrainItem(
        path=record.path,
        caption=_caption_for(record, config.dataset.trigger),
        repeats=config.dataset.repeats or record.repeats,
        width=width,
        height=height,
        bucket=bucket,
        crop=resize_crop_for(width, height, bucket),
        is_reg=reg,
    )


def bucket_set(config: TrainConfig, resolution: int) -> list[Bucket]:
    ds = config.dataset
    if not ds.enable_buckets:
        return [Bucket(resolution, resolution)]
    return make_buckets(resolution, ds.bucket_min, ds.bucket_max, ds.bucket_step)


def _split(
    items: list[TrainItem], fraction: float, seed: int
) -> tuple[list[TrainItem], list[TrainItem]]:
    """Hold out `fraction` of the images (at least one, never all); 0 → validate on all."""
    if fraction <= 0 or len(items) < 2:
        return items, list(items)
    count = min(len(items) - 1, max(1, round(len(items) * fraction)))
    held = set(random.Random(seed).sample(range(len(items)), count))
    train = [it for i, it in enumerate(items) if i not in held]
    return train, [it for i, it in enumerate(items) if i in held]


def build_items(config: TrainConfig, resolution: int) -> Items:
    """Scan every dataset folder (and the regularization folder) into items."""
    buckets = bucket_set(config, resolution)
    ext = config.dataset.caption_ext
    records = [r for p in config.dataset_paths() for r in scan_dataset(p, ext).records]
    items = [_make_item(r, config, buckets, reg=False) for r in records]
    train, validation = _split(items, config.validation.split, config.validation.seed)
    reg: list[TrainItem] = []
    if config.dataset.reg_path:
        reg_records = scan_dataset(Path(config.dataset.reg_path), ext).records
        reg = [_make_item(r, config, buckets, reg=True) for r in reg_records]
    return Items(train=train, validation=validation, reg=reg)


def process_caption(caption: str, key_seed: int, config: TrainConfig) -> str:
    """Caption dropout, then `shuffle_caption` of the comma-separated tags after `keep_tokens`."""
    ds = config.dataset
    rng = random.Random(key_seed)
    if ds.caption_dropout > 0 and rng.random() < ds.caption_dropout:
        return ""
    if not ds.shuffle_caption:
        return caption
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    head, tail = tags[: ds.keep_tokens], tags[ds.keep_tokens :]
    rng.shuffle(tail)
    return ", ".join(head + tail)


def _color_jitter(image: Image.Image, seed: int) -> Image.Image:
    """Small brightness/contrast/saturation changes: kohya's colour aug in spirit."""
    rng = random.Random(seed ^ 0x5EED)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.9, 1.1))
    return image


def load_pixels(item: TrainItem, flip: bool, color_seed: int | None = None) -> torch.Tensor:
    """The item's image resized and centre-cropped to its bucket, as a [-1, 1] CHW tensor."""
    image = load_rgb(item.path)
    c = item.crop
    image = image.resize((c.resized_width, c.resized_height), Image.Resampling.LANCZOS)
    image = image.crop((c.left, c.top, c.left + item.bucket.width, c.top + item.bucket.height))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if color_seed is not None:
        image = _color_jitter(image, color_seed)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def time_ids(item: TrainItem, flip: bool = False) -> torch.Tensor:
    """SDXL's micro-conditioning: original size, crop top-left, target size (all H, W).

    A flipped image's crop starts at the mirrored offset: what was cut off on the right is
    now cut off on the left, and the crop coordinate must say so (as sd-scripts does).
    """
    c, b = item.crop, item.bucket
    left = c.resized_width - c.left - b.width if flip else c.left
    return torch.tensor(
        [item.height, item.width, c.top, left, b.height, b.width], dtype=torch.float32
    )


class BucketBatchSampler:
    """Batches of `SampleKey`s where every batch shares one bucket.

    Each item appears `repeats` times per epoch; regularization items are drawn as often as
    training items in total (kohya's balance). With several processes each takes every
    `world`-th batch; the batch list is padded by repetition so all ranks step together.
    """

    def __init__(self, items: Items, config: TrainConfig, rank: int = 0, world: int = 1):
        self.items = items.all
        self.train_count = len(items.train)
        self.batch_size = config.training.batch_size
        self.flip = config.dataset.flip_aug
        self.seed = config.training.seed
        self.rank, self.world = rank, world

    def _draws(self, rng: random.Random) -> list[int]:
        draws = [
            i for i, it in enumerate(self.items[: self.train_count]) for _ in range(it.repeats)
        ]
        reg = list(range(self.train_count, len(self.items)))
        if reg:
            draws += [reg[i % len(reg)] for i in range(len(draws))]
        rng.shuffle(draws)
        return draws

    def epoch_batches(self, epoch: int) -> list[list[SampleKey]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        by_bucket: dict[Bucket, list[SampleKey]] = {}
        for index in self._draws(rng):
            key = SampleKey(index, self.flip and rng.random() < 0.5, rng.getrandbits(31))
            by_bucket.setdefault(self.items[index].bucket, []).append(key)
        batches = [
            keys[i : i + self.batch_size]
            for _, keys in sorted(by_bucket.items())
            for i in range(0, len(keys), self.batch_size)
        ]
        rng.shuffle(batches)
        batches += batches[: -len(batches) % self.world]
        return batches[self.rank :: self.world]


def loss_weights(items: Sequence[TrainItem], prior_loss_weight: float) -> torch.Tensor:
    return torch.tensor([prior_loss_weight if it.is_reg else 1.0 for it in items])
