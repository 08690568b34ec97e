"""`python -m lorakit.demo` (what `make demo` runs): the whole job, step by step.

It draws a folder of sample "photos" of one subject (no downloads), with a few of the
problems real folders have, then runs the commands a user would: lint → curate → prep →
plan → train → grid → pick → generate. Every command goes through the same entry point
as `lorakit` on the command line, so the demo shows (and tests) the real thing.

The base model is lorakit's pretrained tiny model (family `tiny`, 64 px, shipped in the
package), which has never seen the subject; the attribute classifier then scores every
epoch: does the trigger show the subject (fidelity), do other words still work
(flexibility), and do prompts without the trigger stay clean (bleed)?
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from lorakit.cli.dataset import print_findings
from lorakit.cli.main import main as lorakit
from lorakit.cli.ui import DEFAULT_PORT
from lorakit.dataset.findings import Finding, Severity
from lorakit.dataset.lint import has_errors, lint_dataset
from lorakit.dataset.scan import is_image_file
from lorakit.demo_photos import CLASS, TRIGGER, write_sample_photos
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.models.components import TINY_BASE_DIR
from lorakit.synthetic import quality, recipe
from lorakit.threads import torch_threads

FAMILY = "tiny"

NAME = "demo"
SIZE = recipe.SIDE  # the tiny model's native size: 8×8 latents
STEPS = ("plan", "train", "all")
PROMPT = f"{TRIGGER} {CLASS}, pink background"


@dataclass(frozen=True)
class DemoOptions:
    """How far and how long the demo runs; the defaults finish in a few minutes on a CPU."""

    out: Path
    until: str = "all"
    epochs: int = recipe.EPOCHS
    repeats: int = recipe.REPEATS
    sample_steps: int = 25
    score_samples: int = quality.SAMPLES


def parse_options(argv: Sequence[str] | None) -> DemoOptions:
    parser = argparse.ArgumentParser(description="lorakit end-to-end demo")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--until", choices=STEPS, default="all", help="stop after this step")
    parser.add_argument("--epochs", type=int, default=recipe.EPOCHS, help="training epochs")
    parser.add_argument("--repeats", type=int, default=recipe.REPEATS, help="repeats per image")
    parser.add_argument(
        "--sample-steps", type=int, default=25, help="denoising steps per picture (default 25)"
    )
    parser.add_argument(
        "--score-samples",
        type=int,
        default=quality.SAMPLES,
        help=f"images per score and epoch (default {quality.SAMPLES})",
    )
    args = parser.parse_args(argv)
    if min(args.epochs, args.repeats, args.sample_steps, args.score_samples) < 1:
        parser.error("--epochs, --repeats, --sample-steps and --score-samples must be at least 1")
    return DemoOptions(
        args.out, args.until, args.epochs, args.repeats, args.sample_steps, args.score_samples
    )


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_command(*argv: str | Path) -> None:
    """`lorakit ARGV...`, echoed first; a failing command stops the demo."""
    words = [str(word) for word in argv]
    print("$ lorakit " + " ".join(f'"{w}"' if " " in w or "<" in w else w for w in words))
    status = lorakit(words)
    if status != 0:
        raise LorakitError(f"`lorakit {words[0]}` exited with status {status}")


def lint_photos(photos: Path) -> list[Finding]:
    findings = lint_dataset(photos, trigger=TRIGGER, family=FAMILY)
    print_findings(findings, photos, Console())
    print(f"`lorakit dataset lint` would exit with status {int(has_errors(findings))}")
    return findings


def curate(photos: Path, findings: Sequence[Finding], curated: Path) -> Path:
    """What a user does after lint: drop the images with errors, duplicates and mirrors."""
    drop_rules = {"exact-duplicate", "near-duplicate", "mirrored-pair", "blurry"}
    dropped = {
        f.path
        for f in findings
        if f.path is not None and (f.severity is Severity.ERROR or f.rule in drop_rules)
    }
    if curated.exists():
        shutil.rmtree(curated)
    curated.mkdir(parents=True)
    kept = [p for p in sorted(photos.iterdir()) if is_image_file(p) and p not in dropped]
    for image in kept:
        shutil.copy2(image, curated / image.name)
        caption = image.with_suffix(".txt")
        if caption.is_file():
            shutil.copy2(caption, curated / caption.name)
    print(f"kept {len(kept)} images in {curated}; dropped:")
    for path in sorted(dropped):
        print(f"  {path.name}")
    return curated


def write_train_config(run: Path, out: Path, options: DemoOptions) -> Path:
    """The shared tiny-model recipe, with a sample every epoch."""
    import tomli_w

    from lorakit.training.config import config_from_dict, save_config

    prompts = out / "sample_prompts.txt"
    atomic_write_text(prompts, f"{PROMPT} --w {SIZE} --h {SIZE} --s {options.sample_steps} --d 1\n")
    settings = recipe.concept_settings(run, out / "lora", NAME, TRIGGER, epochs=options.epochs)
    settings["dataset"]["repeats"] = options.repeats
    settings["sampling"] = {"prompts": str(prompts), "every_n_epochs": 1}
    config = config_from_dict(settings, "demo config")
    path = out / "train.toml"
    save_config(config, path)
    print(f"wrote {path}, every setting spelt out; these differ from the defaults:\n")
    print(tomli_w.dumps(config.model_dump(mode="json", exclude_defaults=True)))
    return path


def sampling_args(options: DemoOptions) -> list[str]:
    return ["--steps", str(options.sample_steps), "--width", str(SIZE), "--height", str(SIZE)]


def generate_one(lora_dir: Path, out: Path, options: DemoOptions) -> Path:
    """One picture with the trained LoRA, named in the prompt as in A1111."""
    folder = out / "generated"
    if folder.exists():
        shutil.rmtree(folder)
    prompt = f"<lora:{NAME}:1> {TRIGGER} {CLASS}, large, right, gray background"
    run_command(
        "generate", prompt, "--model", TINY_BASE_DIR, "--lora-dir", lora_dir, "--seed", "7",
        "--out", folder, "--device", "cpu", *sampling_args(options),
    )  # fmt: skip
    return sorted(folder.glob("*.png"))[0]


def score(lora_dir: Path, options: DemoOptions) -> Path:
    """Fidelity, flexibility and bleed of every epoch, judged by the attribute classifier."""
    base, classifier = quality.load_judged_base()
    rows = quality.score_run(
        base, classifier, lora_dir, CLASS, TRIGGER, samples=options.score_samples
    )
    return quality.report(lora_dir, CLASS, TRIGGER, rows)


def print_results(lora_dir: Path, image: Path) -> None:
    step("done: where everything is")
    rows = [
        ("LoRA (last epoch)", lora_dir / f"{NAME}.safetensors"),
        ("every epoch + state", lora_dir),
        ("epoch × weight grid", lora_dir / "grid.png"),
        ("loss curve", lora_dir / "loss.png"),
        ("scores per epoch", lora_dir / "quality.json"),
        ("samples while training", lora_dir / "samples"),
        ("TensorBoard logs", lora_dir / "logs"),
        ("generated image", image),
    ]
    for label, path in rows:
        print(f"  {label:<24} {path.resolve()}")
    demo_root = lora_dir.parent.resolve()
    print(
        f"\nOpen it in the browser: .venv/bin/lorakit ui --root {demo_root}, then "
        f"http://127.0.0.1:{DEFAULT_PORT}/ and start a project from {demo_root / 'photos'}"
    )


def prepare_dataset(out: Path) -> Path:
    """Steps 1-5: photos → lint → curate → prep → plan; returns the prepared run folder."""
    step("1. a folder of photos, as users bring them")
    photos = write_sample_photos(out / "photos")
    run_command("dataset", "scan", photos)

    step("2. lint: what is wrong with them")
    findings = lint_photos(photos)

    step("3. curate: drop what lint flagged")
    curated = curate(photos, findings, out / "curated")

    step("4. prep: kohya layout, upright RGB PNGs, captions with the trigger")
    run = out / "run"
    run_command("dataset", "prep", curated, run, "--trigger", TRIGGER, "--class", CLASS)
    run_command("dataset", "lint", run, "--trigger", TRIGGER, "--family", FAMILY)

    step("5. plan: steps per epoch and in total")
    run_command("dataset", "plan", run, "--epochs", "10")
    return run


def train_lora(run: Path, out: Path, options: DemoOptions) -> Path:
    """Steps 6-8: base model → config → train; returns the LoRA folder."""
    step("6. a base model")
    print(
        f"lorakit's pretrained tiny model (family {FAMILY}, 64 px, SD1.5 layout): {TINY_BASE_DIR}\n"
        f"It draws shapes from prompts and has never seen a {CLASS}."
    )

    step("7. a training config (small, so the demo runs in minutes on a CPU)")
    print(
        f"The plan above is for a real run; the demo trains {options.repeats} repeats × "
        f"{options.epochs} epochs at {SIZE} px instead."
    )
    config = write_train_config(run, out, options)

    step("8. train: an epoch file, a sample and the validation loss every epoch")
    lora_dir = out / "lora"
    if lora_dir.exists():
        shutil.rmtree(lora_dir)
    run_command("train", config)
    return lora_dir


def compare(lora_dir: Path, options: DemoOptions) -> None:
    """Steps 9-10: grid → pick."""
    step("9. grid: every epoch at several LoRA weights, one seed")
    run_command(
        "grid", lora_dir, "--prompt", PROMPT, "--seed", "1", "--device", "cpu",
        *sampling_args(options),
    )  # fmt: skip

    step("10. pick: the best epoch by fidelity and bleed, measured with the run's own model")
    run_command("pick", lora_dir)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    out = options.out
    run = prepare_dataset(out)
    if options.until == "plan":
        print(f"\nStopped after plan. Everything is in {out.resolve()}")
        return 0
    with torch_threads(1):  # the tiny model: see lorakit.threads
        lora_dir = train_lora(run, out, options)
        if options.until == "train":
            print(f"\nStopped after training. Everything is in {out.resolve()}")
            return 0
        compare(lora_dir, options)
    step("11. score: did the LoRA learn the subject, and only when asked?")
    score(lora_dir, options)  # batches of 24 prompts: here both cores help
    step("12. generate with the LoRA")
    with torch_threads(1):  # the tiny model: see lorakit.threads
        image = generate_one(lora_dir, out, options)
    print_results(lora_dir, image)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LorakitError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(2)
