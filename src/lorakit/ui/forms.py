"""The training form: every key of `TrainConfig`, generated from the config model itself.

Generating the fields from the pydantic model keeps the form complete as settings are
added. A submitted form becomes the nested data of a TOML file holding only the values
that differ from the defaults (so a preset can still fill the rest, as on the command
line), and validation is the config's own: its one-line error is shown beside the field.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import tomli_w

from lorakit.training.config import LEGACY_FLAGS, TrainConfig

BASIC = (
    "model.path",
    "dataset.path",
    "dataset.trigger",
    "dataset.resolution",
    "dataset.repeats",
    "network.rank",
    "network.alpha",
    "optimizer.name",
    "optimizer.unet_lr",
    "optimizer.text_encoder_lr",
    "training.epochs",
    "training.batch_size",
    "training.mixed_precision",
    "saving.output_dir",
    "saving.name",
    "sampling.prompts",
)
PATH_KEYS = (
    "model.path",
    "model.clip_l",
    "model.t5xxl",
    "model.ae",
    "dataset.path",
    "dataset.reg_path",
    "network.weights",
    "sampling.prompts",
    "saving.output_dir",
)


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # bool | choice | text | number | toml
    default: Any
    options: tuple[str, ...] = ()

    @property
    def basic(self) -> bool:
        return self.key in BASIC

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]


def _choices(annotation: Any) -> tuple[str, ...] | None:
    if typing.get_origin(annotation) is Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _choices(args[0])
    return None


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    options = _choices(annotation)
    if options is not None:
        return "choice", options
    if annotation is bool:
        return "bool", ()
    if annotation is str:
        return "text", ()
    plain = {a for a in typing.get_args(annotation) if a is not type(None)} or {annotation}
    if plain <= {int, float}:
        return "number", ()
    return "toml", ()


def config_fields() -> list[Field]:
    fields = []
    for section, info in TrainConfig.model_fields.items():
        model = info.annotation
        optional = [a for a in typing.get_args(model) if a is not type(None)]
        model = optional[0] if optional else model  # `[flux]`: a section only FLUX.1 reads
        assert isinstance(model, type)
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            kind, options = _kind(field.annotation)
            default = field.get_default(call_default_factory=True)
            fields.append(Field(f"{section}.{name}", kind, default, options))
    return fields


FIELDS = config_fields()


def get(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _put(data: dict[str, Any], key: str, value: Any) -> None:
    section, name = key.split(".", 1)
    data.setdefault(section, {})[name] = value


def display(field: Field, value: Any) -> str:
    """A value as the form shows it (TOML literals for lists and tables)."""
    if value is None:
        return ""
    if isinstance(value, bool) and field.key in LEGACY_FLAGS:  # saved by an older lorakit
        value = LEGACY_FLAGS[field.key][value]
    if field.kind == "bool":
        return "true" if value else "false"
    if field.kind == "toml" and not isinstance(value, str):
        return _inline(value)
    return str(value)


def _inline(value: Any) -> str:
    """A TOML literal on one line (tomli_w writes tables as sections)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _parse(field: Field, raw: str) -> Any:
    """The form text as a value; text that is no TOML literal stays a string, so the
    config's validation names the field and what it expected."""
    if field.kind in ("text", "choice"):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def form_to_data(form: Mapping[str, str]) -> dict[str, Any]:
    """Nested config data from a submitted form: only values that differ from the default.

    Checkboxes send nothing when unticked, so a hidden `present` list names the fields the
    form showed."""
    data: dict[str, Any] = {}
    for field in FIELDS:
        if field.kind == "bool":
            value: Any = form.get(field.key) in ("on", "true", "1")
        else:
            raw = str(form.get(field.key, "")).strip()
            if not raw:
                continue
            value = _parse(field, raw)
        if value != field.default:
            _put(data, field.key, value)
    return data


def values(data: Mapping[str, Any]) -> dict[str, str]:
    """What each field shows: the data's value, else the default."""
    shown = {}
    for field in FIELDS:
        value = get(data, field.key)
        shown[field.key] = display(field, field.default if value is None else value)
    return shown


def field_of(message: str, data: Mapping[str, Any]) -> str | None:
    """The config key a validation message is about: the first key it names, else the
    path setting whose file it names (a missing model file)."""
    hits = [(message.find(f.key), f.key) for f in FIELDS if f.key in message]
    if hits:
        return min(hits)[1]
    named = [key for key in PATH_KEYS if get(data, key) and str(get(data, key)) in message]
    return named[0] if named else None
