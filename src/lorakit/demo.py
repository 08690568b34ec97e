"""`python -m lorakit.demo` (what `make demo` runs): the whole job, step by step.

It draws a folder of sample "photos" of one character (no downloads), with a few of the
problems real folders have, then runs the commands a user would: lint → curate → prep →
plan → train → grid → pick → generate. Every command goes through the same entry point
as `lorakit` on the command line, so the demo shows (and tests) the real thing.

The base model is a tiny SD1.5-layout model with RANDOM weights, written on the spot: a
pretrained tiny model small enough to ship does not exist yet. Training, the LoRA files,
the grid and the PNG metadata are all real; the pictures are noise, and the output says so.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from lorakit.cli.dataset import print_findings
from lorakit.cli.main import main as lorakit
from lorakit.dataset.findings import Finding, Severity
from lorakit.dataset.lint import has_errors, lint_dataset
from lorakit.dataset.scan import is_image_file
from lorakit.demo_photos import CLASS, TRIGGER, draw_photo, write_sample_photos
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text

# Tests draw the demo's photos through this module.
__all__ = ["draw_photo", "main"]

NAME = "demo"
SIZE = 64  # the tiny model's native size: 8×8 latents
STEPS = ("plan", "train", "all")
RANDOM_NOTE = (
    "NOTE: the base model is a tiny RANDOM-weight stand-in in the SD1.5 layout (no pretrained "
    "tiny model ships yet), so its pictures are noise. The commands, LoRA files, grid, loss "
    "curve and PNG metadata are real; on a real checkpoint the same steps give real images."
)
PROMPT = f"{TRIGGER} {CLASS}, standing in a park"


@dataclass(frozen=True)
class DemoOptions:
    """How far and how long the demo runs; the defaults finish in a few minutes on a CPU."""

    out: Path
    until: str = "all"
    epochs: int = 4
    repeats: int = 2
    sample_steps: int = 12


def parse_options(argv: Sequence[str] | None) -> DemoOptions:
    parser = argparse.ArgumentParser(description="lorakit end-to-end demo")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--until", choices=STEPS, default="all", help="stop after this step")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats while training")
    parser.add_argument(
        "--sample-steps", type=int, default=12, help="denoising steps per picture (default 12)"
    )
    args = parser.parse_args(argv)
    if min(args.epochs, args.repeats, args.sample_steps) < 1:
        parser.error("--epochs, --repeats and --sample-steps must be at least 1")
    return DemoOptions(args.out, args.until, args.epochs, args.repeats, args.sample_steps)


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
    findings = lint_dataset(photos, trigger=TRIGGER)
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


def write_base_model(folder: Path) -> Path:
    """The stand-in base: a diffusers folder in the SD1.5 layout, random weights."""
    from lorakit.models.tiny import save_tiny

    if folder.exists():
        shutil.rmtree(folder)
    save_tiny("sd15", folder, seed=0)
    print(f"wrote {folder}")
    print(RANDOM_NOTE)
    return folder


def write_train_config(run: Path, base: Path, out: Path, options: DemoOptions) -> Path:
    """A small run: 64 px, rank 4, a sample every epoch and a held-out validation set."""
    import tomli_w

    from lorakit.training.config import config_from_dict, save_config

    prompts = out / "sample_prompts.txt"
    atomic_write_text(prompts, f"{PROMPT} --w {SIZE} --h {SIZE} --s {options.sample_steps} --d 1\n")
    config = config_from_dict(
        {
            "model": {"path": str(base)},
            "dataset": {
                "path": str(run),
                "resolution": SIZE,
                "bucket_min": SIZE,
                "bucket_max": 2 * SIZE,
                "repeats": options.repeats,
                "trigger": TRIGGER,
            },
            "network": {"rank": 4, "alpha": 4.0},
            # Plain AdamW in fp32: the tiny model trains fastest on a CPU that way. The LRs
            # are 50× the usual so that the loss falls clearly within a few dozen steps.
            "optimizer": {"name": "adamw", "unet_lr": 5e-3, "text_encoder_lr": 5e-4},
            "scheduler": {"name": "constant"},
            "training": {"epochs": options.epochs, "batch_size": 2, "mixed_precision": "no"},
            "saving": {"output_dir": str(out / "lora"), "name": NAME},
            "sampling": {"prompts": str(prompts), "every_n_epochs": 1},
            "validation": {"enabled": True, "split": 0.2, "timesteps": 2},
        },
        "demo config",
    )
    path = out / "train.toml"
    save_config(config, path)
    print(f"wrote {path}, every setting spelt out; these differ from the defaults:\n")
    print(tomli_w.dumps(config.model_dump(mode="json", exclude_defaults=True)))
    return path


def sampling_args(options: DemoOptions) -> list[str]:
    return ["--steps", str(options.sample_steps), "--width", str(SIZE), "--height", str(SIZE)]


def generate_one(base: Path, lora_dir: Path, out: Path, options: DemoOptions) -> Path:
    """One picture with the trained LoRA at weight 0.8, named in the prompt as in A1111."""
    folder = out / "generated"
    if folder.exists():
        shutil.rmtree(folder)
    prompt = f"<lora:{NAME}:0.8> {TRIGGER} {CLASS}, standing on a beach"
    run_command(
        "generate", prompt, "--model", base, "--lora-dir", lora_dir, "--seed", "7",
        "--out", folder, "--device", "cpu", *sampling_args(options),
    )  # fmt: skip
    return sorted(folder.glob("*.png"))[0]


def print_results(lora_dir: Path, image: Path) -> None:
    step("done: where everything is")
    rows = [
        ("LoRA (last epoch)", lora_dir / f"{NAME}.safetensors"),
        ("every epoch + state", lora_dir),
        ("epoch × weight grid", lora_dir / "grid.png"),
        ("loss curve", lora_dir / "loss.png"),
        ("samples while training", lora_dir / "samples"),
        ("TensorBoard logs", lora_dir / "logs"),
        ("generated image", image),
    ]
    for label, path in rows:
        print(f"  {label:<24} {path.resolve()}")
    print(f"\n{RANDOM_NOTE}")


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
    run_command("dataset", "lint", run, "--trigger", TRIGGER)

    step("5. plan: steps per epoch and in total")
    run_command("dataset", "plan", run, "--epochs", "10")
    return run


def train_lora(run: Path, out: Path, options: DemoOptions) -> tuple[Path, Path]:
    """Steps 6-8: base model → config → train; returns (base model, LoRA folder)."""
    step("6. a base model")
    base = write_base_model(out / "base-model")

    step("7. a training config (small, so the demo runs in minutes on a CPU)")
    print(
        f"The plan above is for a real run; the demo trains {options.repeats} repeats × "
        f"{options.epochs} epochs at {SIZE} px instead."
    )
    config = write_train_config(run, base, out, options)

    step("8. train: an epoch file, a sample and the validation loss every epoch")
    lora_dir = out / "lora"
    if lora_dir.exists():
        shutil.rmtree(lora_dir)
    run_command("train", config)
    return base, lora_dir


def compare_and_use(base: Path, lora_dir: Path, out: Path, options: DemoOptions) -> Path:
    """Steps 9-11: grid → pick → generate; returns the generated image."""
    step("9. grid: every epoch at several LoRA weights, one seed")
    run_command(
        "grid", lora_dir, "--prompt", PROMPT, "--seed", "1", "--device", "cpu",
        *sampling_args(options),
    )  # fmt: skip

    step("10. pick: the best epoch by validation loss")
    run_command("pick", lora_dir)

    step("11. generate with the LoRA")
    return generate_one(base, lora_dir, out, options)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the setting.

    The tiny model's tensors are too small to split: a second thread only adds waiting at
    every operation, which made a step 9× slower on a busy 2-core machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    out = options.out
    run = prepare_dataset(out)
    if options.until == "plan":
        print(f"\nStopped after plan. Everything is in {out.resolve()}")
        return 0
    with one_thread():
        base, lora_dir = train_lora(run, out, options)
        if options.until == "train":
            print(f"\nStopped after training. Everything is in {out.resolve()}")
            return 0
        image = compare_and_use(base, lora_dir, out, options)
    print_results(lora_dir, image)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LorakitError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(2)
