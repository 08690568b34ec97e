"""`lorakit dataset scan|lint|prep|plan`: thin wrappers that print what the stage found."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from lorakit.cli.common import arguments_for
from lorakit.dataset.choices import BLUR_THRESHOLD, CROPS, FACE_MARGIN, NATIVE_SIDE
from lorakit.dataset.findings import Finding, Severity
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from lorakit.dataset.plan import TrainPlan
    from lorakit.dataset.prep import PrepOptions, PrepResult
    from lorakit.dataset.scan import DatasetScan

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="check and prepare a folder of photos")
    sub = parser.add_subparsers(dest="dataset_command", metavar="STEP", required=True)
    _add_scan(sub)
    _add_lint(sub)
    _add_prep(sub)
    _add_plan(sub)


def _caption_ext(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--caption-ext", default=".txt", help="caption file extension (default .txt)"
    )


def _add_scan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="list images, captions and repeats of a dataset folder")
    p.add_argument("folder", type=Path, help="flat folder, img/ folder or run folder")
    _caption_ext(p)
    p.set_defaults(func=run_scan)


def _face_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--face-model",
        type=Path,
        help="a YuNet .onnx face detector (default: OpenCV's bundled Haar cascades)",
    )


def _add_lint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lint", help="check images and captions; exit 1 on errors")
    p.add_argument("folder", type=Path, help="flat folder, img/ folder or run folder")
    p.add_argument(
        "--family",
        choices=sorted(NATIVE_SIDE),
        default="sd15",
        help="sets the native size photos should reach (sd15 512, sdxl and flux1 1024, tiny "
        "64 px); flux1 also asks for sentence captions with the trigger inside",
    )
    p.add_argument(
        "--trigger", help="word every caption must contain (default: from an N_trigger folder)"
    )
    p.add_argument(
        "--faces",
        action="store_true",
        help="also check faces: none, other people, cut by the border, too small, mirrored",
    )
    _face_model(p)
    p.add_argument(
        "--blur-threshold",
        type=float,
        default=BLUR_THRESHOLD,
        help="Laplacian variance below which a photo is blurry (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print findings as JSON")
    _caption_ext(p)
    p.set_defaults(func=run_lint)


def _add_prep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prep", help="write OUT/img/<repeats>_<trigger> <class>/ from SRC")
    p.add_argument("src", type=Path, help="folder of photos (never modified)")
    p.add_argument("out", type=Path, help="run folder to write img/ into")
    p.add_argument("--trigger", required=True, help="rare word naming the subject, e.g. sks")
    p.add_argument("--class", dest="class_name", required=True, help="e.g. person, dog")
    p.add_argument("--repeats", type=int, help="default: round(400 / images)")
    p.add_argument("--crop", choices=CROPS, default="none", help="default: no crop")
    p.add_argument("--square", action="store_true", help="same as --crop square")
    p.add_argument(
        "--margin",
        type=float,
        default=FACE_MARGIN,
        help="face crop: room around the face box, in box sides (default %(default)s)",
    )
    p.add_argument("--size", type=int, help="side of square/face crops in px (default: as cropped)")
    p.add_argument("--max-side", type=int, help="downscale so the long side fits")
    p.add_argument("--upscale", action="store_true", help="also enlarge smaller images")
    p.add_argument(
        "--fix-orientation",
        action="store_true",
        help="write photos whose face looks mirrored flipped (in OUT only)",
    )
    _face_model(p)
    _caption_ext(p)
    p.set_defaults(func=run_prep)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="steps from repeats and epochs, or repeats from steps")
    p.add_argument("folder", type=Path, nargs="?", help="dataset folder to count images in")
    p.add_argument("--images", type=int, help="image count (default: counted in the folder)")
    p.add_argument("--repeats", type=int, help="default: the folder's N_, else 400 / images")
    p.add_argument("--epochs", type=int, default=10, help="default 10")
    p.add_argument("--batch-size", type=int, default=1, help="default 1")
    p.add_argument("--target-steps", type=int, help="choose repeats for this many steps")
    _caption_ext(p)
    p.set_defaults(func=run_plan)


def _scan_table(scan: DatasetScan) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{scan.root} ({scan.layout} layout)")
    for column in ("subset", "repeats", "images", "captioned", "views / epoch"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for subset, records in scan.subsets.items():
        captioned = sum(r.caption is not None for r in records)
        repeats = records[0].repeats
        table.add_row(
            Text(subset or "(flat)"),
            str(repeats),
            str(len(records)),
            str(captioned),
            str(repeats * len(records)),
        )
    return table


def run_scan(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.dataset.scan import scan_dataset

    scan = scan_dataset(args.folder, args.caption_ext)
    console = Console()
    console.print(_scan_table(scan))
    if scan.other_files:
        console.print(f"{len(scan.other_files)} other file(s) ignored", style="dim")
    print_unusable(scan, console)
    return 0


def print_unusable(scan: DatasetScan, console: Console) -> None:
    """One line per image whose header already shows it cannot be used (empty, not an
    image, a decompression bomb); `lint` decodes every image and finds the rest."""
    from rich.text import Text

    from lorakit.dataset.images import header_problem

    for record in scan.records:
        problem = header_problem(record.path)
        if problem is not None:
            line = f"{_relative(record.path, scan.root)}: {problem.reason}; {problem.fix}"
            console.print(Text(line, style="yellow"), soft_wrap=True)


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return "(dataset)"
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _findings_table(findings: list[Finding], root: Path) -> Table:
    """One row per finding, the fix under the problem (two narrow columns wrap badly), a
    file's name on its first row only and a line between files."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"lint {root}")
    table.add_column("severity", no_wrap=True)
    table.add_column("rule", no_wrap=True)
    table.add_column("file", overflow="fold", max_width=28)
    table.add_column("problem → fix")
    names = [_relative(f.path, root) for f in findings]
    for i, (f, name) in enumerate(zip(findings, names, strict=True)):
        text = Text(f.message)
        text.append(f"\n→ {f.fix}", style="dim")
        table.add_row(
            Text(f.severity.value, style=_STYLE[f.severity]),
            f.rule,
            Text("" if i and name == names[i - 1] else name),
            text,
            end_section=i + 1 < len(names) and name != names[i + 1],
        )
    return table


def _severity_counts(findings: list[Finding]) -> dict[str, int]:
    return {s.value: sum(f.severity is s for f in findings) for s in Severity}


def _summary(counts: dict[str, int]) -> str:
    """'1 error, 25 warnings, 3 info', most severe first."""
    parts = []
    for severity in (Severity.ERROR, Severity.WARNING, Severity.INFO):
        n = counts[severity.value]
        plural = "s" if n != 1 and severity is not Severity.INFO else ""
        parts.append(f"{n} {severity.value}{plural}")
    return ", ".join(parts)


def print_findings(findings: list[Finding], root: Path, console: Console) -> None:
    console.print(_findings_table(findings, root))
    counts = _severity_counts(findings)
    console.print(_summary(counts))
    if counts[Severity.ERROR.value]:
        console.print("errors are files a trainer cannot use: fix or remove them first")


def run_lint(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.dataset.lint import has_errors, lint_dataset

    findings = lint_dataset(args.folder, **arguments_for(lint_dataset, args))
    if args.json:
        report = {"root": str(args.folder), "counts": _severity_counts(findings)}
        report["findings"] = [f.to_dict() for f in findings]
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_findings(findings, args.folder, Console())
    return 1 if has_errors(findings) else 0


def _prep_options(args: argparse.Namespace) -> PrepOptions:
    from lorakit.dataset.prep import PrepOptions

    if args.square and args.crop not in ("none", "square"):
        raise LorakitError(f"--square conflicts with --crop {args.crop}; pass only one")
    crop = "square" if args.square else args.crop
    return PrepOptions(**(arguments_for(PrepOptions, args) | {"crop": crop}))


def print_prep_result(result: PrepResult, console: Console) -> None:
    from rich.text import Text

    unchanged = len(result.images) - len(result.written)
    console.print(Text(f"prepared {result.folder}"), soft_wrap=True)
    console.print(
        f"{len(result.images)} images, {result.repeats} repeats "
        f"({len(result.written)} written, {unchanged} unchanged)"
    )
    notes = [
        (result.captions_created, "caption(s) created as 'trigger, class'"),
        (result.trigger_added, "caption(s) got the trigger prepended"),
        (result.flipped, "mirrored image(s) flipped back"),
        (result.no_face, "image(s) without a detected face, centre-cropped"),
        (result.removed, "stale file(s) from an earlier prep removed"),
    ]
    for paths, what in notes:
        if paths:
            console.print(f"{len(paths)} {what}")
    for label, paths in (("flipped", result.flipped), ("no face", result.no_face)):
        for path in paths:
            console.print(Text(f"  {label}: {path}", style="yellow"), soft_wrap=True)


def run_prep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lorakit.dataset.prep import prep_dataset

    result = prep_dataset(args.src, args.out, _prep_options(args))
    console = Console()
    print_prep_result(result, console)
    hint = f"next: lorakit dataset lint {shlex.quote(str(args.out))} --trigger {args.trigger}"
    console.print(hint, style="dim", soft_wrap=True, markup=False, highlight=False)
    return 0


def _plan_inputs(args: argparse.Namespace, console: Console) -> tuple[int, int | None]:
    """Image count and repeats from the flags, or counted from a dataset folder."""
    if args.folder is None:
        if args.images is None:
            raise LorakitError("plan needs a dataset folder or --images N")
        return args.images, args.repeats
    from lorakit.dataset.scan import scan_dataset

    scan = scan_dataset(args.folder, args.caption_ext)
    print_unusable(scan, console)
    images = args.images if args.images is not None else len(scan.records)
    repeats = args.repeats
    folder_repeats = {r.repeats for r in scan.records}
    if repeats is None and args.target_steps is None and scan.layout == "kohya":
        if len(folder_repeats) > 1:
            raise LorakitError(
                f"{args.folder}: subsets have different repeats {sorted(folder_repeats)}; "
                "pass --repeats to plan with one value"
            )
        repeats = folder_repeats.pop()
    return images, repeats


def plan_lines(plan: TrainPlan, target_steps: int | None) -> list[str]:
    """The guides' arithmetic, spelled out."""
    lines = []
    if target_steps is not None:
        lines.append(
            f"{target_steps} steps ÷ ({plan.images} images × {plan.epochs} epochs) "
            f"= {plan.repeats} repeats"
        )
    lines.append(
        f"{plan.images} images × {plan.repeats} repeats ÷ batch {plan.batch_size} "
        f"= {plan.steps_per_epoch} steps per epoch"
    )
    lines.append(
        f"{plan.steps_per_epoch} steps × {plan.epochs} epochs = {plan.total_steps} steps in total"
    )
    return lines


def run_plan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from lorakit.dataset.plan import make_plan

    console = Console()
    images, repeats = _plan_inputs(args, console)
    plan = make_plan(
        images,
        args.epochs,
        batch_size=args.batch_size,
        repeats=repeats,
        target_steps=args.target_steps,
    )
    for line in plan_lines(plan, args.target_steps):
        console.print(line)
    console.print(Text(f"folder name: img/{plan.repeats}_<trigger> <class>/"), style="dim")
    return 0
