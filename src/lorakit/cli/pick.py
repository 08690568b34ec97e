"""`lorakit pick RUN_DIR`: the best epoch and the over/undertraining signs of a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pick",
        help="pick the best epoch of a training run",
        description="Measure every saved epoch's fidelity and bleed with the "
        "run's own model and choose the epoch by them (the lowest validation loss when they "
        "cannot be measured); check for overfitting, undertraining and samples that stop "
        "changing; store the result in summary.json under 'pick' and draw loss.png.",
    )
    parser.add_argument("run_dir", type=Path, help="training output folder (with summary.json)")
    parser.add_argument(
        "--still-threshold",
        type=float,
        default=2.0,
        help="mean pixel change (0-255) below which samples count as unchanged (default 2)",
    )
    parser.add_argument(
        "--no-signals",
        action="store_true",
        help="skip the signals and pick by the lowest validation loss (no model is loaded)",
    )
    parser.add_argument("--device", help="device for the signals (default: CUDA when present)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorakit.inference.lossplot import plot_loss
    from lorakit.inference.pick import pick
    from lorakit.inference.run import load_summary

    report = pick(args.run_dir, args.still_threshold, not args.no_signals, args.device)
    for line in report.advice:
        print(line)
    print(plot_loss(load_summary(args.run_dir), args.run_dir / "loss.png", report.best_epoch))
    return 0
