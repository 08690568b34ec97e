"""`lorakit train CONFIG.toml`: build the config from its sources, show the plan, train.

Sources, later ones win: an imported kohya_ss / CivitAI JSON, the TOML file, `--set`s,
`--caption-ext`; then a `--preset` fills what none of them set. Multi-GPU runs go through
`accelerate launch -m lorakit train ...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text

if TYPE_CHECKING:
    from lorakit.training.config import TrainConfig

PRESET_TYPES = ("character", "likeness", "style", "object")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a LoRA from a config file",
        description="Train a LoRA. The resolved config is written to <output_dir>/config.toml "
        "and can be given back to repeat the run or, with --resume, continue it.",
    )
    parser.add_argument("config", nargs="?", type=Path, help="TOML config (optional with --from-*)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set optimizer.name=prodigy (value as TOML)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--resume", type=Path, metavar="STATE_DIR", help="continue from state/")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start anew in an output_dir that holds another run (its files move to "
        "<output_dir>/.previous-<time>/, nothing is deleted)",
    )
    parser.add_argument("--from-kohya", type=Path, metavar="FILE", help="import a kohya_ss JSON")
    parser.add_argument("--from-civitai", type=Path, metavar="FILE", help="import CivitAI JSON")
    parser.add_argument("--preset", choices=PRESET_TYPES, help="derive length/rank/LR by type")
    parser.add_argument("--caption-ext", help="caption file extension (default .txt)")
    parser.add_argument(
        "--stop-after-epoch",
        type=int,
        metavar="N",
        help="save state and stop after epoch N (continue later with --resume)",
    )
    parser.set_defaults(func=run)


def _imported(args: argparse.Namespace) -> tuple[dict[str, Any], list[str], str | None]:
    """Overrides, notes and inline sample prompts from --from-kohya / --from-civitai."""
    from lorakit.training.config import merge
    from lorakit.training.import_civitai import import_civitai
    from lorakit.training.import_kohya import import_kohya

    data: dict[str, Any] = {}
    notes: list[str] = []
    prompts = None
    for path, reader in ((args.from_kohya, import_kohya), (args.from_civitai, import_civitai)):
        if path is not None:
            result = reader(path)
            data = merge(data, result.overrides)
            notes += result.notes
            prompts = result.sample_prompts or prompts
    return data, notes, prompts


def _with_prompts(config: TrainConfig, prompts: str | None) -> tuple[TrainConfig, str | None]:
    """Name a file in the output folder for imported inline sample prompts; the text to
    write there once the folder is claimed (a dry run or a refused run writes nothing)."""
    if not prompts or config.sampling.prompts:
        return config, None
    path = Path(config.saving.output_dir) / "sample_prompts.txt"
    sampling = config.sampling.model_copy(update={"prompts": str(path)})
    return config.model_copy(update={"sampling": sampling}), prompts.rstrip("\n") + "\n"


def _preset(config: TrainConfig, lora_type: str) -> tuple[TrainConfig, list[str]]:
    from lorakit.dataset.scan import scan_dataset
    from lorakit.training.presets import apply_preset, dataset_counts

    images, folder_repeats = 0, None
    for path in config.dataset_paths():
        count, repeats = dataset_counts(scan_dataset(path, config.dataset.caption_ext))
        images += count
        folder_repeats = repeats or folder_repeats
    return apply_preset(config, lora_type, images, folder_repeats)


def build_config(args: argparse.Namespace) -> tuple[TrainConfig, list[str]]:
    """The run's config and the lines that explain where its values came from."""
    config, lines, _ = _resolved(args)
    return config, lines


def _resolved(args: argparse.Namespace) -> tuple[TrainConfig, list[str], str | None]:
    """`build_config`, plus the imported sample prompts still to be written."""
    if args.config is None and args.from_kohya is None and args.from_civitai is None:
        raise LorakitError("give a config file (lorakit train CONFIG.toml) or --from-kohya FILE")
    from lorakit.training.config import load_config
    from lorakit.training.optim import optimizer_notes

    base, lines, prompts = _imported(args)
    sets = list(args.sets)
    if args.caption_ext:
        sets.append(f'dataset.caption_ext="{args.caption_ext}"')
    config = load_config(args.config, sets, base)
    if args.preset:
        config, reasons = _preset(config, args.preset)
        lines += reasons
    lines += optimizer_notes(config)
    config, prompt_text = _with_prompts(config, prompts)
    return config, lines, prompt_text


def require_paths(config: TrainConfig) -> None:
    if not config.model.path:
        raise LorakitError("model.path is not set; add it to the config or --set model.path=...")
    if not config.dataset.path:
        raise LorakitError("dataset.path is not set; add it or --set dataset.path=...")


def run(args: argparse.Namespace) -> int:
    config, lines, prompt_text = _resolved(args)
    require_paths(config)
    if args.dry_run:
        from lorakit.training.target import dry_run

        for line in [*lines, *dry_run(config)]:
            print(line)
        return 0
    from lorakit.training.loop import train_from
    from lorakit.training.rundir import prepare_run_folder

    start = prepare_run_folder(config, args.resume, args.overwrite)
    if prompt_text is not None and config.sampling.prompts:
        atomic_write_text(config.sampling.prompts, prompt_text)
    for line in lines:
        print(line)
    train_from(start, config, stop_after_epoch=args.stop_after_epoch)
    return 0
