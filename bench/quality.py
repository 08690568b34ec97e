"""Train a LoRA of one held-out subject on the tiny model and score every epoch.

    .venv/bin/python bench/quality.py --subject flower --trigger zkz [--config extra.toml]

Uses the demo's settings (`lorakit.synthetic.recipe`) unless --config overrides some, so
the defaults are judged on subjects they were not tuned on. Prints a table and writes
OUT/lora/quality.json (the base model's own held-out attribute accuracy, and fidelity /
flexibility / bleed per epoch).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tomllib
from pathlib import Path

import torch

from lorakit.cli.main import main as lorakit
from lorakit.errors import LorakitError
from lorakit.synthetic.concept import write_concept_images, write_regularization_images
from lorakit.synthetic.evaluate import base_accuracy
from lorakit.synthetic.quality import SAMPLES, load_judged_base, report, score_run
from lorakit.synthetic.recipe import concept_settings
from lorakit.synthetic.scenes import all_combos, held_out
from lorakit.synthetic.subjects import SUBJECTS
from lorakit.training.config import config_from_dict, save_config


def merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both else value
    return merged


def train(out: Path, subject: str, trigger: str, images: int, reg: int, extra: dict) -> Path:
    photos, run, lora_dir, reg_dir = out / "photos", out / "run", out / "lora", out / "reg"
    for folder in (photos, run, lora_dir, reg_dir):
        shutil.rmtree(folder, ignore_errors=True)
    write_concept_images(photos, subject, trigger, count=images)
    if reg:
        write_regularization_images(reg_dir, count=reg)
        extra = merge({"dataset": {"reg_path": str(reg_dir)}}, extra)
    if lorakit(["dataset", "prep", str(photos), str(run), "--trigger", trigger,
                "--class", subject]) != 0:  # fmt: skip
        raise LorakitError(f"{photos}: dataset prep failed")
    settings = merge(concept_settings(run, lora_dir, subject, trigger), extra)
    config = out / "train.toml"
    save_config(config_from_dict(settings, "bench config"), config)
    if lorakit(["train", str(config)]) != 0:
        raise LorakitError(f"{config}: training failed")
    return lora_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", choices=sorted(SUBJECTS), default="flower")
    parser.add_argument("--trigger", default="zkz")
    parser.add_argument("--config", type=Path, help="TOML whose keys override the settings")
    parser.add_argument("--images", type=int, default=24, help="concept images (15–40)")
    parser.add_argument(
        "--reg", type=int, default=0, help="regularization images of the base world (0: none)"
    )
    parser.add_argument("--samples", type=int, default=SAMPLES, help="images per check")
    parser.add_argument("--out", type=Path, default=Path("bench-output/quality"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = tomllib.loads(args.config.read_text(encoding="utf-8")) if args.config else {}
    lora_dir = train(args.out, args.subject, args.trigger, args.images, args.reg, extra)
    base, classifier = load_judged_base()
    rows = score_run(base, classifier, lora_dir, args.subject, args.trigger, args.samples)
    held = [scene for scene in all_combos() if held_out(scene)]
    accuracy = base_accuracy(base, classifier, held)
    print(
        "base model on held-out combinations: "
        + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items())
    )
    report(lora_dir, args.subject, args.trigger, rows, {"base_held_out_accuracy": accuracy})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LorakitError as exc:
        print(f"quality: error: {exc}", file=sys.stderr)
        sys.exit(2)
