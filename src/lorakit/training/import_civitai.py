"""Import the settings block of CivitAI's LoRA trainer (guide 000) as config overrides.

CivitAI has no folders, so its ``numRepeats`` becomes `dataset.repeats`, and it names no
base model or images: the user adds `model.path` and `dataset.path`. The trainer runs
sd-scripts, so rank, alpha, optimizer arguments and resolution are read as the kohya_ss
import reads them (`import_common`); a LoRA type other than a plain LoRA is refused.
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
    "resolution lrScheduler optimizerType optimizerArgs loraType targetSteps networkDim "
    "networkAlpha"
)


def import_civitai(path: Path) -> common.ImportResult:
    """Overrides from CivitAI's LoRA trainer settings (the JSON block of guide 000)."""
    reader = common.open_reader(path, CIVITAI)
    data = reader.data
    lora_type = reader.text("loraType")
    if lora_type.lower() not in ("", "lora"):
        raise reader.error(
            f"loraType {lora_type} is not supported: lorakit trains loraType lora; "
            "choose it in CivitAI's trainer and copy the settings again"
        )
    reader.copy_all(_CIVITAI_COPIES)
    common.network_size(reader, "networkDim", "networkAlpha")
    common.resolution(reader, "resolution", step=64)
    common.scheduler(reader, "lrScheduler")
    optimizer = reader.text("optimizerType")
    common.optimizer_settings(reader, optimizer, "optimizerArgs", "optimizerType")
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
