"""Read the settings people already have: kohya_ss GUI JSON files and CivitAI trainer JSON.

The guides' users arrive with a kohya_ss config they saved (or a preset they downloaded)
and with the CivitAI settings block of guide 000. Importing turns either into nested
`TrainConfig` overrides (``{"network": {"rank": 96}}``), to be merged under a TOML file and
``--set`` options, plus notes that say, one line each, which settings lorakit did not carry
over and why, so nothing is dropped silently.

kohya keeps repeats in the image folder's name (``img/10_name``), not in its JSON: the import
points `dataset.path` at the same folder and the dataset scan reads the repeats from it.
CivitAI has no folders, so its ``numRepeats`` becomes `dataset.repeats`.
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
_LOCON_TYPES = {"Kohya LoCon", "LyCORIS/LoCon", "LoCon"}
_ANNOTATION = re.compile(r"\s*-->.*$", re.MULTILINE)
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _words(text: str) -> frozenset[str]:
    """A key table written as whitespace-separated names."""
    return frozenset(text.split())


# kohya_ss keys that change training but have no lorakit equivalent. A note is written only
# when a file switches one on: these are off when 0, "" or false, or at the GUI default below.
_KOHYA_UNSUPPORTED = _words(
    """
    adaptive_noise_scale ip_noise_gamma noise_offset_random_strength
    ip_noise_gamma_random_strength rank_dropout module_dropout scale_weight_norms
    debiased_estimation_loss min_timestep max_timestep max_token_length weighted_captions
    v_pred_like_loss scale_v_pred_loss_like_noise_pred stop_text_encoder_training
    stop_text_encoder_training_pct full_fp16 full_bf16 fp8_base dataset_config
    additional_parameters vae resume random_crop bucket_no_upscale
    caption_dropout_every_n_epochs lr_scheduler_args lr_scheduler_type masked_loss loss_type
    save_last_n_steps down_lr_weight mid_lr_weight up_lr_weight block_lr_zero_threshold
    block_dims block_alphas conv_block_dims conv_block_alphas
    """
)
_KOHYA_DEFAULTS = {"max_timestep": 1000, "max_token_length": 75, "loss_type": "l2"}

_KOHYA_IRRELEVANT = _words(
    """
    xformers mem_eff_attn max_data_loader_n_workers persistent_data_loader_workers
    num_cpu_threads_per_process num_processes num_machines multi_gpu gpu_ids main_process_port
    dynamo_backend dynamo_mode dynamo_use_dynamic dynamo_use_fullgraph
    extra_accelerate_launch_args logging_dir log_with log_tracker_name log_tracker_config
    use_wandb wandb_api_key wandb_run_name huggingface_path_in_repo huggingface_repo_id
    huggingface_repo_type huggingface_repo_visibility huggingface_token
    resume_from_huggingface save_state_to_huggingface async_upload metadata_author
    metadata_description metadata_license metadata_tags metadata_title training_comment
    model_list save_model_as save_as_bool save_state save_state_on_train_end
    save_last_n_steps_state sample_sampler vae_batch_size sdxl_no_half_vae LyCORIS_preset
    use_cp use_tucker use_scalar factor decompose_both train_on_input unit train_norm
    bypass_mode constrain rescaled rank_dropout_scale dora_wd dim_from_weights
    no_token_padding conv_alphas conv_dims huber_c huber_schedule noise_offset_type
    multires_noise_iterations multires_noise_discount
    """
)


@dataclass
class ImportResult:
    """Nested `TrainConfig` overrides, notes on what was not carried over, sample prompts.

    `sample_prompts` is the prompt text kohya keeps inline; `sampling.prompts` names a file,
    so the caller writes this text to one (see `lorakit train --from-kohya`).
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sample_prompts: str | None = None


class _Reader:
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


def _read_json(path: Path, fix: str) -> tuple[dict[str, Any], list[str]]:
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


def _optimizer(reader: _Reader, key: str) -> None:
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


def _optimizer_args(reader: _Reader, key: str) -> None:
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


def _optimizer_settings(reader: _Reader, name_key: str, args_key: str) -> None:
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


def _scheduler(reader: _Reader, key: str) -> None:
    raw = reader.text(key)
    if not raw:
        return
    if raw.lower() not in _SCHEDULERS:
        reader.note(f"{key} {raw} is not supported (lorakit has {', '.join(sorted(_SCHEDULERS))})")
        return
    reader.set("scheduler.name", raw.lower())


def _resolution(reader: _Reader, key: str) -> None:
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


# kohya_ss keys copied as they are: key → (TrainConfig field, kind of value).
_KOHYA_COPIES = {
    "pretrained_model_name_or_path": ("model.path", "text"),
    "train_data_dir": ("dataset.path", "text"),
    "reg_data_dir": ("dataset.reg_path", "text"),
    "prior_loss_weight": ("dataset.prior_loss_weight", "number"),
    "enable_bucket": ("dataset.enable_buckets", "flag"),
    "min_bucket_reso": ("dataset.bucket_min", "count"),
    "max_bucket_reso": ("dataset.bucket_max", "count"),
    "flip_aug": ("dataset.flip_aug", "flag"),
    "color_aug": ("dataset.color_aug", "flag"),
    "shuffle_caption": ("dataset.shuffle_caption", "flag"),
    "keep_tokens": ("dataset.keep_tokens", "integer"),
    "caption_dropout_rate": ("dataset.caption_dropout", "number"),
    "network_dim": ("network.rank", "count"),
    "network_alpha": ("network.alpha", "amount"),
    "network_dropout": ("network.dropout", "number"),
    "max_grad_norm": ("optimizer.max_grad_norm", "number"),
    "lr_scheduler_num_cycles": ("scheduler.num_cycles", "count"),
    "lr_scheduler_power": ("scheduler.power", "amount"),
    "max_train_steps": ("training.max_train_steps", "count"),
    "train_batch_size": ("training.batch_size", "count"),
    "gradient_accumulation_steps": ("training.grad_accum", "count"),
    "mixed_precision": ("training.mixed_precision", "text"),
    "seed": ("training.seed", "count"),
    "gradient_checkpointing": ("training.gradient_checkpointing", "flag"),
    "clip_skip": ("training.clip_skip", "count"),
    "min_snr_gamma": ("training.min_snr_gamma", "amount"),
    "output_dir": ("saving.output_dir", "text"),
    "output_name": ("saving.name", "text"),
    "save_last_n_epochs": ("saving.keep_last", "count"),
}


def _kohya_model(reader: _Reader) -> None:
    model = reader.text("pretrained_model_name_or_path")
    local = Path(model).exists() or Path(model).suffix.lower() in {".safetensors", ".ckpt"}
    if _HUB_ID.fullmatch(model) and not local:
        reader.note(
            f"pretrained_model_name_or_path {model} is a Hugging Face id and lorakit works "
            "offline: set model.path to a local checkpoint or diffusers folder"
        )
    if reader.flag("v2"):
        reader.note("v2: SD 2.x base models are not supported (lorakit trains SD1.5 and SDXL)")
    sdxl = reader.flag("sdxl")
    if sdxl is not None:
        reader.set("model.family", "sdxl" if sdxl else "sd15")
    if sdxl and "sdxl_cache_text_encoder_outputs" in reader.data:
        reader.copy("sdxl_cache_text_encoder_outputs", "training.cache_text_encoder", "flag")
    if reader.flag("v_parameterization"):
        reader.set("training.prediction", "v_prediction")
    weights = reader.text("network_weights") or reader.text("lora_network_weights")
    if weights:
        reader.set("network.weights", weights)


def _kohya_dataset(reader: _Reader) -> None:
    _resolution(reader, "max_resolution")
    step = reader.integer("bucket_reso_steps")
    if step is not None and (step < 8 or step % 8):
        reader.note(f"bucket_reso_steps {step} is not a multiple of 8; lorakit's default kept")
    elif step:
        reader.set("dataset.bucket_step", step)
    ext = reader.text("caption_extension")
    if ext == ".none-use-foldername":
        reader.note(
            "caption_extension: captions from folder names are not supported; "
            "lorakit reads .txt caption files"
        )
    elif "caption_extension" in reader.data and not ext:
        reader.note(
            "caption_extension is empty (kohya then reads .caption files); "
            "lorakit reads .txt, set dataset.caption_ext to change it"
        )
    elif ext:
        reader.set("dataset.caption_ext", ext)


def _kohya_network(reader: _Reader) -> None:
    lora_type = reader.text("LoRA_type") or "Standard"
    if lora_type in _LOCON_TYPES:
        reader.copy("conv_dim", "network.conv_rank", "count")
        reader.copy("conv_alpha", "network.conv_alpha", "amount")
    elif lora_type != "Standard":
        reader.note(
            f"LoRA_type {lora_type} is not supported: a standard LoRA "
            "(LoCon convs off) is trained with the same rank and alpha"
        )


def _kohya_learning_rates(reader: _Reader) -> None:
    """kohya_ss's rule: blank U-Net/TE rates fall back to learning_rate; one blank rate
    while the other is set trains only the other part (lorakit: that part's LR is 0)."""
    base = reader.number("learning_rate") or 0.0
    unet = reader.number("unet_lr") or 0.0
    te = reader.number("text_encoder_lr") or 0.0
    if not unet and not te:
        unet = te = base
    if unet or te:
        reader.set("optimizer.unet_lr", unet)
        reader.set("optimizer.text_encoder_lr", te)
    else:
        reader.note("no learning rate is set; lorakit's defaults kept")
    _optimizer_settings(reader, "optimizer", "optimizer_args")
    _scheduler(reader, "lr_scheduler")


def _kohya_length(reader: _Reader) -> None:
    """kohya's "epoch" box is the epoch count; "max_train_epochs" overrides it when set."""
    epochs = reader.value("max_train_epochs", "count") or reader.value("epoch", "count")
    if epochs:
        reader.set("training.epochs", epochs)
    steps = reader.value("max_train_steps", "count")
    warmup = reader.number("lr_warmup") or 0.0
    if warmup and steps:
        reader.set("scheduler.warmup_steps", round(warmup * steps / 100))
    elif warmup:
        reader.note(
            f"lr_warmup {warmup:g}% of steps: the step count is not in the file, "
            "set scheduler.warmup_steps from the plan that --dry-run prints"
        )


def _kohya_training(reader: _Reader) -> None:
    cache = reader.flag("cache_latents")
    if cache is not None:
        to_disk = reader.flag("cache_latents_to_disk")
        reader.set("training.cache_latents", ("disk" if to_disk else "memory") if cache else "none")
    if reader.text("noise_offset_type") == "Multires":
        reader.note(
            "noise_offset_type Multires (multi-resolution noise) is not supported; "
            "trained without a noise offset"
        )
    else:
        reader.copy("noise_offset", "training.noise_offset", "number")


def _kohya_outputs(reader: _Reader) -> None:
    for key in ("save_every_n_epochs", "save_every_n_steps"):
        if key in reader.data:
            reader.set(f"saving.{key}", reader.value(key, "count"))
    precision = reader.text("save_precision")
    if precision:
        reader.set("saving.save_precision", "fp32" if precision == "float" else precision)
    prompts = reader.text("sample_prompts")
    if prompts:
        reader.result.sample_prompts = prompts
        reader.set("sampling.every_n_steps", reader.value("sample_every_n_steps", "count"))
        reader.set("sampling.every_n_epochs", reader.value("sample_every_n_epochs", "count"))


_KOHYA_MAPPED = set(_KOHYA_COPIES) | _words(
    """
    v2 sdxl sdxl_cache_text_encoder_outputs v_parameterization network_weights
    lora_network_weights max_resolution bucket_reso_steps caption_extension LoRA_type conv_dim
    conv_alpha learning_rate unet_lr text_encoder_lr optimizer optimizer_args lr_scheduler
    max_train_epochs epoch lr_warmup cache_latents cache_latents_to_disk noise_offset
    save_every_n_epochs save_every_n_steps save_precision sample_prompts sample_every_n_steps
    sample_every_n_epochs
    """
)


def _kohya_leftovers(reader: _Reader) -> None:
    """One note per unsupported setting that is switched on, one for unknown keys."""
    for key in sorted(_KOHYA_UNSUPPORTED & set(reader.data)):
        value, default = reader.data[key], _KOHYA_DEFAULTS.get(key)
        if value not in (None, "", 0, False) and str(value) != str(default):
            reader.note(f"{key} = {value!r} is not supported by lorakit; ignored")
    known = _KOHYA_MAPPED | _KOHYA_IRRELEVANT | _KOHYA_UNSUPPORTED
    unknown = sorted(set(reader.data) - known)
    if unknown:
        reader.note(f"unknown kohya_ss keys ignored: {', '.join(unknown)}")


def _validated(path: Path, result: ImportResult) -> ImportResult:
    """Fail here, naming the imported file, if a value is outside lorakit's ranges."""
    config_from_dict(result.overrides, source=str(path))
    return result


def import_kohya(path: Path) -> ImportResult:
    """Overrides from a kohya_ss GUI LoRA config (a full save or a partial preset)."""
    fix = "give a kohya_ss LoRA config saved by its GUI"
    data, notes = _read_json(path, fix)
    if "network_dim" not in data and "LoRA_type" not in data:
        hint = "use --from-civitai" if "networkDim" in data else fix
        raise LorakitError(f"{path}: not a kohya_ss LoRA config (no network_dim); {hint}")
    result = ImportResult(notes=notes)
    reader = _Reader(Path(path), data, result)
    reader.copy_all(_KOHYA_COPIES)
    parts = (_kohya_model, _kohya_dataset, _kohya_network, _kohya_learning_rates)
    for part in (*parts, _kohya_length, _kohya_training, _kohya_outputs, _kohya_leftovers):
        part(reader)
    return _validated(Path(path), result)


_CIVITAI_COPIES = {
    "unetLR": ("optimizer.unet_lr", "number"),
    "textEncoderLR": ("optimizer.text_encoder_lr", "number"),
    "clipSkip": ("training.clip_skip", "count"),
    "keepTokens": ("dataset.keep_tokens", "integer"),
    "networkDim": ("network.rank", "count"),
    "networkAlpha": ("network.alpha", "amount"),
    "numRepeats": ("dataset.repeats", "count"),
    "noiseOffset": ("training.noise_offset", "number"),
    "minSnrGamma": ("training.min_snr_gamma", "amount"),
    "enableBucket": ("dataset.enable_buckets", "flag"),
    "maxTrainEpochs": ("training.epochs", "count"),
    "shuffleCaption": ("dataset.shuffle_caption", "flag"),
    "trainBatchSize": ("training.batch_size", "count"),
    "flipAugmentation": ("dataset.flip_aug", "flag"),
    "lrSchedulerNumCycles": ("scheduler.num_cycles", "count"),
}
_CIVITAI_HANDLED = _words("resolution lrScheduler optimizerType optimizerArgs loraType targetSteps")


def import_civitai(path: Path) -> ImportResult:
    """Overrides from CivitAI's LoRA trainer settings (the JSON block of guide 000)."""
    fix = "give the settings JSON of CivitAI's LoRA trainer"
    data, notes = _read_json(path, fix)
    if "networkDim" not in data and "unetLR" not in data:
        hint = "use --from-kohya" if "network_dim" in data else fix
        raise LorakitError(f"{path}: not CivitAI trainer settings (no networkDim); {hint}")
    result = ImportResult(notes=notes)
    reader = _Reader(Path(path), data, result)
    reader.copy_all(_CIVITAI_COPIES)
    _resolution(reader, "resolution")
    _scheduler(reader, "lrScheduler")
    _optimizer_settings(reader, "optimizerType", "optimizerArgs")
    lora_type = reader.text("loraType").lower()
    if lora_type not in ("", "lora"):
        reader.note(
            f"loraType {reader.text('loraType')} is not supported: a standard LoRA is "
            "trained with the same rank and alpha"
        )
    reader.note("CivitAI settings name no base model or images: set model.path and dataset.path")
    if "targetSteps" in data:
        reader.note(
            f"targetSteps {reader.text('targetSteps')} is CivitAI's estimate; lorakit "
            "counts images × repeats × epochs / batch from the dataset (see --dry-run)"
        )
    unknown = sorted(set(data) - set(_CIVITAI_COPIES) - _CIVITAI_HANDLED)
    if unknown:
        reader.note(f"unknown CivitAI keys ignored: {', '.join(unknown)}")
    return _validated(Path(path), result)
