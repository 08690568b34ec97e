"""`lorakit lora inspect|verify|convert`: look into, prove and convert LoRA files."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from lorakit.families import FLUX1, SD_FAMILIES

if TYPE_CHECKING:
    from rich.console import Console

    from lorakit.models import BaseModel
    from lorakit.network.summary import LoRASummary
    from lorakit.network.svd import ModuleFit
    from lorakit.network.verify import VerifyReport

FAMILIES = [family.value for family in SD_FAMILIES]
DTYPES = ["fp16", "bf16", "fp32"]
DYNAMIC = ["sv_ratio", "sv_fro", "sv_cumulative"]
_SHOWN_TAGS = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lora", help="inspect, verify and convert LoRA files")
    sub = parser.add_subparsers(dest="lora_command", metavar="ACTION", required=True)

    inspect = sub.add_parser("inspect", help="family, ranks, size and training metadata of a LoRA")
    inspect.add_argument("file", help="LoRA file (.safetensors)")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=run_inspect)

    verify = sub.add_parser(
        "verify",
        help="prove a LoRA loads in diffusers, A1111, ComfyUI and InvokeAI; exit 1 on ignored keys",
    )
    verify.add_argument("file", help="LoRA file (.safetensors)")
    verify.add_argument(
        "--base",
        help="base checkpoint (diffusers folder or single file) or a family "
        f"({', '.join([*FAMILIES, FLUX1])}); default: the full architecture of the detected family",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=run_verify)

    convert = sub.add_parser("convert", help="convert between kohya and diffusers/peft formats")
    convert.add_argument("input", help="LoRA file to read")
    convert.add_argument("output", help="file to write (.safetensors)")
    convert.add_argument("--to", required=True, choices=["kohya", "diffusers"])
    convert.add_argument(
        "--family", choices=[*FAMILIES, FLUX1], help="base family if it cannot be detected"
    )
    convert.set_defaults(func=run_convert)
    _register_tools(sub)


def _print_summary(summary: LoRASummary, console: Console) -> None:
    from rich.table import Table

    console.print(f"[bold]{summary.path}[/bold]")
    console.print(
        f"family {summary.family or 'unknown'} · {summary.format} format"
        f" · {summary.modules} modules · {summary.size_bytes / 1e6:.2f} MB"
        f" · {', '.join(summary.dtypes)}"
    )
    table = Table("group", "type", "modules", "rank", "alpha")
    for group in summary.groups:
        alphas = ", ".join(f"{a:g}" for a in group.alphas)
        ranks = ", ".join(map(str, group.ranks))
        table.add_row(group.group, ", ".join(group.types), str(group.modules), ranks, alphas)
    console.print(table)
    settings = {k: v for k, v in summary.metadata.items() if k != "ss_tag_frequency"}
    if settings:
        meta = Table("metadata", "value")
        for key, value in sorted(settings.items()):
            meta.add_row(key, value if len(value) < 120 else value[:117] + "...")
        console.print(meta)
    for folder, tags in summary.tag_frequency.items():
        top = sorted(tags.items(), key=lambda item: -item[1])[:_SHOWN_TAGS]
        console.print(f"tags in {folder}: " + ", ".join(f"{tag} ({count})" for tag, count in top))


def run_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.network.summary import inspect_lora

    summary = inspect_lora(args.file)
    if args.json:
        print(summary.to_json())
    else:
        _print_summary(summary, Console())
    return 0


def _base_for(spec: str | None) -> tuple[BaseModel | None, str | None]:
    """(a loaded base, None) for a checkpoint path, (None, family) for a family name."""
    if spec is None:
        return None, None
    if spec in FAMILIES:
        return None, spec
    if spec == FLUX1:
        from lorakit.errors import LorakitError

        raise LorakitError("--base flux1 takes FLUX.1 LoRAs; this one is not")
    from lorakit.models import load_base_model

    return load_base_model(spec), None


def _print_report(report: VerifyReport, console: Console) -> None:
    console.print(
        f"{report.path}: {report.family} LoRA, {report.modules} modules, base {report.base}"
    )
    checks = (
        ("A1111/ComfyUI/InvokeAI key mapping", report.keymap_ignored),
        ("diffusers load_lora_weights", report.diffusers_ignored + report.diffusers_errors),
    )
    for label, problems in checks:
        if label.startswith("diffusers") and report.diffusers_unsupported:
            console.print(f"  [red]FAIL[/red] {label}: {report.diffusers_unsupported}")
            continue
        if not problems:
            console.print(f"  [green]ok[/green]   {label}: every key applied")
            continue
        console.print(f"  [red]FAIL[/red] {label}: {len(problems)} ignored")
        for item in problems[:20]:
            console.print(f"         {item}")


def run_verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.network.flux_files import is_flux_file

    console = Console(soft_wrap=True, stderr=args.json)
    with console.status("loading the base and the LoRA through both loaders..."):
        if is_flux_file(args.file):
            from lorakit.network.flux_verify import verify_flux_lora

            report = verify_flux_lora(args.file, args.base)
        else:
            from lorakit.network.verify import verify_lora

            base, family = _base_for(args.base)
            report = verify_lora(args.file, base=base, family=family)
    if args.json:
        data = asdict(report) | {"path": str(report.path), "family": str(report.family)}
        print(json.dumps(data | {"ok": report.ok}, indent=2))
    else:
        _print_report(report, console)
    return 0 if report.ok else 1


def run_convert(args: argparse.Namespace) -> int:
    from lorakit.fileio import check_writable_file
    from lorakit.network.convert import convert_file

    check_writable_file(args.output, "output")
    written = convert_file(args.input, args.output, args.to, args.family)
    print(f"wrote {written} ({args.to} format)")
    return 0


def _add_rank_options(parser: argparse.ArgumentParser, required: bool) -> None:
    """--rank/--conv-rank and sd-scripts' dynamic modes, shared by resize and merge."""
    parser.add_argument(
        "--rank", type=int, required=required, help="rank to keep (the largest, with --dynamic)"
    )
    parser.add_argument("--conv-rank", type=int, help="rank of 3×3 conv modules (default --rank)")
    parser.add_argument(
        "--dynamic",
        choices=DYNAMIC,
        help="choose each module's rank from its singular values, as sd-scripts does",
    )
    parser.add_argument(
        "--param",
        type=float,
        help="sv_ratio: keep σ > σmax/X; sv_cumulative: Σσ ≥ X·total; sv_fro: kept norm ≥ X",
    )


def _register_tools(sub: argparse._SubParsersAction) -> None:
    resize = sub.add_parser(
        "resize", help="a LoRA at another rank (exact SVD per module, alpha keeps the scale)"
    )
    resize.add_argument("input", help="LoRA file to read")
    resize.add_argument("output", help="LoRA file to write (.safetensors)")
    _add_rank_options(resize, required=True)
    resize.add_argument("--dtype", choices=DTYPES, help="weights' dtype (default: the input's)")
    resize.add_argument("--json", action="store_true", help="print the kept norms as JSON")
    resize.set_defaults(func=run_resize)

    merge = sub.add_parser(
        "merge",
        help="LoRAs into a checkpoint (--model) or into one LoRA (ranks concatenated, or --rank)",
        description="With --model, bake the LoRAs into the base and write it in the same layout "
        "(a .safetensors file, or a new diffusers folder). Without it, merge the LoRAs into one: "
        "ranks concatenated (exact), or resized to --rank by SVD.",
    )
    merge.add_argument(
        "--lora", action="append", required=True, metavar="FILE[:WEIGHT]", help="a LoRA to merge"
    )
    merge.add_argument("--out", required=True, help="file (or folder, for a diffusers model)")
    merge.add_argument("--model", help="base checkpoint: single file or diffusers folder")
    _add_rank_options(merge, required=False)
    merge.add_argument(
        "--dtype",
        choices=DTYPES,
        help="dtype written (default: fp16 for an SD model, bf16 for FLUX.1, else the LoRA's)",
    )
    merge.add_argument("--json", action="store_true", help="print the kept norms as JSON")
    merge.set_defaults(func=run_merge)

    extract = sub.add_parser("extract", help="a LoRA from the difference of two checkpoints")
    extract.add_argument("base", help="the original checkpoint")
    extract.add_argument("tuned", help="the fine-tuned checkpoint")
    extract.add_argument("output", help="LoRA file to write (.safetensors)")
    extract.add_argument("--rank", type=int, required=True, help="rank of the LoRA")
    extract.add_argument("--conv-rank", type=int, help="also extract 3×3 convs at this rank")
    extract.add_argument(
        "--min-diff",
        type=float,
        help="skip layers where no weight moved by more than this (default 1e-4)",
    )
    extract.add_argument("--dtype", choices=DTYPES, default="fp16", help="dtype (default fp16)")
    extract.add_argument("--json", action="store_true", help="print the kept norms as JSON")
    extract.set_defaults(func=run_extract)


def _print_fits(fits: list[ModuleFit], output: str, as_json: bool, skipped: int = 0) -> None:
    """Per-module and overall kept Frobenius norm (stdout), as text or JSON."""
    from lorakit.network.svd import overall_fraction

    overall = overall_fraction(fits)
    if as_json:
        modules = [asdict(fit) | {"fraction": fit.fraction} for fit in fits]
        data = {"output": output, "overall": overall, "skipped": skipped, "modules": modules}
        print(json.dumps(data, indent=2))
        return
    for fit in fits:
        before = f"{fit.source_rank} → " if fit.source_rank is not None else ""
        print(f"{fit.name}  rank {before}{fit.rank}  kept {fit.fraction:.2%}")
    note = f", {skipped} unchanged layers skipped" if skipped else ""
    print(f"kept {overall:.2%} of the Frobenius norm, {len(fits)} modules{note}; wrote {output}")


def run_resize(args: argparse.Namespace) -> int:
    from lorakit.network.resize import resize_file

    fits = resize_file(
        args.input, args.output, args.rank, args.conv_rank, args.dynamic, args.param, args.dtype
    )
    _print_fits(fits, args.output, args.json)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from lorakit.inference.prompt import parse_lora_arg

    loras = [(ref.path, ref.weight) for ref in map(parse_lora_arg, args.lora)]
    if args.model is None:
        from lorakit.network.merge import merge_loras

        fits = merge_loras(
            loras, args.out, args.rank, args.conv_rank, args.dynamic, args.param, args.dtype
        )
        if fits:
            _print_fits(fits, args.out, args.json)
        else:
            print(f"wrote {args.out} (ranks concatenated: exact)")
        return 0
    from lorakit.errors import LorakitError
    from lorakit.network.merge_checkpoint import merge_into_checkpoint

    if args.rank is not None or args.conv_rank is not None or args.dynamic is not None:
        raise LorakitError("--rank, --conv-rank and --dynamic size a merged LoRA; not with --model")
    print(f"wrote {merge_into_checkpoint(args.model, loras, args.out, args.dtype)}")
    return 0


def run_extract(args: argparse.Namespace) -> int:
    from lorakit.network.extract import extract_lora

    threshold = {} if args.min_diff is None else {"min_diff": args.min_diff}
    fits, skipped = extract_lora(
        args.base, args.tuned, args.output, args.rank, args.conv_rank, dtype=args.dtype, **threshold
    )
    _print_fits(fits, args.output, args.json, skipped)
    return 0
