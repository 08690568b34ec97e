"""Import a kohya_ss GUI JSON (a full save or a downloaded preset) as config overrides.

The guides' users arrive with a kohya_ss config they saved. kohya keeps repeats in the image
folder's name (``img/10_name``), not in its JSON: the import points `dataset.path` at the
same folder and the dataset scan reads the repeats from it.
"""

from __future__ import annotations

import re
from pathlib import Path

from lorakit.training.import_common import (
    Format,
    ImportResult,
    Reader,
    open_reader,
    optimizer_settings,
    resolution,
    scheduler,
    validated,
    words,
)

KOHYA = Format(
    fix="give a kohya_ss LoRA config saved by its GUI",
    markers=("network_dim", "LoRA_type"),
    what="a kohya_ss LoRA config",
    other_key="networkDim",
    other_option="--from-civitai",
)
_LOCON_TYPES = {"Kohya LoCon", "LyCORIS/LoCon", "LoCon"}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")

# kohya_ss keys that change training but have no lorakit equivalent. A note is written only
# when a file switches one on: these are off when 0, "" or false, or at the GUI default below.
_KOHYA_UNSUPPORTED = words(
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

_KOHYA_IRRELEVANT = words(
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
    if sdxl and "sdxl_cache_text_encoder_outputs" in reader.data:
        reader.copy("sdxl_cache_text_encoder_outputs", "training.cache_text_encoder", "flag")
    if reader.flag("v_parameterization"):
        reader.set("training.prediction", "v_prediction")
    weights = reader.text("network_weights") or reader.text("lora_network_weights")
    if weights:
        reader.set("network.weights", weights)


def _kohya_dataset(reader: Reader) -> None:
    resolution(reader, "max_resolution")
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


def _kohya_network(reader: Reader) -> None:
    lora_type = reader.text("LoRA_type") or "Standard"
    if lora_type in _LOCON_TYPES:
        reader.copy("conv_dim", "network.conv_rank", "count")
        reader.copy("conv_alpha", "network.conv_alpha", "amount")
    elif lora_type != "Standard":
        reader.note(
            f"LoRA_type {lora_type} is not supported: a standard LoRA "
            "(LoCon convs off) is trained with the same rank and alpha"
        )


def _kohya_learning_rates(reader: Reader) -> None:
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
    optimizer_settings(reader, "optimizer", "optimizer_args")
    scheduler(reader, "lr_scheduler")


def _kohya_length(reader: Reader) -> None:
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


def _kohya_training(reader: Reader) -> None:
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


def _kohya_outputs(reader: Reader) -> None:
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


_KOHYA_MAPPED = set(_KOHYA_COPIES) | words(
    """
    v2 sdxl sdxl_cache_text_encoder_outputs v_parameterization network_weights
    lora_network_weights max_resolution bucket_reso_steps caption_extension LoRA_type conv_dim
    conv_alpha learning_rate unet_lr text_encoder_lr optimizer optimizer_args lr_scheduler
    max_train_epochs epoch lr_warmup cache_latents cache_latents_to_disk noise_offset
    save_every_n_epochs save_every_n_steps save_precision sample_prompts sample_every_n_steps
    sample_every_n_epochs
    """
)


def _kohya_leftovers(reader: Reader) -> None:
    """One note per unsupported setting that is switched on, one for unknown keys."""
    for key in sorted(_KOHYA_UNSUPPORTED & set(reader.data)):
        value, default = reader.data[key], _KOHYA_DEFAULTS.get(key)
        if value not in (None, "", 0, False) and str(value) != str(default):
            reader.note(f"{key} = {value!r} is not supported by lorakit; ignored")
    known = _KOHYA_MAPPED | _KOHYA_IRRELEVANT | _KOHYA_UNSUPPORTED
    unknown = sorted(set(reader.data) - known)
    if unknown:
        reader.note(f"unknown kohya_ss keys ignored: {', '.join(unknown)}")


def import_kohya(path: Path) -> ImportResult:
    """Overrides from a kohya_ss GUI LoRA config (a full save or a partial preset)."""
    reader = open_reader(path, KOHYA)
    reader.copy_all(_KOHYA_COPIES)
    parts = (_kohya_model, _kohya_dataset, _kohya_network, _kohya_learning_rates)
    for part in (*parts, _kohya_length, _kohya_training, _kohya_outputs, _kohya_leftovers):
        part(reader)
    return validated(reader)
