"""`lorakit dataset scan|lint|prep|plan`: thin wrappers that print what the stage found."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lorakit.dataset.findings import Finding, Severity
from lorakit.dataset.lint import BLUR_THRESHOLD, NATIVE_SIDE, has_errors, lint_dataset
from lorakit.dataset.plan import TrainPlan, make_plan
from lorakit.dataset.prep import CROPS, PrepOptions, PrepResult, prep_dataset
from lorakit.dataset.scan import DatasetScan, scan_dataset
from lorakit.errors import LorakitError

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
    p.add_argument("folder", type=Path)
    p.add_argument("--family", choices=sorted(NATIVE_SIDE), default="sd15")
    p.add_argument("--trigger", help="word every caption must contain")
    p.add_argument(
        "--faces",
        action="store_true",
        help="also check faces: none, other people, cut by the border, too small, mirrored",
    )
    _face_model(p)
    p.add_argument("--blur-threshold", type=float, default=BLUR_THRESHOLD)
    p.add_argument("--json", action="store_true", help="print findings as JSON")
    _caption_ext(p)
    p.set_defaults(func=run_lint)


def _add_prep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prep", help="write OUT/img/<repeats>_<trigger> <class>/ from SRC")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--trigger", required=True, help="rare word naming the subject, e.g. sks")
    p.add_argument("--class", dest="class_name", required=True, help="e.g. person, dog")
    p.add_argument("--repeats", type=int, help="default: round(400 / images)")
    p.add_argument("--crop", choices=CROPS, default="none")
    p.add_argument("--square", action="store_true", help="same as --crop square")
    p.add_argument("--margin", type=float, default=0.6, help="face crop margin")
    p.add_argument("--size", type=int, help="final side of square/face crops")
    p.add_argument("--max-side", type=int, help="downscale so the long side fits")
    p.add_argument("--upscale", action="store_true", help="also enlarge smaller images")
    p.add_argument("--fix-orientation", action="store_true", help="un-mirror selfies")
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
    scan = scan_dataset(args.folder, args.caption_ext)
    console = Console()
    console.print(_scan_table(scan))
    if scan.other_files:
        console.print(f"{len(scan.other_files)} other file(s) ignored", style="dim")
    return 0


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return "(dataset)"
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _findings_table(findings: list[Finding], root: Path) -> Table:
    table = Table(title=f"lint {root}")
    table.add_column("severity", no_wrap=True)
    table.add_column("rule", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("problem", ratio=3)
    table.add_column("fix", ratio=2)
    for f in findings:
        table.add_row(
            Text(f.severity.value, style=_STYLE[f.severity]),
            f.rule,
            Text(_relative(f.path, root)),
            Text(f.message),
            Text(f.fix),
        )
    return table


def print_findings(findings: list[Finding], root: Path, console: Console) -> None:
    console.print(_findings_table(findings, root))
    counts = {s.value: sum(f.severity is s for f in findings) for s in Severity}
    console.print(", ".join(f"{n} {name}" for name, n in counts.items()))


def run_lint(args: argparse.Namespace) -> int:
    findings = lint_dataset(
        args.folder,
        family=args.family,
        trigger=args.trigger,
        caption_ext=args.caption_ext,
        faces=args.faces,
        face_model=args.face_model,
        blur_threshold=args.blur_threshold,
    )
    if args.json:
        counts = {s.value: sum(f.severity is s for f in findings) for s in Severity}
        report = {"root": str(args.folder), "counts": counts}
        report["findings"] = [f.to_dict() for f in findings]
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_findings(findings, args.folder, Console())
    return 1 if has_errors(findings) else 0


def _prep_options(args: argparse.Namespace) -> PrepOptions:
    if args.square and args.crop not in ("none", "square"):
        raise LorakitError(f"--square conflicts with --crop {args.crop}; pass only one")
    return PrepOptions(
        trigger=args.trigger,
        class_name=args.class_name,
        repeats=args.repeats,
        crop="square" if args.square else args.crop,
        margin=args.margin,
        size=args.size,
        max_side=args.max_side,
        upscale=args.upscale,
        caption_ext=args.caption_ext,
        fix_orientation=args.fix_orientation,
        face_model=args.face_model,
    )


def print_prep_result(result: PrepResult, console: Console) -> None:
    unchanged = len(result.images) - len(result.written)
    console.print(Text(f"wrote {result.folder}"))
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
    for path in result.no_face:
        console.print(Text(f"  no face: {path}"), style="yellow")


def run_prep(args: argparse.Namespace) -> int:
    result = prep_dataset(args.src, args.out, _prep_options(args))
    print_prep_result(result, Console())
    return 0


def _plan_inputs(args: argparse.Namespace) -> tuple[int, int | None]:
    """Image count and repeats from the flags, or counted from a dataset folder."""
    if args.folder is None:
        if args.images is None:
            raise LorakitError("plan needs a dataset folder or --images N")
        return args.images, args.repeats
    scan = scan_dataset(args.folder, args.caption_ext)
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
    images, repeats = _plan_inputs(args)
    plan = make_plan(
        images,
        args.epochs,
        batch_size=args.batch_size,
        repeats=repeats,
        target_steps=args.target_steps,
    )
    console = Console()
    for line in plan_lines(plan, args.target_steps):
        console.print(line)
    console.print(Text(f"folder name: img/{plan.repeats}_<trigger> <class>/"), style="dim")
    return 0
