"""Train LoRAs of held-out subjects on the tiny model, score every epoch, and judge `pick`.

    .venv/bin/python bench/quality.py --subjects flower --seeds 0           # one run
    .venv/bin/python bench/quality.py --subjects all --seeds 0 1 2          # the 4 × 3 table
    .venv/bin/python bench/quality.py --subjects all --seeds 0 1 2 --reuse  # re-judge pick only

Uses the demo's settings (`lorakit.synthetic.recipe`) unless --config overrides some, so
the defaults are judged on subjects they were not tuned on. A seed draws the concept images
and seeds the training. Each run prints its table and writes OUT/SUBJECT-sSEED/lora/
quality.json (fidelity / flexibility / bleed per epoch, judged by the classifier); then
`lorakit pick` chooses an epoch from the run alone, and OUT/summary.json holds, per run,
the classifier's best epoch, the old rule's (lowest validation loss) and pick's, with their
scores. The classifier is the truth here and only here: pick never sees it. The last line
sets pick's measuring time per epoch against an epoch of training (the issue's budget: a
fifth). --reuse keeps trained and scored runs, so a changed rule or signal costs only the
picks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lorakit.cli.main import main as lorakit
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.synthetic.concept import write_concept_images, write_regularization_images
from lorakit.synthetic.evaluate import base_accuracy
from lorakit.synthetic.quality import SAMPLES, load_judged_base, report, score_run
from lorakit.synthetic.recipe import concept_settings
from lorakit.synthetic.scenes import all_combos, held_out
from lorakit.synthetic.subjects import SUBJECTS
from lorakit.training.checkpoint import best_epoch, read_summary
from lorakit.training.config import config_from_dict, save_config

MAX_BLEED = 0.1  # a LoRA that draws its subject for more of the base's prompts is not usable
NEAR = 0.05  # fidelity within this of the best counts as a right pick


def merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both else value
    return merged


def train(out: Path, subject: str, trigger: str, seed: int, args, extra: dict) -> Path:
    """Draw the concept set for `seed`, prep it and train; returns the LoRA folder."""
    photos, run, lora_dir, reg_dir = out / "photos", out / "run", out / "lora", out / "reg"
    for folder in (photos, run, lora_dir, reg_dir):
        shutil.rmtree(folder, ignore_errors=True)
    write_concept_images(photos, subject, trigger, count=args.images, seed=seed)
    if args.reg:
        write_regularization_images(reg_dir, count=args.reg, seed=seed)
    if lorakit(["dataset", "prep", str(photos), str(run), "--trigger", trigger,
                "--class", subject]) != 0:  # fmt: skip
        raise LorakitError(f"{photos}: dataset prep failed")
    reg = reg_dir if args.reg else None
    settings = concept_settings(run, lora_dir, subject, trigger, reg=reg)
    settings = merge(merge(settings, {"training": {"seed": seed}}), extra)
    config = out / "train.toml"
    save_config(config_from_dict(settings, "bench config"), config)
    started = time.perf_counter()
    if lorakit(["train", str(config)]) != 0:
        raise LorakitError(f"{config}: training failed")
    seconds = time.perf_counter() - started
    atomic_write_text(out / "train_seconds.txt", f"{seconds:.1f}\n")
    return lora_dir


def scored_rows(out: Path, subject: str, trigger: str, seed: int, args, extra, judged) -> list:
    """The classifier's rows for the run in `out`: reused from its quality.json with
    --reuse, else trained and scored now."""
    saved = out / "lora" / "quality.json"
    if args.reuse and saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))["epochs"]
    lora_dir = train(out, subject, trigger, seed, args, extra)
    rows = score_run(*judged, lora_dir, subject, trigger, args.samples)
    report(lora_dir, subject, trigger, rows)
    return rows


def classifier_best(rows: list[dict]) -> dict | None:
    """The truth: the highest fidelity among epochs that bleed at most MAX_BLEED."""
    clean = [row for row in rows if row["bleed"] <= MAX_BLEED]
    return max(clean, key=lambda row: (row["fidelity"], row["flexibility"]), default=None)


def judged_choice(rows: list[dict], epoch: int | None, best: dict | None) -> dict:
    """An epoch's scores and whether it is a right pick (near the best, clean)."""
    row = next((r for r in rows if r["epoch"] == epoch), None)
    right = (
        row is not None
        and best is not None
        and row["bleed"] <= MAX_BLEED
        and row["fidelity"] >= best["fidelity"] - NEAR - 1e-9
    )
    scores = {k: row[k] for k in ("fidelity", "flexibility", "bleed")} if row else {}
    return {"epoch": epoch, **scores, "right": right}


def judge_run(out: Path, rows: list[dict]) -> dict:
    """Run `lorakit pick` on the run and set its choice and the old rule's beside the truth."""
    lora_dir = out / "lora"
    old = best_epoch(read_summary(lora_dir)["epochs"])
    started = time.perf_counter()
    if lorakit(["pick", str(lora_dir)]) != 0:
        raise LorakitError(f"{lora_dir}: pick failed")
    pick_seconds = time.perf_counter() - started
    chosen = read_summary(lora_dir)["pick"]
    best = classifier_best(rows)
    train_file = out / "train_seconds.txt"
    return {
        "best": judged_choice(rows, best and best["epoch"], best),
        "old": judged_choice(rows, old, best),
        "new": judged_choice(rows, chosen["best_epoch"], best),
        "decided_by": chosen.get("decided_by"),
        "signal_seconds": chosen.get("signal_seconds"),
        "signal_setup_seconds": chosen.get("signal_setup_seconds"),
        "pick_seconds": round(pick_seconds, 1),
        "epochs": len(rows),
        "train_seconds": float(train_file.read_text()) if train_file.is_file() else None,
    }


def _cell(choice: dict) -> str:
    if choice["epoch"] is None or "fidelity" not in choice:
        return "none"
    mark = " ✓" if choice["right"] else ""
    return f"{choice['epoch']}: {choice['fidelity']:.2f} / {choice['bleed']:.2f}{mark}"


def print_table(results: list[dict]) -> None:
    table = Table(title="epoch: fidelity / bleed (✓: within 0.05 of the best, bleed ≤ 0.1)")
    for column in ("run", "classifier best", "old: lowest val loss", "new pick", "decided by"):
        table.add_column(column)
    for result in results:
        table.add_row(
            f"{result['subject']} s{result['seed']}",
            _cell(result["best"]),
            _cell(result["old"]),
            _cell(result["new"]),
            str(result["decided_by"]),
        )
    Console().print(table)
    old = sum(r["old"]["right"] for r in results)
    new = sum(r["new"]["right"] for r in results)
    print(f"right picks: old rule {old}/{len(results)}, new rule {new}/{len(results)}")


def oracle_ceiling(
    all_rows: list[list[dict]], samples: int, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """How many runs a pick that knew every epoch's true rates would get judged right, when
    the truth is itself measured with `samples` images per check: (mean count, share of
    draws with ≥ 10 right).

    The classifier's figures are shares of a few images, so the truth is noisy (at 24
    samples a share near 0.7 has a standard error of 0.09, more than NEAR; a bleed near
    MAX_BLEED is one image either way). Taking each measured share as the true rate, the
    oracle picks the highest fidelity among epochs whose rate of bleed is ≤ MAX_BLEED (the
    least bleeding when none is); the truth is redrawn binomially and judged by the same
    rule as pick. A rule cannot be expected to beat this count; it says how far the table
    can tell rules apart.
    """
    rng = np.random.default_rng(seed)
    counts = np.zeros(draws)
    for rows in all_rows:
        fidelity = np.array([row["fidelity"] for row in rows])
        bleed = np.array([row["bleed"] for row in rows])
        clean = bleed <= MAX_BLEED
        pick = int(np.argmax(np.where(clean, fidelity, -1))) if clean.any() else bleed.argmin()
        drawn_f = rng.binomial(samples, fidelity, (draws, len(rows))) / samples
        drawn_b = rng.binomial(samples, bleed, (draws, len(rows))) / samples
        drawn_clean = drawn_b <= MAX_BLEED
        best = np.where(drawn_clean, drawn_f, -1).max(axis=1)
        counts += drawn_clean[:, pick] & (drawn_f[:, pick] >= best - NEAR - 1e-9)
    return float(counts.mean()), float((counts >= 10).mean())


def ceiling_line(all_rows: list[list[dict]], samples: int) -> str:
    line = "noise ceiling (a pick that knew the true rates, judged on a redrawn truth): "
    parts = []
    for n in (samples, 4 * samples):
        mean, ten = oracle_ceiling(all_rows, n)
        parts.append(f"{mean:.1f}/{len(all_rows)} right at {n} samples (P(≥10) {ten:.2f})")
    return line + "; ".join(parts)


def cost_line(results: list[dict]) -> str:
    """The signals' cost per epoch against an epoch of training, over all timed runs."""
    timed = [r for r in results if r["train_seconds"] and r["signal_seconds"] is not None]
    if not timed:
        return "signal cost: no timed run (rerun without --reuse)"
    per_epoch_train = sum(r["train_seconds"] / r["epochs"] for r in timed) / len(timed)
    per_epoch_signal = sum(r["signal_seconds"] for r in timed) / len(timed)
    setup = sum(r["signal_setup_seconds"] for r in timed) / len(timed)
    return (
        f"signal cost: {per_epoch_signal:.2f} s per epoch against {per_epoch_train:.1f} s of "
        f"training per epoch ({100 * per_epoch_signal / per_epoch_train:.0f} %), plus "
        f"{setup:.1f} s once per pick (model and probe images); {len(timed)} runs, training "
        "time includes validation and saving"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", nargs="+", default=["flower"], help="subjects, or all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--trigger", default="zkz")
    parser.add_argument("--config", type=Path, help="TOML whose keys override the settings")
    parser.add_argument("--images", type=int, default=24, help="concept images (15–40)")
    parser.add_argument(
        "--reg", type=int, default=0, help="regularization images of the base world (0: none)"
    )
    parser.add_argument("--samples", type=int, default=SAMPLES, help="images per check")
    parser.add_argument("--reuse", action="store_true", help="keep runs already scored in OUT")
    parser.add_argument(
        "--base-accuracy", action="store_true", help="also score the base on held-out combos"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-output/quality"))
    args = parser.parse_args()
    if args.subjects == ["all"]:
        args.subjects = sorted(SUBJECTS)
    unknown = sorted(set(args.subjects) - set(SUBJECTS))
    if unknown:
        parser.error(f"unknown subjects {unknown}; choose from {sorted(SUBJECTS)} or all")
    return args


def base_figures(judged: tuple) -> dict[str, float]:
    base, classifier = judged
    held = [scene for scene in all_combos() if held_out(scene)]
    accuracy = base_accuracy(base, classifier, held)
    figures = ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items())
    print(f"base model on held-out combinations: {figures}")
    return accuracy


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    extra = tomllib.loads(args.config.read_text(encoding="utf-8")) if args.config else {}
    judged = load_judged_base()
    results, all_rows = [], []
    for subject in args.subjects:
        for seed in args.seeds:
            out = args.out / f"{subject}-s{seed}"
            rows = scored_rows(out, subject, args.trigger, seed, args, extra, judged)
            all_rows.append(rows)
            results.append({"subject": subject, "seed": seed, **judge_run(out, rows)})
    print_table(results)
    ceiling = ceiling_line(all_rows, args.samples)
    cost = cost_line(results)
    print(ceiling)
    print(cost)
    document = {
        "runs": results,
        "ceiling": ceiling,
        "cost": cost,
        "max_bleed": MAX_BLEED,
        "near": NEAR,
    }
    if args.base_accuracy:
        document["base_held_out_accuracy"] = base_figures(judged)
    path = args.out / "summary.json"
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LorakitError as exc:
        print(f"quality: error: {exc}", file=sys.stderr)
        sys.exit(2)
