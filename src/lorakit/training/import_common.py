"""What the kohya_ss and CivitAI imports share: the result, typed JSON access, and the
network, optimizer, scheduler and resolution fields both formats carry.

An import turns a settings file into nested `TrainConfig` overrides
(``{"network": {"rank": 96}}``), to be merged under a TOML file and ``--set`` options, plus
notes that say, one line each, which settings lorakit did not carry over and why, so
nothing is dropped silently. Both trainers run sd-scripts, so values are read the way
sd-scripts reads them: alpha 0 is the rank, optimizer arguments are Python literals,
Adafactor's step size is relative unless the arguments say otherwise.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from lorakit.errors import LorakitError
from lorakit.training.config import (
    NetworkSection,
    OptimizerName,
    SchedulerName,
    config_from_dict,
)
from lorakit.training.config_checks import step_multiples

_OPTIMIZERS = set(get_args(OptimizerName))
# sd-scripts optimizers lorakit trains with one of its own whose LR means the same
# (a step size for the Adam/Lion kinds, a multiplier of 1 for the D-Adaptation family).
_OPTIMIZER_ALIASES = {
    "pagedadamw8bit": "adamw8bit",
    "pagedadamw": "adamw",
    "pagedadamw32bit": "adamw",
    "lion8bit": "lion",
    "pagedlion8bit": "lion",
    "dadaptation": "dadaptadam",
    "dadaptadampreprint": "dadaptadam",
    "dadaptadagrad": "dadaptadam",
    "dadaptadan": "dadaptadam",
    "dadaptadanip": "dadaptadam",
    "dadaptlion": "dadaptadam",
    "dadaptsgd": "dadaptadam",
}
# The weight decay each optimizer uses when its arguments name none (its own default).
_OWN_WEIGHT_DECAY = {
    "adamw": 0.01,
    "adamw8bit": 0.01,
    "adafactor": 0.0,
    "prodigy": 0.0,
    "dadaptadam": 0.0,
    "lion": 0.0,
}
# transformers' Adafactor defaults, with sd-scripts' relative_step=True.
_SD_SCRIPTS_ADAFACTOR = {"scale_parameter": True, "relative_step": True, "warmup_init": False}
_SCHEDULERS = set(get_args(SchedulerName))
_ANNOTATION = re.compile(r"\s*-->.*$", re.MULTILINE)
_BOOLS = {"true": True, "false": False}
SD_SCRIPTS_RANK = 4  # network_dim when none reaches sd-scripts


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
    """Typed access to one JSON object; a bad value is a one-line error naming file and key.

    `keys` are the keys the file itself holds (`data` may add a trainer's defaults)."""

    def __init__(self, path: Path, data: Mapping[str, Any], result: ImportResult) -> None:
        self.path = path
        self.data = data
        self.keys = frozenset(data)
        self.result = result

    def set(self, dotted: str, value: Any) -> None:
        section, key = dotted.split(".")
        self.result.overrides.setdefault(section, {})[key] = value

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".")
        return self.result.overrides.get(section, {}).get(key)

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    def error(self, text: str) -> LorakitError:
        return LorakitError(f"{self.path}: {text}")

    def bad(self, key: str, kind: str) -> LorakitError:
        return self.error(f"'{key}' must be {kind}, got {self.data[key]!r}; fix the value")

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
        if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
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


def network_size(reader: Reader, dim_key: str, alpha_key: str) -> None:
    """Rank and alpha as sd-scripts' networks.lora uses them: no rank is 4, and an alpha of
    0 (or none) is the rank itself, i.e. no scaling; a blank alpha is sd-scripts' 1."""
    rank = reader.integer(dim_key) if dim_key in reader.data else None
    if dim_key in reader.data and not rank:
        reader.note(f"{dim_key} {reader.text(dim_key) or 'blank'}: sd-scripts' rank 4 used")
        rank = SD_SCRIPTS_RANK
    if rank is not None:
        reader.set("network.rank", rank)
    if alpha_key not in reader.data:
        return
    alpha = reader.number(alpha_key)
    if alpha is None:
        reader.note(f"{alpha_key} is blank: sd-scripts' alpha 1 used")
        alpha = 1.0
    elif alpha == 0:
        alpha = float(rank or NetworkSection().rank)
        reader.note(f"{alpha_key} 0: sd-scripts uses alpha = rank ({alpha:g}), i.e. no scaling")
    reader.set("network.alpha", alpha)


def _optimizer(reader: Reader, raw: str, key: str) -> str:
    name = raw.lower().replace("_", "").replace(" ", "")
    if name in _OPTIMIZER_ALIASES:
        reader.note(f"{key} {raw}: trained with lorakit's {_OPTIMIZER_ALIASES[name]}")
        name = _OPTIMIZER_ALIASES[name]
    if name not in _OPTIMIZERS:
        supported = ", ".join(sorted(_OPTIMIZERS))
        raise reader.error(
            f"{key} {raw} is not supported (lorakit trains {supported}); pick one of those"
        )
    return name


def _plain(value: Any) -> Any:
    """A literal as TOML can keep it: tuples become lists."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def arg_value(text: str) -> Any:
    """An argument value as sd-scripts reads it (`ast.literal_eval`), a string where it is
    not a Python literal; true/false in any case are booleans."""
    if text.lower() in _BOOLS:
        return _BOOLS[text.lower()]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if value is None or isinstance(value, (bool, int, float, str, tuple, list)):
        return _plain(value)
    return text


def _optimizer_args(reader: Reader, key: str) -> dict[str, Any]:
    """kohya_ss strips the quotes and splits on spaces ("a=1 b=True"); a list (from
    additional_parameters) is already split."""
    raw = reader.data.get(key) or ""
    tokens = raw if isinstance(raw, list) else str(raw).replace('"', "").split()
    args: dict[str, Any] = {}
    for token in tokens:
        name, sep, value = str(token).partition("=")
        if not sep or not name.strip():
            raise reader.error(f"'{key}' item {token!r} is not name=value; fix the value")
        parsed = arg_value(value.strip())
        if parsed is None:
            reader.note(f"{key} {name.strip()}=None: left to the optimizer's default")
            continue
        args[name.strip()] = parsed
    return args


def _adafactor_args(reader: Reader, given: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts' Adafactor: relative_step unless the arguments say otherwise, and
    warmup_init turns it back on (transformers refuses warmup_init without it)."""
    args = {**_SD_SCRIPTS_ADAFACTOR, **given}
    if "relative_step" not in given:
        reader.note("Adafactor without relative_step: sd-scripts' relative_step=True kept")
    if args["warmup_init"] and not args["relative_step"]:
        args["relative_step"] = True
        reader.note("Adafactor warmup_init=True needs relative_step: turned on, as sd-scripts does")
    return args


def optimizer_settings(reader: Reader, name: str, args_key: str, name_key: str) -> None:
    """Optimizer, its args and weight decay: the decay the optimizer uses by itself unless
    the args set one (lorakit's 0.01 default would add decay Adafactor or Prodigy lack)."""
    if not name:
        return
    chosen = _optimizer(reader, name, name_key)
    args = _optimizer_args(reader, args_key)
    decay = args.pop("weight_decay", _OWN_WEIGHT_DECAY[chosen])
    if isinstance(decay, bool) or not isinstance(decay, (int, float)):
        raise reader.error(f"'{args_key}' weight_decay must be a number; fix it")
    if chosen == "adafactor":
        args = _adafactor_args(reader, args)
    reader.set("optimizer.name", chosen)
    reader.set("optimizer.weight_decay", float(decay))
    reader.set("optimizer.args", args)


def scheduler(reader: Reader, key: str) -> None:
    raw = reader.text(key)
    if not raw:
        return
    if raw.lower() not in _SCHEDULERS:
        supported = ", ".join(sorted(_SCHEDULERS))
        reader.note(f"{key} {raw} is not supported (lorakit has {supported}); cosine used")
        return
    reader.set("scheduler.name", raw.lower())


def resolution(reader: Reader, key: str, step: int) -> None:
    """ "768,768" or 1024 → one side, a multiple of the bucket step (else an error that
    names the nearest ones). A non-square "w,h" becomes the largest square of the step
    within its pixel area, the square bucket sd-scripts makes for it, and a note says so."""
    raw = reader.text(key)
    if not raw:
        return
    try:
        sides = [int(float(part)) for part in raw.split(",")]
    except ValueError:
        raise reader.bad(key, 'a size like "768,768"') from None
    if len(sides) not in (1, 2) or min(sides) < 64:
        raise reader.bad(key, 'a size like "768,768"')
    width, height = sides[0], sides[-1]
    if width == height and width % step:
        raise reader.error(
            f"'{key}' {raw} is not a multiple of the bucket step {step}, so the buckets "
            f"cannot honour it; use {step_multiples(width, step)}"
        )
    side = width
    if width != height:
        side = max(step, math.isqrt(width * height) // step * step)
        reader.note(
            f"{key} {raw} is not square: lorakit trains at {side}, the largest square of "
            f"{step}-pixel steps within its pixel area"
        )
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
