"""sd-scripts options in kohya_ss' `additional_parameters` box.

kohya_ss appends that text to sd-scripts' command line after its own settings, so an
option there wins over the GUI field of the same name, and a list option
(``--optimizer_args d_coef=2 ...``) replaces the field's list. The import reads it the
same way: each option becomes the GUI key it overrides, and is then read like the field;
options that do not change what is trained, or that lorakit does not do, are named in a
note.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.training.import_common import words

# sd-scripts option → the kohya_ss key that carries the same setting.
_RENAMED = {
    "optimizer_type": "optimizer",
    "resolution": "max_resolution",
    "cache_text_encoder_outputs": "sdxl_cache_text_encoder_outputs",
    "sample_prompts": "sample_prompts_file",  # a file; the GUI key holds the prompts
}
# Options that take a list of values (argparse nargs="*").
_LISTS = words("optimizer_args network_args lr_scheduler_args")
# Options with no GUI key that the import reads itself.
_OWN = words(
    "network_module network_train_unet_only network_train_text_encoder_only lr_warmup_steps"
)
# Options that do not change what is trained.
_NO_EFFECT = words(
    """
    log_prefix log_with logging_dir log_tracker_name log_tracker_config log_config
    wandb_api_key wandb_run_name xformers sdpa mem_eff_attn max_data_loader_n_workers
    persistent_data_loader_workers lowram highvram no_half_vae vae_batch_size save_model_as
    save_state save_state_on_train_end save_last_n_epochs_state save_last_n_steps_state
    console_log_level console_log_file console_log_simple output_config training_comment
    sample_sampler no_metadata skip_cache_check
    """
)


@dataclass
class CommandLine:
    """The GUI keys `additional_parameters` sets, and the names of the options read."""

    keys: dict[str, Any] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    no_effect: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        def options(names: list[str]) -> str:
            return ", ".join(f"--{name}" for name in names)

        lines = []
        if self.applied:
            lines.append(
                f"additional_parameters {options(self.applied)}: read as sd-scripts reads "
                "them (they win over the GUI fields)"
            )
        if self.no_effect:
            lines.append(
                f"additional_parameters {options(self.no_effect)}: logging or speed "
                "options, no effect on what lorakit trains"
            )
        if self.unsupported:
            lines.append(
                f"additional_parameters {options(self.unsupported)}: not supported by "
                "lorakit; ignored"
            )
        return lines


def _options(path: Path, text: str) -> list[tuple[str, list[str]]]:
    """`--name value ...` / `--name=value` pairs; a bare option has no values."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise LorakitError(f"{path}: 'additional_parameters' cannot be split ({exc})") from None
    options: list[tuple[str, list[str]]] = []
    for token in tokens:
        if token.startswith("--"):
            name, sep, value = token[2:].partition("=")
            options.append((name, [value] if sep else []))
        elif options:
            options[-1][1].append(token)
        else:
            raise LorakitError(
                f"{path}: 'additional_parameters' must start with an --option, "
                f"got {token!r}; fix the value"
            )
    return options


def _value(path: Path, name: str, values: list[str]) -> Any:
    """A list for list options (and a two-value text_encoder_lr), True for a switch."""
    if name in _LISTS or (name == "text_encoder_lr" and len(values) > 1):
        return values
    if len(values) > 1:
        raise LorakitError(
            f"{path}: 'additional_parameters' --{name} takes one value, got {values}"
        )
    return values[0] if values else True


def read_command_line(path: Path, text: str, gui_keys: Collection[str]) -> CommandLine:
    """What the options in `text` set, as GUI keys (`gui_keys`: those the import knows)."""
    line = CommandLine()
    for name, values in _options(path, text):
        key = _RENAMED.get(name, name)
        if name in _NO_EFFECT:
            line.no_effect.append(name)
        elif key in gui_keys or name in _OWN:
            line.keys[key] = _value(path, name, values)
            line.applied.append(name)
        else:
            line.unsupported.append(name)
    return line
