"""The kohya_ss GUI's LoRA config schema, as lorakit's import reads it.

A file saved by the GUI, a preset that holds a dozen keys, a config from an older or newer
GUI: the GUI opens each onto its own defaults (a missing key shows the default), and
sd-scripts then trains with what the GUI passes. So the import fills the same defaults
(kohya_ss v24's LoRA tab) before reading, and keeps one table per kind of key: the keys it
maps, the keys that change training but that lorakit does not do (with the value that
matches what lorakit does, so only a different one gets a note), and the keys that do not
change what is trained (logging, speed, uploads).
"""

from __future__ import annotations

from lorakit.training.import_common import words

# What the GUI shows for a key the file lacks. `optimizer` is not here: the GUI fills a
# missing one with AdamW (AdamW8bit for old configs with use_8bit_adam). `sdxl`, `v2` and
# `v_parameterization` are not either: they follow the model, which lorakit detects.
GUI_DEFAULTS: dict[str, object] = {
    "LoRA_type": "Standard",
    "network_dim": 8,
    "network_alpha": 1,
    "conv_dim": 1,
    "conv_alpha": 1,
    "learning_rate": 0.0001,
    "unet_lr": 0.0001,
    "text_encoder_lr": 0.0001,
    "lr_scheduler": "cosine",
    "lr_warmup": 10,
    "optimizer_args": "",
    "train_batch_size": 1,
    "epoch": 1,
    "max_train_epochs": 0,
    "max_train_steps": 0,
    "save_every_n_epochs": 1,
    "mixed_precision": "fp16",
    "save_precision": "fp16",
    "seed": 0,
    "cache_latents": True,
    "cache_latents_to_disk": False,
    "caption_extension": "",
    "enable_bucket": True,
    "min_bucket_reso": 256,
    "max_bucket_reso": 2048,
    "bucket_reso_steps": 64,
    "bucket_no_upscale": True,
    "max_resolution": "512,512",
    "clip_skip": 1,
    "max_grad_norm": 1.0,
    "noise_offset_type": "Original",
    "noise_offset": 0,
    "gradient_accumulation_steps": 1,
    "gradient_checkpointing": False,
    "keep_tokens": 0,
    "shuffle_caption": False,
    "flip_aug": False,
    "color_aug": False,
    "caption_dropout_rate": 0,
    "min_snr_gamma": 0,
    "prior_loss_weight": 1.0,
    "network_dropout": 0,
    "sample_every_n_steps": 0,
    "sample_every_n_epochs": 0,
    "save_every_n_steps": 0,
    "LyCORIS_preset": "full",
}

# LoRA types lorakit trains: a LoRA, a LoCon (LoRA on the 3×3 convolutions too), LyCORIS'
# LoHa and LoKr. "LoCon" is the GUI's old name of LyCORIS/LoCon.
LORA_TYPES = frozenset(
    {"Standard", "Kohya LoCon", "LyCORIS/LoCon", "LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr"}
)
# The LyCORIS algo kohya_ss passes for each LyCORIS LoRA type.
LYCORIS_ALGOS = {
    "LyCORIS/LoCon": "locon",
    "LoCon": "locon",
    "LyCORIS/LoHa": "loha",
    "LyCORIS/LoKr": "lokr",
}

# kohya_ss keys copied as they are: key → (TrainConfig field, kind of value).
COPIES = {
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
    "network_dropout": ("network.dropout", "number"),
    "max_grad_norm": ("optimizer.max_grad_norm", "number"),
    "max_train_steps": ("training.max_train_steps", "count"),
    "train_batch_size": ("training.batch_size", "count"),
    "gradient_accumulation_steps": ("training.grad_accum", "count"),
    "mixed_precision": ("training.mixed_precision", "text"),
    "gradient_checkpointing": ("training.gradient_checkpointing", "flag"),
    "clip_skip": ("training.clip_skip", "count"),
    "min_snr_gamma": ("training.min_snr_gamma", "amount"),
    "output_name": ("saving.name", "text"),
    "save_last_n_epochs": ("saving.keep_last", "count"),
}

# Keys read by the import's own rules (beyond the copies).
HANDLED = words(
    """
    v2 sdxl sdxl_cache_text_encoder_outputs cache_text_encoder_outputs_to_disk
    flux1_cache_text_encoder_outputs_to_disk v_parameterization network_weights
    lora_network_weights output_dir max_resolution bucket_reso_steps bucket_no_upscale
    caption_extension LoRA_type network_dim network_alpha conv_dim conv_alpha
    learning_rate unet_lr text_encoder_lr optimizer optimizer_args use_8bit_adam
    lr_scheduler lr_scheduler_num_cycles lr_scheduler_power lr_warmup lr_warmup_steps
    max_train_epochs epoch seed cache_latents cache_latents_to_disk noise_offset_type
    noise_offset adaptive_noise_scale noise_offset_random_strength
    multires_noise_iterations multires_noise_discount save_every_n_epochs
    save_every_n_steps save_precision sample_prompts sample_every_n_steps
    sample_every_n_epochs sample_prompts_file additional_parameters network_args network_module
    LyCORIS_preset rank_dropout module_dropout down_lr_weight mid_lr_weight up_lr_weight
    block_lr_zero_threshold block_dims block_alphas conv_block_dims conv_block_alphas
    use_tucker use_scalar rank_dropout_scale bypass_mode dora_wd train_norm factor use_cp
    decompose_both
    """
)

# Keys that change training in sd-scripts but not in lorakit → the value at which
# sd-scripts does what lorakit does. Any other value gets a note.
UNSUPPORTED: dict[str, object] = {
    "ip_noise_gamma": 0,
    "ip_noise_gamma_random_strength": False,
    "scale_weight_norms": 0,
    "debiased_estimation_loss": False,
    "min_timestep": 0,
    "max_timestep": 1000,
    "max_token_length": 75,
    "weighted_captions": False,
    "v_pred_like_loss": 0,
    "scale_v_pred_loss_like_noise_pred": False,
    "stop_text_encoder_training": 0,
    "stop_text_encoder_training_pct": 0,
    "full_fp16": False,
    "full_bf16": False,
    "fp8_base": False,
    "fp8_base_unet": False,
    "dataset_config": "",
    "vae": "",
    "resume": "",
    "random_crop": False,
    "caption_dropout_every_n_epochs": 0,
    "lr_scheduler_args": "",
    "lr_scheduler_type": "",
    "lr_scheduler_min_lr_ratio": 0,
    "lr_decay_steps": 0,
    "masked_loss": False,
    "loss_type": "l2",
    "save_last_n_steps": 0,
    "dim_from_weights": False,
    "loraplus_lr_ratio": 0,
    "loraplus_unet_lr_ratio": 0,
    "loraplus_text_encoder_lr_ratio": 0,
    "save_model_as": "safetensors",
    "resume_from_huggingface": "",
}
# Other values that mean the same: max_timestep 0 is kohya_ss' "not set".
UNSET_TOO: dict[str, tuple[object, ...]] = {"max_timestep": (0,)}

# Keys that do not change what is trained (logging, speed, uploads, other LoRA types'
# settings, other model families).
IRRELEVANT = words(
    """
    xformers sdpa mem_eff_attn max_data_loader_n_workers persistent_data_loader_workers
    num_cpu_threads_per_process num_processes num_machines multi_gpu gpu_ids
    main_process_port dynamo_backend dynamo_mode dynamo_use_dynamic dynamo_use_fullgraph
    extra_accelerate_launch_args logging_dir log_with log_tracker_name log_tracker_config
    log_config use_wandb wandb_api_key wandb_run_name huggingface_path_in_repo
    huggingface_repo_id huggingface_repo_type huggingface_repo_visibility huggingface_token
    save_state_to_huggingface async_upload metadata_author metadata_description
    metadata_license metadata_tags metadata_title training_comment model_list save_as_bool
    save_state save_state_on_train_end save_last_n_steps_state save_last_n_epochs_state
    sample_sampler vae_batch_size sdxl_no_half_vae lowvram highvram no_token_padding
    huber_c huber_schedule training_preset train_on_input unit
    constrain rescaled conv_alphas conv_dims
    """
)

KNOWN = set(GUI_DEFAULTS) | set(COPIES) | HANDLED | set(UNSUPPORTED) | IRRELEVANT
