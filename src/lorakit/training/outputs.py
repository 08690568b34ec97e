"""What a run leaves on disk and when: LoRA files, state, summary, samples, TensorBoard.

LoRA files carry the training settings in kohya's `ss_*` metadata (via `lora_metadata`),
so A1111, ComfyUI and `lorakit` can show how a file was made. Only the main process
writes files; `save_state` is collective (every process stores its RNG state).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from lorakit.network.metadata import base_model_metadata
from lorakit.training import checkpoint as ckpt
from lorakit.training.config import TrainConfig
from lorakit.training.data import Items
from lorakit.training.monitor import Monitor
from lorakit.training.plan import RunPlan
from lorakit.training.runtime import lora_config
from lorakit.training.state import TrainState
from lorakit.training.target import TrainTarget

SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def tag_frequency(items: Items) -> dict[str, dict[str, int]]:
    """kohya's `ss_tag_frequency`: per image folder, how often each caption tag occurs
    (stripped and lower-cased, as sd-scripts counts them)."""
    freq: dict[str, Counter[str]] = {}
    for item in items.train:
        tags = [t.strip().lower() for t in item.caption.split(",") if t.strip()]
        freq.setdefault(item.path.parent.name, Counter()).update(tags)
    return {folder: dict(counter) for folder, counter in freq.items()}


def dataset_dirs(items: Items) -> dict[str, dict[str, int]]:
    """kohya's `ss_dataset_dirs`: per image folder, its repeats and image count."""
    dirs: dict[str, dict[str, int]] = {}
    for item in items.all:
        entry = dirs.setdefault(item.path.parent.name, {"n_repeats": item.repeats, "img_count": 0})
        entry["img_count"] += 1
    return dirs


def folder_subject(items: Items) -> tuple[str, str]:
    """(trigger, class) from kohya folder names `N_trigger class` (`lorakit dataset prep`
    writes them), when every training folder names the same ones; else empty strings.

    Regularization folders (`N_class`) name no trigger and are left out.
    """
    subjects = set()
    for item in [*items.train, *items.validation]:
        repeats, _, subset = item.path.parent.name.partition("_")
        if not (repeats.isdigit() and subset.strip()):
            return "", ""
        trigger, _, cls = subset.strip().partition(" ")
        subjects.add((trigger, cls.strip()))
    return subjects.pop() if len(subjects) == 1 else ("", "")


def bucket_info(items: Items) -> dict[str, Any]:
    """kohya's `ss_bucket_info`: each bucket's size and how many image views it holds."""
    counts: Counter[tuple[int, int]] = Counter()
    for item in items.all:
        counts[(item.bucket.width, item.bucket.height)] += item.repeats
    buckets = {
        str(i): {"resolution": list(size), "count": counts[size]}
        for i, size in enumerate(sorted(counts))
    }
    return {"buckets": buckets}


def training_metadata(
    config: TrainConfig,
    items: Items,
    plan: RunPlan,
    prediction: str | None,
    started: float,
    processes: int,
    precision: str,
) -> dict[str, Any]:
    """kohya's training keys, so A1111, CivitAI and `lorakit` show how the file was made.

    Hashing the base checkpoint reads it once: call this once per run. `precision` is the
    mixed precision that actually runs (a CPU trains fp16 configs in fp32).
    """
    c = config
    return {
        "ss_session_id": random.SystemRandom().randint(0, 2**32 - 1),
        "ss_output_name": c.saving.name,
        "ss_training_started_at": started,
        "ss_num_train_images": sum(it.repeats for it in items.train),
        "ss_num_reg_images": len(items.reg),
        "ss_resolution": c.dataset.resolution,
        "ss_learning_rate": c.optimizer.unet_lr,
        "ss_unet_lr": c.optimizer.unet_lr,
        "ss_text_encoder_lr": c.optimizer.text_encoder_lr,
        "ss_optimizer": c.optimizer.name + (f"({c.optimizer.args})" if c.optimizer.args else ""),
        "ss_lr_scheduler": c.scheduler.name,
        "ss_lr_warmup_steps": c.scheduler.warmup_steps,
        "ss_num_epochs": plan.epochs,
        "ss_num_batches_per_epoch": plan.batches_per_epoch,
        "ss_max_train_steps": plan.total_steps,
        "ss_prediction_type": prediction,
        "ss_v_parameterization": prediction == "v_prediction",
        "ss_batch_size_per_device": c.training.batch_size,
        "ss_total_batch_size": c.training.batch_size * c.training.grad_accum * processes,
        "ss_gradient_accumulation_steps": c.training.grad_accum,
        "ss_gradient_checkpointing": c.training.gradient_checkpointing,
        "ss_cache_latents": c.training.cache_latents != "none",
        "ss_mixed_precision": precision,
        "ss_seed": c.training.seed,
        "ss_clip_skip": c.training.clip_skip,
        "ss_noise_offset": c.training.noise_offset,
        "ss_min_snr_gamma": c.training.min_snr_gamma,
        "ss_caption_dropout_rate": c.dataset.caption_dropout,
        "ss_flip_aug": c.dataset.flip_aug,
        "ss_color_aug": c.dataset.color_aug,
        "ss_shuffle_caption": c.dataset.shuffle_caption,
        "ss_keep_tokens": c.dataset.keep_tokens,
        "ss_prior_loss_weight": c.dataset.prior_loss_weight,
        "ss_tag_frequency": tag_frequency(items),
        "ss_dataset_dirs": dataset_dirs(items),
        "ss_bucket_info": bucket_info(items),
        "trigger_phrase": c.dataset.trigger or folder_subject(items)[0] or None,
        **base_model_metadata(c.model.path),
    }


class Outputs:
    """Saves files at the configured epochs and steps; remembers the last good file."""

    def __init__(
        self,
        config: TrainConfig,
        target: TrainTarget,
        items: Items,
        plan: RunPlan,
        accelerator: Accelerator,
        state: TrainState,
    ):
        self.config, self.target, self.items = config, target, items
        self.accelerator, self.state = accelerator, state
        self.out = Path(config.saving.output_dir)
        self.name = config.saving.name
        te_lrs = config.text_encoder_lrs(len(target.model.text_encoders))
        self.lora_config = lora_config(config, te_lrs)
        self.training = training_metadata(
            config,
            items,
            plan,
            target.prediction,
            time.time(),
            accelerator.num_processes,
            accelerator.mixed_precision,
        )
        self.last_saved: Path | None = None
        self.prompts = self._prompts()

    def _prompts(self) -> list:
        if not self.config.sampling.prompts:
            return []
        from lorakit.inference.samples import parse_prompt_file

        return parse_prompt_file(Path(self.config.sampling.prompts))

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def save_lora(self, path: Path, progress: ckpt.Progress, epoch: int | None = None) -> None:
        """Write the LoRA with its metadata; `epoch` defaults to the one in progress."""
        if not self.main:
            return
        metadata = self.target.lora_metadata(
            self.lora_config,
            **self.training,
            ss_epoch=progress.epoch if epoch is None else epoch,
            ss_steps=progress.step,
            ss_training_finished_at=time.time(),
        )
        dtype = SAVE_DTYPES[self.config.saving.save_precision]
        self.target.network.save(path, dtype=dtype, metadata=metadata)
        self.last_saved = path

    def save_state(self, force: bool = False) -> None:
        """`state/` for `--resume` (when `saving.save_state`, or `force` for a planned stop)."""
        if force or self.config.saving.save_state:
            self.state.save(self.out)

    def _samples(self, progress: ckpt.Progress, lora: Path | None) -> None:
        """The family's samples (`lora`: the file just written with these weights)."""
        if not (self.prompts and self.main):
            return
        self.target.render_samples(
            self.prompts,
            self.out / "samples",
            step=progress.step,
            epoch=progress.epoch,
            name=self.name,
            lora=lora,
        )

    def saves_at(self, step: int) -> bool:
        """Whether `after_step` writes a LoRA file at this optimizer step."""
        every = self.config.saving.save_every_n_steps
        return bool(every) and step % every == 0

    def after_step(self, progress: ckpt.Progress) -> None:
        saved = self.saves_at(progress.step)
        if saved:
            self.save_lora(ckpt.step_file(self.out, self.name, progress.step), progress)
            self._prune()
            self.save_state()
        if self._samples_due_at_step(progress.step):
            self._samples(progress, self.last_saved if saved else None)

    def _samples_due_at_step(self, step: int) -> bool:
        n = self.config.sampling.every_n_steps
        return bool(n) and step % n == 0

    def _prune(self) -> None:
        if self.main:
            ckpt.prune(self.out, self.name, self.config.saving.keep_last)

    def after_epoch(
        self,
        progress: ckpt.Progress,
        train_loss: float,
        val_loss: float | None,
        monitor: Monitor | None,
    ) -> bool:
        """Write the epoch's file (when due), scalars, summary and samples."""
        epoch, every = progress.epoch, self.config.saving.save_every_n_epochs
        saved = bool(every) and epoch % every == 0
        if saved:
            self.save_lora(ckpt.epoch_file(self.out, self.name, epoch), progress)
            self._prune()
        if monitor is not None:
            scalars = {"loss/epoch": train_loss}
            if val_loss is not None:
                scalars["loss/validation"] = val_loss
            monitor.scalars(scalars, epoch)
            monitor.result(
                f"epoch {epoch}: train loss {train_loss:.4f}"
                + (f", validation loss {val_loss:.4f}" if val_loss is not None else "")
                + (f" → {self.last_saved.name}" if saved and self.last_saved else "")
            )
        self._summary(epoch, progress.step, train_loss, val_loss, saved)
        sample_every = self.config.sampling.every_n_epochs
        # A step that already rendered samples would write the very same files again.
        due = bool(sample_every) and epoch % sample_every == 0
        if due and not self._samples_due_at_step(progress.step):
            self._samples(progress, self.last_saved if saved else None)
        return saved

    def _summary(self, epoch: int, step: int, train: float, val: float | None, saved: bool) -> None:
        if not self.main:
            return
        trigger, cls = folder_subject(self.items)
        header = {
            "name": self.name,
            "family": self.target.family.value,
            # Absolute: `grid` and `pick` read it from wherever they run.
            "base_model": str(Path(self.config.model.path).absolute()),
            "trigger": self.config.dataset.trigger or trigger,
            "class": cls,
        }
        entry = {
            "epoch": epoch,
            "step": step,
            "train_loss": train,
            "val_loss": val,
            "file": ckpt.epoch_file(self.out, self.name, epoch).name if saved else None,
        }
        ckpt.record_epoch(self.out, header, entry)

    def finish(self, progress: ckpt.Progress) -> None:
        """The last file, after the final epoch was closed (`progress.epoch` is the next)."""
        self.save_lora(ckpt.last_file(self.out, self.name), progress, epoch=progress.epoch - 1)
        progress.finished = True
        self.save_state()

    def interrupted(self, progress: ckpt.Progress) -> None:
        """Ctrl-C: keep the current LoRA as the last file and the state for `--resume`.

        Stopped between epochs, `progress.epoch` already names the next one."""
        epoch = progress.epoch if progress.epoch_batches else progress.epoch - 1
        self.save_lora(ckpt.last_file(self.out, self.name), progress, epoch=epoch)
        self.save_state(force=True)
