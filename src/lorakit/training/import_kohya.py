"""Import a kohya_ss GUI JSON (a full save or a downloaded preset) as config overrides.

The guides' users arrive with a kohya_ss config they saved, and expect the run sd-scripts
would have made from it: the GUI's defaults for keys the file lacks, its reading of blank
and zero fields, the sd-scripts options in `additional_parameters`
(`import_kohya_schema`, `import_sdscripts`; the network in `import_kohya_network`). kohya
keeps repeats in the image folder's name (``img/10_name``), not in its JSON: the import
points `dataset.path` at the same folder and the dataset scan reads the repeats from it.
LoRA types lorakit does not train (iA3, DyLoRA, GLoRA, ...) are refused before anything
is written.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path, PureWindowsPath

from lorakit.training import import_kohya_schema as schema
from lorakit.training.import_common import (
    Format,
    ImportResult,
    Reader,
    arg_value,
    open_reader,
    optimizer_settings,
    resolution,
    scheduler,
    validated,
)
from lorakit.training.import_kohya_network import kohya_network
from lorakit.training.import_sdscripts import read_command_line

KOHYA = Format(
    fix="give a kohya_ss LoRA config saved by its GUI",
    markers=("network_dim", "LoRA_type"),
    what="a kohya_ss LoRA config",
    other_key="networkDim",
    other_option="--from-civitai",
)
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]|\\")
_SEED_RANGE = 2**31  # drawn seeds stay valid for numpy after + process index
_DEFAULT_STEP = 64


def _kohya_model(reader: Reader) -> None:
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
    _kohya_text_cache(reader, bool(sdxl))
    if reader.flag("v_parameterization"):
        reader.set("training.prediction", "v_prediction")
    weights = reader.text("network_weights") or reader.text("lora_network_weights")
    if weights:
        reader.set("network.weights", weights)


def _kohya_text_cache(reader: Reader, sdxl: bool) -> None:
    """sd-scripts caches text-encoder outputs with --cache_text_encoder_outputs (the GUI's
    SDXL switch), in files with --cache_text_encoder_outputs_to_disk (the GUI's FLUX.1 key
    `flux1_cache_text_encoder_outputs_to_disk`, or the option in additional_parameters),
    which turns caching on by itself, as sd-scripts does."""
    to_disk = ("cache_text_encoder_outputs_to_disk", "flux1_cache_text_encoder_outputs_to_disk")
    if any(reader.flag(key) for key in to_disk):
        reader.set("training.cache_text_encoder", "disk")
        return
    cache = reader.flag("sdxl_cache_text_encoder_outputs") if sdxl else None
    if cache is not None:
        reader.set("training.cache_text_encoder", "memory" if cache else "none")


def _bucket_step(reader: Reader) -> int:
    step = reader.integer("bucket_reso_steps")
    if step is not None and (step < 8 or step % 8):
        reader.note(f"bucket_reso_steps {step} is not a multiple of 8; lorakit's 64 kept")
        return _DEFAULT_STEP
    reader.set("dataset.bucket_step", step or _DEFAULT_STEP)
    return step or _DEFAULT_STEP


def _kohya_dataset(reader: Reader) -> None:
    resolution(reader, "max_resolution", _bucket_step(reader))
    if reader.flag("enable_bucket") and reader.flag("bucket_no_upscale"):
        reader.note("bucket_no_upscale: lorakit scales every image to its bucket, small ones up")
    ext = reader.text("caption_extension")
    if ext == ".none-use-foldername":
        reader.note(
            "caption_extension: captions from folder names are not supported; "
            "lorakit reads .txt caption files"
        )
    elif not ext:
        reader.note(
            "caption_extension is empty (kohya then reads .caption files); "
            "lorakit reads .txt, set dataset.caption_ext to change it"
        )
    else:
        reader.set("dataset.caption_ext", ext)


def _te_rate(reader: Reader) -> float | list[float]:
    """One rate, or SDXL's two from `--text_encoder_lr a b` in additional_parameters."""
    raw = reader.data.get("text_encoder_lr")
    if not isinstance(raw, list):
        return reader.number("text_encoder_lr") or 0.0
    try:
        return [float(value) for value in raw]
    except ValueError:
        raise reader.bad("text_encoder_lr", "one or two numbers") from None


def _kohya_learning_rates(reader: Reader) -> None:
    """kohya_ss' rule: with U-Net and TE rates both 0 (or blank) both train at
    learning_rate; with one of them 0 only the other part trains; all three 0 the GUI
    refuses to start. `--network_train_*_only` options freeze the other part."""
    base = reader.number("learning_rate") or 0.0
    unet = reader.number("unet_lr") or 0.0
    te = _te_rate(reader)
    if isinstance(te, list) and not any(te):
        te = 0.0
    if not (base or unet or te):
        raise reader.error(
            "learning_rate, unet_lr and text_encoder_lr are all 0, so kohya_ss would not "
            "train; set unet_lr (e.g. 0.0001)"
        )
    if not unet and not te:
        unet = te = base
    elif not te:
        reader.note("text_encoder_lr 0: only the U-Net trains, as kohya_ss does")
    elif not unet:
        reader.note("unet_lr 0: only the text encoder trains, as kohya_ss does")
    if reader.flag("network_train_unet_only"):
        te = 0.0
    if reader.flag("network_train_text_encoder_only"):
        unet = 0.0
    reader.set("optimizer.unet_lr", unet)
    reader.set("optimizer.text_encoder_lr", te)


def _kohya_optimizer(reader: Reader) -> None:
    name = reader.text("optimizer")
    if "optimizer" not in reader.data:
        name = "AdamW8bit" if reader.flag("use_8bit_adam") else "AdamW"
    optimizer_settings(reader, name, "optimizer_args", "optimizer")
    scheduler(reader, "lr_scheduler")


def _warmup(reader: Reader) -> None:
    """kohya_ss' "LR warmup (% of steps)": round(% × max_train_steps / 100), where
    max_train_steps is the file's or, unset, the run's total (a ratio resolved by the plan).
    An explicit lr_warmup_steps wins (a number below 1 is a ratio, as sd-scripts reads it)."""
    steps = reader.number("lr_warmup_steps")
    percent = int(reader.number("lr_warmup") or 0)
    total = reader.value("max_train_steps", "count")
    if steps:
        key = "scheduler.warmup_ratio" if steps < 1 else "scheduler.warmup_steps"
        reader.set(key, steps if steps < 1 else int(steps))
    elif percent and total:
        reader.set("scheduler.warmup_steps", round(percent * total / 100))
    elif percent:
        reader.set("scheduler.warmup_ratio", percent / 100)
    _drop_unused_warmup(reader)


def _drop_unused_warmup(reader: Reader) -> None:
    """Adafactor's relative step and the constant/adafactor schedules take no warmup
    (sd-scripts stops with an error); lorakit drops it and says so."""
    warmup = reader.get("scheduler.warmup_steps") or reader.get("scheduler.warmup_ratio")
    args = reader.get("optimizer.args") or {}
    relative = reader.get("optimizer.name") == "adafactor" and args.get("relative_step")
    name = reader.get("scheduler.name") or ""
    if not warmup or not (relative or name in ("constant", "adafactor")):
        return
    why = "Adafactor's relative step is the schedule" if relative else f"{name} has no warmup"
    reader.note(f"LR warmup not used: {why} (sd-scripts refuses this warmup)")
    reader.set("scheduler.warmup_steps", 0)
    reader.set("scheduler.warmup_ratio", 0.0)


def _kohya_length(reader: Reader) -> None:
    """kohya's "epoch" box is the epoch count; "max_train_epochs" overrides it when set.
    A blank cycle count is 1; a missing one is the epoch count (the GUI's empty box)."""
    epochs = reader.value("max_train_epochs", "count") or reader.value("epoch", "count")
    if epochs:
        reader.set("training.epochs", epochs)
    cycles = reader.value("lr_scheduler_num_cycles", "count")
    if "lr_scheduler_num_cycles" not in reader.data:
        cycles = epochs
    reader.set("scheduler.num_cycles", cycles or 1)
    reader.set("scheduler.power", reader.value("lr_scheduler_power", "amount") or 1.0)
    _warmup(reader)


def _kohya_seed(reader: Reader) -> None:
    """A blank or 0 seed is sd-scripts' random seed: drawn here, so the run's config.toml
    records it and the run can be repeated."""
    seed = reader.integer("seed")
    if not seed:
        shown = "blank" if seed is None else "0"
        seed = random.SystemRandom().randrange(_SEED_RANGE)
        reader.note(f"seed {shown} is a random seed in kohya_ss: drew {seed} (kept in config.toml)")
    reader.set("training.seed", seed)


def _kohya_training(reader: Reader) -> None:
    cache = reader.flag("cache_latents")
    if cache is not None:
        to_disk = reader.flag("cache_latents_to_disk")
        reader.set("training.cache_latents", ("disk" if to_disk else "memory") if cache else "none")
    offset_type = reader.text("noise_offset_type") or "Original"
    if offset_type == "Multires" and reader.number("multires_noise_iterations"):
        reader.note(
            "noise_offset_type Multires (multi-resolution noise) is not supported; "
            "trained without a noise offset"
        )
    if offset_type != "Original":
        return
    reader.copy("noise_offset", "training.noise_offset", "number")
    if reader.number("adaptive_noise_scale"):
        reader.note(
            f"adaptive_noise_scale = {reader.data['adaptive_noise_scale']!r} is not "
            "supported by lorakit; ignored"
        )
    if reader.flag("noise_offset_random_strength"):
        reader.note("noise_offset_random_strength = True is not supported by lorakit; ignored")


def _output_dir(reader: Reader) -> None:
    """A Windows output_dir on another system would become one folder named
    "d:\\lycoris\\sdxl": the import writes next to the imported file instead."""
    output = reader.text("output_dir")
    foreign = sys.platform != "win32" and _WINDOWS_PATH.search(output)
    if output and foreign and not Path(output).is_dir():
        local = reader.path.absolute().parent / (PureWindowsPath(output).name or "output")
        reader.note(f"output_dir {output} is a Windows path: writing to {local}, next to the file")
        output = str(local)
    if output:
        reader.set("saving.output_dir", output)


def _kohya_outputs(reader: Reader) -> None:
    _output_dir(reader)
    for key in ("save_every_n_epochs", "save_every_n_steps"):
        reader.set(f"saving.{key}", reader.value(key, "count"))
    precision = reader.text("save_precision")
    if precision:
        reader.set("saving.save_precision", "fp32" if precision == "float" else precision)
    prompts, prompt_file = reader.text("sample_prompts"), reader.text("sample_prompts_file")
    if prompt_file:
        reader.set("sampling.prompts", prompt_file)
    elif prompts:
        reader.result.sample_prompts = prompts
    if prompts or prompt_file:
        reader.set("sampling.every_n_steps", reader.value("sample_every_n_steps", "count"))
        reader.set("sampling.every_n_epochs", reader.value("sample_every_n_epochs", "count"))


def _same(value: object, neutral: object) -> bool:
    """Whether a key's value is the one at which sd-scripts does what lorakit does."""
    if value is None or value == "" or (isinstance(value, list) and not value):
        return True
    parsed = arg_value(str(value).strip())
    return parsed == neutral or str(parsed) == str(neutral)


def _kohya_leftovers(reader: Reader) -> None:
    """One note per unsupported setting that is switched on, one for unknown keys."""
    for key in sorted(schema.UNSUPPORTED.keys() & set(reader.data)):
        value = reader.data[key]
        neutral = (schema.UNSUPPORTED[key], *schema.UNSET_TOO.get(key, ()))
        if not any(_same(value, n) for n in neutral):
            reader.note(f"{key} = {value!r} is not supported by lorakit; ignored")
    unknown = sorted(reader.keys - schema.KNOWN)
    if unknown:
        reader.note(f"unknown kohya_ss keys ignored: {', '.join(unknown)}")


def open_kohya(path: Path) -> Reader:
    """A reader over the file's keys on top of the GUI's defaults, with the options of
    additional_parameters on top of both."""
    reader = open_reader(path, KOHYA)
    line = read_command_line(reader.path, reader.text("additional_parameters"), schema.KNOWN)
    if "multires_noise_iterations" in line.keys:  # sd-scripts uses it whatever the GUI type
        line.keys.setdefault("noise_offset_type", "Multires")
    reader.data = {**schema.GUI_DEFAULTS, **reader.data, **line.keys}
    reader.result.notes += line.notes()
    return reader


def import_kohya(path: Path) -> ImportResult:
    """Overrides from a kohya_ss GUI LoRA config (a full save or a partial preset)."""
    reader = open_kohya(path)
    reader.copy_all(schema.COPIES)
    parts = (kohya_network, _kohya_model, _kohya_dataset, _kohya_learning_rates)
    parts += (_kohya_optimizer, _kohya_length, _kohya_seed, _kohya_training, _kohya_outputs)
    for part in (*parts, _kohya_leftovers):
        part(reader)
    return validated(reader)
