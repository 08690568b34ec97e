"""`lorakit grid RUN_DIR`: the epoch × weight comparison grid and loss.png of a run."""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorakit.cli.generate import (
    FLUX_DEFAULTS,
    add_model_arguments,
    add_sampling_arguments,
    given_options,
    refuse_other_family,
)
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from lorakit.inference.grid_render import GridRenderer


def _comma_list(convert: Callable[[str], Any], example: str) -> Callable[[str], list[Any]]:
    """An argparse `type` for comma-separated values (empty items skipped)."""

    def parse(text: str) -> list[Any]:
        try:
            return [convert(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: write {example}") from None

    return parse


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "grid",
        help="compare epochs × LoRA weights in one labelled image",
        description="Render a grid: LoRA files (a run's epochs, or --lora files) as columns, "
        "weights as rows, one seed for all cells; --search-replace adds stacked blocks. "
        "Also writes loss.png from the run's summary.json. " + FLUX_DEFAULTS,
    )
    parser.add_argument("run_dir", nargs="?", type=Path, help="training output folder")
    parser.add_argument("--model", type=Path, help="base model (default: the run's base model)")
    parser.add_argument("--prompt", help="prompt (default: the run's trigger and class words)")
    parser.add_argument("--lora", action="append", default=[], type=Path, help="LoRA file column")
    parser.add_argument(
        "--epochs",
        type=_comma_list(int, "epoch numbers like 4,6,8"),
        help="only these epochs, e.g. 4,6,8",
    )
    parser.add_argument(
        "--weights",
        type=_comma_list(float, "numbers like 0,0.4,0.8,1"),
        default=[0.0, 0.4, 0.6, 0.8, 1.0],
        help="rows, e.g. 0,0.5,1",
    )
    parser.add_argument(
        "--search-replace",
        type=_comma_list(str, "values like red,blue"),
        default=[],
        help='e.g. "red,blue,green"',
    )
    parser.add_argument("--seed", type=int, help="seed for every cell (default: random)")
    parser.add_argument("--out", type=Path, help="grid PNG (default: RUN_DIR/grid.png)")
    parser.add_argument("--loss-only", action="store_true", help="only write loss.png")
    add_sampling_arguments(parser)
    add_model_arguments(parser, " (default: the run's config.toml)")
    parser.set_defaults(func=run)


def _columns(args: argparse.Namespace, summary: dict[str, Any]) -> tuple[list[Any], str]:
    """Grid columns and the x-axis title: `--lora` files, else the run's saved epochs."""
    from lorakit.inference.grid import epoch_columns, file_columns

    if args.lora:
        missing = [str(path) for path in args.lora if not path.is_file()]
        if missing:
            raise LorakitError(f"LoRA file {missing[0]} does not exist; check the --lora path")
        return file_columns(args.lora)
    return epoch_columns(args.run_dir, summary, args.epochs), "epoch"


def _renderer(args: argparse.Namespace, model: Path, prompt: str) -> GridRenderer:
    """The family's `GridRenderer` over the loaded base; the FLUX.1 component files and
    the architecture folder default to the run's config.toml, as it trained with them."""
    from lorakit.families import FLUX1
    from lorakit.inference.run import run_model_section
    from lorakit.models.family import detect_family

    section = run_model_section(args.run_dir)
    config = args.config or (Path(section.config) if section.config else None)
    flux = detect_family(model.expanduser()) is FLUX1
    refuse_other_family(args, model, flux)
    if flux:
        from lorakit.inference.flux_generate import (
            FluxOptions,
            load_flux_for_inference,
            module_files,
        )
        from lorakit.inference.grid_render import FluxGridRenderer

        files = module_files(args, section)
        base = load_flux_for_inference(
            model, args.device, config=config, guidance=args.guidance, **files
        )
        options = FluxOptions(**(given_options(FluxOptions, args) | {"prompt": prompt}))
        return FluxGridRenderer(base, options, files)
    from lorakit.inference.generate import GenerateOptions, load_for_inference
    from lorakit.inference.grid_render import SDGridRenderer
    from lorakit.inference.samplers import canonical_sampler_name

    options = GenerateOptions(**(given_options(GenerateOptions, args) | {"prompt": prompt}))
    canonical_sampler_name(options.sampler)  # before the model loads
    return SDGridRenderer(load_for_inference(model, args.device, config), options)


def run(args: argparse.Namespace) -> int:
    from lorakit.inference.grid import GridSpec, make_grid
    from lorakit.inference.lossplot import plot_loss
    from lorakit.inference.run import load_summary

    if args.run_dir is None and not (args.lora and args.model):
        raise LorakitError("give a RUN_DIR, or --model BASE with --lora FILE for each column")
    summary = load_summary(args.run_dir) if args.run_dir is not None else {}
    if summary:
        print(plot_loss(summary, args.run_dir / "loss.png"))
    if args.loss_only:
        return 0
    prompt = args.prompt or " ".join(
        word for word in (summary.get("trigger"), summary.get("class")) if word
    )
    model = args.model or summary.get("base_model")
    if not prompt or not model:
        raise LorakitError("the run names no trigger or base model; pass --prompt and --model")
    columns, x_title = _columns(args, summary)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    spec = GridSpec(prompt, columns, args.weights, args.search_replace, x_title, seed)
    out = args.out or (args.run_dir or Path(".")) / "grid.png"
    print(make_grid(_renderer(args, Path(model), prompt), spec, out))
    return 0
