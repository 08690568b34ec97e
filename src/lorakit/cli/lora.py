"""`lorakit lora inspect|verify|convert`: look into, prove and convert LoRA files."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from lorakit.families import ModelFamily

if TYPE_CHECKING:
    from rich.console import Console

    from lorakit.models import BaseModel
    from lorakit.network.summary import LoRASummary
    from lorakit.network.verify import VerifyReport

FAMILIES = [family.value for family in ModelFamily]
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
        f"({', '.join(FAMILIES)}); default: the full architecture of the detected family",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=run_verify)

    convert = sub.add_parser("convert", help="convert between kohya and diffusers/peft formats")
    convert.add_argument("input", help="LoRA file to read")
    convert.add_argument("output", help="file to write (.safetensors)")
    convert.add_argument("--to", required=True, choices=["kohya", "diffusers"])
    convert.add_argument("--family", choices=FAMILIES, help="base family if it cannot be detected")
    convert.set_defaults(func=run_convert)


def _print_summary(summary: LoRASummary, console: Console) -> None:
    from rich.table import Table

    console.print(f"[bold]{summary.path}[/bold]")
    console.print(
        f"family {summary.family or 'unknown'} · {summary.format} format"
        f" · {summary.modules} modules · {summary.size_bytes / 1e6:.2f} MB"
        f" · {', '.join(summary.dtypes)}"
    )
    table = Table("group", "modules", "rank", "alpha")
    for group in summary.groups:
        alphas = ", ".join(f"{a:g}" for a in group.alphas)
        table.add_row(group.group, str(group.modules), ", ".join(map(str, group.ranks)), alphas)
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
    from lorakit.models import load_base_model

    return load_base_model(spec), None


def _print_report(report: VerifyReport, console: Console) -> None:
    console.print(
        f"{report.path}: {report.family.value} LoRA, {report.modules} modules, base {report.base}"
    )
    checks = (
        ("A1111/ComfyUI/InvokeAI key mapping", report.keymap_ignored),
        ("diffusers load_lora_weights", report.diffusers_ignored + report.diffusers_errors),
    )
    for label, problems in checks:
        if not problems:
            console.print(f"  [green]ok[/green]   {label}: every key applied")
            continue
        console.print(f"  [red]FAIL[/red] {label}: {len(problems)} ignored")
        for item in problems[:20]:
            console.print(f"         {item}")


def run_verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.network.verify import verify_lora

    console = Console(soft_wrap=True, stderr=args.json)
    with console.status("loading the base and the LoRA through both loaders..."):
        base, family = _base_for(args.base)
        report = verify_lora(args.file, base=base, family=family)
    if args.json:
        data = asdict(report) | {"path": str(report.path), "family": report.family.value}
        print(json.dumps(data | {"ok": report.ok}, indent=2))
    else:
        _print_report(report, console)
    return 0 if report.ok else 1


def run_convert(args: argparse.Namespace) -> int:
    from lorakit.network.convert import convert_file

    written = convert_file(args.input, args.output, args.to, args.family)
    print(f"wrote {written} ({args.to} format)")
    return 0
