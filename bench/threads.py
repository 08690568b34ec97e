"""Train the shipped tiny model on 1 thread and on every core; print seconds per step.

    .venv/bin/python bench/threads.py [--images 16] [--epochs 2] [--threads 1 2 4]

The measurement behind `lorakit.threads`' rule (one thread for a U-Net under 100M
parameters). Each run trains the same steps from the same seed without validation;
loading and latent caching are timed too, so the per-step figure is a slight overestimate
for both. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from lorakit.synthetic.concept import write_concept_images
from lorakit.synthetic.recipe import concept_settings
from lorakit.training.config import config_from_dict, merge
from lorakit.training.loop import train


def seconds_per_step(data: Path, out: Path, threads: int, epochs: int) -> float:
    """Wall time of a whole run on `threads` threads (loading and caching included),
    divided by its optimizer steps."""
    shutil.rmtree(out, ignore_errors=True)
    overrides = {
        "training": {"cpu_threads": threads, "epochs": epochs},
        "validation": {"enabled": False},
        "saving": {"save_every_n_epochs": None, "save_state": False},
    }
    settings = merge(concept_settings(data, out, "bench", "zkz", epochs=epochs), overrides)
    start = time.perf_counter()
    result = train(config_from_dict(settings, "bench config"))
    return (time.perf_counter() - start) / result.steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--out", type=Path, default=Path("bench-output/threads"))
    args = parser.parse_args()
    data = args.out / "data"
    shutil.rmtree(data, ignore_errors=True)
    write_concept_images(data, "flower", "zkz", count=args.images)
    for threads in args.threads:
        step = seconds_per_step(data, args.out / f"run-{threads}", threads, args.epochs)
        print(f"{threads} thread(s): {step:.3f} s/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
