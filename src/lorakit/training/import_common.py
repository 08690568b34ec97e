"""What the kohya_ss and CivitAI imports share: the result, typed JSON access, the
optimizer, scheduler and resolution fields both formats carry.

An import turns a settings file into nested `TrainConfig` overrides
(``{"network": {"rank": 96}}``), to be merged under a TOML file and ``--set`` options, plus
notes that say, one line each, which settings lorakit did not carry over and why, so
nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from lorakit.errors import LorakitError
from lorakit.training.config import OptimizerName, SchedulerName, config_from_dict

_OPTIMIZERS = set(get_args(OptimizerName))
_OPTIMIZER_ALIASES = {"pagedadamw8bit": "adamw8bit", "dadaptation": "dadaptadam"}
_SCHEDULERS = set(get_args(SchedulerName))
_ANNOTATION = re.compile(r"\s*-->.*$", re.MULTILINE)


def words(text: str) -> frozenset[str]:
    """A key table written as whitespace-separated names."""
    return frozenset(text.split())


@dataclass
class ImportResult:
    """Nested `TrainConfig` overrides, notes on what was not carried over, sample prompts.

    `sample_prompts` is the prompt text kohya keeps inline; `sampling.prompts` names a file,
    so the caller writes this text to one (see `lorakit train --from-kohya`).
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sample_prompts: str | None = None


class Reader:
    """Typed access to one JSON object; a bad value is a one-line error naming file and key."""

    def __init__(self, path: Path, data: Mapping[str, Any], result: ImportResult) -> None:
        self.path = path
        self.data = data
        self.result = result

    def set(self, dotted: str, value: Any) -> None:
        section, key = dotted.split(".")
        self.result.overrides.setdefault(section, {})[key] = value

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    def bad(self, key: str, kind: str) -> LorakitError:
        value = self.data[key]
        return LorakitError(f"{self.path}: '{key}' must be {kind}, got {value!r}; fix the value")

    def text(self, key: str) -> str:
        value = self.data.get(key)
        return "" if value is None else str(value).strip()

    def number(self, key: str) -> float | None:
        """A float, or None for an empty field (the GUI saves blank boxes as "")."""
        raw = self.data.get(key)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, bool):
            raise self.bad(key, "a number")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise self.bad(key, "a number") from None

    def integer(self, key: str) -> int | None:
        value = self.number(key)
        if value is not None and not value.is_integer():
            raise self.bad(key, "a whole number")
        return None if value is None else int(value)

    def flag(self, key: str) -> bool | None:
        raw = self.data.get(key)
        if raw is None or isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in {"true", "false"}:
            return raw.strip().lower() == "true"
        raise self.bad(key, "true or false")

    def value(self, key: str, kind: str) -> Any:
        """`kind` is text, number, integer or flag; count and amount are a positive integer
        and number, where kohya writes 0 for "not set"."""
        if kind in ("count", "amount"):
            value = self.integer(key) if kind == "count" else self.number(key)
            return value or None
        return getattr(self, kind)(key)

    def copy(self, key: str, dotted: str, kind: str) -> None:
        value = self.value(key, kind)
        if value not in (None, ""):
            self.set(dotted, value)

    def copy_all(self, table: Mapping[str, tuple[str, str]]) -> None:
        for key, (dotted, kind) in table.items():
            self.copy(key, dotted, kind)


def read_json(path: Path, fix: str) -> tuple[dict[str, Any], list[str]]:
    """The JSON object in `path`; guide-style `--> remarks` after a value are dropped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LorakitError(f"{path}: file not found; check the path") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise LorakitError(f"{path}: not a JSON text file; {fix}") from None
    notes: list[str] = []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        stripped = _ANNOTATION.sub("", text)
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise LorakitError(f"{path}: not valid JSON ({exc.msg} at {where}); {fix}") from None
        notes.append("remarks written after values ('--> ...') were ignored")
    if not isinstance(data, dict):
        raise LorakitError(f"{path}: expected a JSON object of settings; {fix}")
    return data, notes


def _optimizer(reader: Reader, key: str) -> None:
    raw = reader.text(key)
    if not raw:
        return
    name = raw.lower().replace("_", "").replace(" ", "")
    if name in _OPTIMIZER_ALIASES:
        reader.note(f"{key} {raw}: trained with lorakit's {_OPTIMIZER_ALIASES[name]}")
        name = _OPTIMIZER_ALIASES[name]
    if name not in _OPTIMIZERS:
        supported = ", ".join(sorted(_OPTIMIZERS))
        reader.note(f"{key} {raw} is not supported (lorakit has {supported}); default kept")
        return
    reader.set("optimizer.name", name)


def _arg_value(raw: str) -> Any:
    """Optimizer argument text as kohya passes it: bools, numbers, comma lists, strings."""
    if raw.lower() in {"true", "false"}:
        return raw.lower() == "true"
    if "," in raw:
        return [_arg_value(part.strip()) for part in raw.strip("()[]").split(",")]
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def _optimizer_args(reader: Reader, key: str) -> None:
    """ "a=1 b=True" (or a JSON-style list of such) → optimizer.args; weight_decay has a field."""
    raw = reader.data.get(key) or ""
    tokens = raw if isinstance(raw, list) else shlex.split(str(raw))
    args: dict[str, Any] = {}
    for token in tokens:
        name, sep, value = str(token).partition("=")
        if not sep or not name.strip():
            raise LorakitError(
                f"{reader.path}: '{key}' item {token!r} is not name=value; fix the value"
            )
        args[name.strip()] = _arg_value(value.strip())
    if "weight_decay" in args:
        decay = args.pop("weight_decay")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)):
            raise LorakitError(f"{reader.path}: '{key}' weight_decay must be a number; fix it")
        reader.set("optimizer.weight_decay", float(decay))
    if args:
        reader.set("optimizer.args", args)


def optimizer_settings(reader: Reader, name_key: str, args_key: str) -> None:
    """Optimizer and its args. sd-scripts runs Adafactor with relative_step=True (its own
    step size; the LRs are unused) unless the args say otherwise, while lorakit's default is
    False: the import writes kohya's choice down so a guide's LR of 1.0 stays harmless."""
    _optimizer(reader, name_key)
    _optimizer_args(reader, args_key)
    optimizer = reader.result.overrides.get("optimizer", {})
    args = optimizer.get("args", {})
    if optimizer.get("name") == "adafactor" and "relative_step" not in args:
        reader.set("optimizer.args", {"relative_step": True, "scale_parameter": True, **args})
        reader.note("Adafactor without relative_step: kohya's default relative_step=True kept")


def scheduler(reader: Reader, key: str) -> None:
    raw = reader.text(key)
    if not raw:
        return
    if raw.lower() not in _SCHEDULERS:
        reader.note(f"{key} {raw} is not supported (lorakit has {', '.join(sorted(_SCHEDULERS))})")
        return
    reader.set("scheduler.name", raw.lower())


def resolution(reader: Reader, key: str) -> None:
    """ "768,768" or 1024 → one side; a non-square "w,h" keeps its pixel area."""
    raw = reader.text(key)
    if not raw:
        return
    try:
        sides = [int(float(part)) for part in raw.split(",")]
    except ValueError:
        raise reader.bad(key, 'a size like "768,768"') from None
    if len(sides) not in (1, 2) or min(sides) < 64:
        raise reader.bad(key, 'a size like "768,768"')
    side = sides[0]
    if len(sides) == 2 and sides[0] != sides[1]:
        side = round(math.sqrt(sides[0] * sides[1]) / 64) * 64
        reader.note(f"{key} {raw} is not square: lorakit trains at {side} (same pixel area)")
    reader.set("dataset.resolution", side)


@dataclass(frozen=True)
class Format:
    """How to recognise one settings format, and what to tell a user who gave the other."""

    fix: str  # what to give instead, ending each error
    markers: tuple[str, ...]  # keys of which the file must hold one
    what: str  # the format's name in errors
    other_key: str  # a key of the other format ...
    other_option: str  # ... and the option that reads it


def open_reader(path: Path, spec: Format) -> Reader:
    """A reader over the JSON object in `path`, which must be in format `spec`: a CivitAI
    file given to --from-kohya (or the reverse) is told which option reads it."""
    data, notes = read_json(path, spec.fix)
    if not any(key in data for key in spec.markers):
        hint = f"use {spec.other_option}" if spec.other_key in data else spec.fix
        raise LorakitError(f"{path}: not {spec.what} (no {spec.markers[0]}); {hint}")
    return Reader(Path(path), data, ImportResult(notes=notes))


def validated(reader: Reader) -> ImportResult:
    """Fail here, naming the imported file, if a value is outside lorakit's ranges."""
    config_from_dict(reader.result.overrides, source=str(reader.path))
    return reader.result
