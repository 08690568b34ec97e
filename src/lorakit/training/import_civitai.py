"""Import the settings block of CivitAI's LoRA trainer (guide 000) as config overrides.

CivitAI has no folders, so its ``numRepeats`` becomes `dataset.repeats`, and it names no
base model or images: the user adds `model.path` and `dataset.path`.
"""

from __future__ import annotations

from pathlib import Path

from lorakit.training import import_common as common

CIVITAI = common.Format(
    fix="give the settings JSON of CivitAI's LoRA trainer",
    markers=("networkDim", "unetLR"),
    what="CivitAI trainer settings",
    other_key="network_dim",
    other_option="--from-kohya",
)
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
_CIVITAI_HANDLED = common.words(
    "resolution lrScheduler optimizerType optimizerArgs loraType targetSteps"
)


def import_civitai(path: Path) -> common.ImportResult:
    """Overrides from CivitAI's LoRA trainer settings (the JSON block of guide 000)."""
    reader = common.open_reader(path, CIVITAI)
    data = reader.data
    reader.copy_all(_CIVITAI_COPIES)
    common.resolution(reader, "resolution")
    common.scheduler(reader, "lrScheduler")
    common.optimizer_settings(reader, "optimizerType", "optimizerArgs")
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
    return common.validated(reader)
