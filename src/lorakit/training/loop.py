"""The training loop: epochs of bucketed batches on accelerate, with saves and resume.

Multi-process runs (`accelerate launch`) give each process its share of every epoch's
batches and average LoRA gradients with one all-reduce per optimizer step; the base model
is never wrapped in DDP (it is frozen, and wrapping it would make `save_state` copy it).
The loss is read back from the device only every `log_every_n_steps` and at epoch ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import set_seed

from lorakit.errors import LorakitError
from lorakit.threads import ThreadChoice, torch_threads
from lorakit.training import checkpoint as ckpt
from lorakit.training.caching import fixed_captions
from lorakit.training.config import TrainConfig, save_config, with_absolute_paths
from lorakit.training.data import BucketBatchSampler, build_items
from lorakit.training.interrupt import StopFlag, StopRequested
from lorakit.training.monitor import Monitor
from lorakit.training.outputs import Outputs
from lorakit.training.plan import make_plan, settings
from lorakit.training.rundir import RunStart, prepare_run_folder, report_finished
from lorakit.training.runtime import (
    build_optimizer,
    cpu_threads,
    latent_source,
    make_accelerator,
    precision_text,
    validation_indices,
)
from lorakit.training.state import TrainState
from lorakit.training.step import assemble
from lorakit.training.target import load_target, resolve
from lorakit.training.validation import Validator


class TrainingDiverged(LorakitError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    epochs_done: int


class Trainer:
    def __init__(self, config: TrainConfig, start: RunStart):
        self.start = start
        self.config = config = resolve(config)
        self.accelerator, notes = make_accelerator(config)
        acc = self.accelerator
        self.out = Path(config.saving.output_dir)
        self.items = build_items(config, config.dataset.resolution or 512)
        self.sampler = BucketBatchSampler(
            self.items, config, rank=acc.process_index, world=acc.num_processes
        )
        self.plan = make_plan(config, self.items, acc.num_processes)
        self.config = config = config.with_warmup_steps(self.plan.total_steps)
        # The family's side of training (`lorakit.training.target`): model, network, loss.
        self.target = target = load_target(config, acc)
        set_seed(config.training.seed)  # the same LoRA init on every process
        target.inject()
        set_seed(config.training.seed + acc.process_index)  # different noise per process
        self.params, self.group_names, optimizer, self.scheduler = build_optimizer(
            config, target.param_groups(), self.plan.total_steps
        )
        self.optimizer = acc.prepare(optimizer)
        self.progress = ckpt.Progress()
        self.state = TrainState(acc, target.network, self.optimizer, self.scheduler, self.progress)
        target.prepare()
        self.latents = latent_source(config, target.model, self.items)
        self.outputs = Outputs(config, target, self.items, self.plan, acc, self.state)
        if config.dataset.color_aug and config.training.cache_latents != "none":
            notes.append("color_aug changes pixels every step: latents are encoded live")
        if start.moved_to is not None:
            notes.append(f"the previous run in {self.out} moved to {start.moved_to}")
        self.notes = notes
        self.stop = StopFlag()
        self.monitor: Monitor | None = None
        self.validator: Validator | None = None
        self.loss_acc = torch.zeros((), device=acc.device)
        self.loss_count = 0
        self.last_loss = torch.zeros((), device=acc.device)

    # ----- setup -----

    def _setup(self) -> None:
        acc, config = self.accelerator, self.config
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(with_absolute_paths(config), self.out / "config.toml")
        keys = [(i, flip) for i in range(len(self.latents.items)) for flip in self._flips()]
        self.latents.fill(keys)
        self.target.fill_text(fixed_captions(self.items, config.dataset.caption_dropout))
        if config.validation.enabled and self.items.validation:
            indices = validation_indices(self.items, self.latents.items)
            self.validator = Validator(
                self.items.validation,
                [self.latents.get((i, False)) for i in indices],
                self.target.objective,
                config.validation.timesteps,
                config.validation.seed,
                acc.device,
            )
        if self.start.state is not None and self.start.training is not None:
            # Last: caching may draw from the generators, the resumed steps must not see it.
            self.state.load(self.start.state, self.start.training)
            self.start.training = None
            self.outputs.last_saved = ckpt.newest_file(self.out, config.saving.name)

    def _flips(self) -> tuple[bool, ...]:
        return (False, True) if self.config.dataset.flip_aug else (False,)

    # ----- the step -----

    def _micro_step(self, keys) -> None:
        batch = assemble(
            keys, self.sampler.items, self.latents, self.config, self.accelerator.device
        )
        with self.accelerator.autocast():
            loss = self.target.loss(batch)
        self.accelerator.backward(loss)
        self.last_loss = loss.detach()
        self.loss_acc += self.last_loss
        self.loss_count += 1

    def _sync_gradients(self) -> None:
        """Average LoRA gradients over processes with one flat all-reduce."""
        world = self.accelerator.num_processes
        if world == 1:
            return
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten() for p in self.params])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n

    def _optimizer_step(self) -> None:
        self._sync_gradients()
        max_norm = self.config.optimizer.max_grad_norm
        if max_norm > 0:
            self.accelerator.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1

    # ----- loss bookkeeping -----

    def _flush_loss(self) -> float:
        """Move the device-side loss sum into `progress` (one host sync); NaN check here."""
        if self.loss_count:
            total = float(self.loss_acc)
            if not math.isfinite(total):
                raise TrainingDiverged(self._diverged_message())
            self.progress.loss_sum += total
            self.progress.loss_count += self.loss_count
            self.loss_acc.zero_()
            self.loss_count = 0
        return self.progress.loss_sum / max(1, self.progress.loss_count)

    def _diverged_message(self) -> str:
        last = self.outputs.last_saved
        kept = f"the last good file is {last}" if last else "no LoRA file was saved"
        return (
            f"loss became NaN/inf at step {self.progress.step} of epoch {self.progress.epoch}; "
            f'{kept}; lower optimizer.unet_lr or use training.mixed_precision = "bf16"'
        )

    def _lrs(self) -> dict[str, float]:
        lrs: dict[str, float] = {}
        for name, group, lr in zip(
            self.group_names, self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True
        ):
            lrs.setdefault(name, float(lr) * float(group.get("d", 1.0)))
        return lrs

    def _log_step(self) -> None:
        average = self._flush_loss()
        if self.monitor is not None:
            current = float(self.last_loss)
            self.monitor.step(self.progress.step, current, average, self._lrs())

    # ----- epochs -----

    def _run_epoch(self, epoch: int) -> bool:
        """Train one epoch (from where a resume left it); False when max steps is reached."""
        batches = self.sampler.epoch_batches(epoch)
        accum = self.config.training.grad_accum
        every = self.config.training.log_every_n_steps
        start = self.progress.epoch_batches
        if self.progress.step >= self.plan.total_steps:
            return False
        for index in range(start, len(batches)):
            self._micro_step(batches[index])
            self.progress.epoch_batches = index + 1
            if (index + 1) % accum and index + 1 < len(batches):
                continue
            self._optimizer_step()
            if self.monitor is not None:
                self.monitor.advance()
            # A LoRA file is written only after a finite loss was seen (the flush checks it).
            if self.progress.step % every == 0 or self.outputs.saves_at(self.progress.step):
                self._log_step()
            self.outputs.after_step(self.progress)
            if self.progress.step >= self.plan.total_steps:
                return False
            if self._stop_due(logged=self.progress.step % every == 0):
                raise StopRequested
        return True

    def _stop_due(self, logged: bool = True) -> bool:
        """Whether a Ctrl-C asks to stop at this step boundary. Several processes must stop
        at the same step: they agree at logged steps and epoch ends (one host sync each)."""
        if self.accelerator.num_processes == 1:
            return self.stop.requested
        if not logged:
            return False
        flag = torch.tensor(float(self.stop.requested), device=self.accelerator.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _validate(self) -> float | None:
        if self.validator is None:
            return None
        self.target.denoiser.eval()
        loss = self.validator.loss(self.target.predict)
        self.target.denoiser.train()
        return loss

    def _finish_epoch(self, epoch: int) -> bool:
        """Validate, save and log the epoch; True when a LoRA file was written."""
        train_loss = self._flush_loss()
        with self.accelerator.autocast():
            val_loss = self._validate()
        saved = self.outputs.after_epoch(self.progress, train_loss, val_loss, self.monitor)
        self.progress.epoch = epoch + 1
        self.progress.epoch_batches = 0
        self.progress.loss_sum, self.progress.loss_count = 0.0, 0
        return saved

    def _settings(self, threads: ThreadChoice | None) -> list[tuple[str, object]]:
        acc = self.accelerator
        precision = precision_text(self.config, acc.mixed_precision)
        rows = settings(self.config, self.plan, precision, threads)
        return [*rows, ("output", self.out), ("processes", acc.num_processes)]

    def run(self, stop_after_epoch: int | None = None) -> TrainResult:
        acc = self.accelerator
        threads = cpu_threads(self.config, self.target.denoiser)
        resumed = self.start.progress
        # TensorBoard hides what a killed run logged after the step it resumes from.
        purge = resumed.step + 1 if resumed is not None else None
        logs = self.out / "logs"
        with (
            Monitor(logs, self.plan.total_steps, acc.is_main_process, purge) as monitor,
            torch_threads(threads.count if threads else None),
        ):
            self.monitor = monitor
            monitor.settings(self._settings(threads))
            for note in self.notes:
                monitor.note(f"note: {note}")
            self._setup()
            monitor.begin(self.progress.step)
            try:
                with self.stop.installed():
                    result = self._epochs(stop_after_epoch)
            except StopRequested:
                self._flush_loss()  # a diverged LoRA must not replace the last good file
                self.outputs.interrupted(self.progress)
                monitor.note(
                    f"stopped at step {self.progress.step}; continue with: lorakit train "
                    f"{self.out / 'config.toml'} --resume {self.out / 'state'}"
                )
                raise KeyboardInterrupt from None
            monitor.finished(
                self.outputs.last_saved, result.steps, result.epochs_done, self.out / "summary.json"
            )
            return result

    def _epochs(self, stop_after_epoch: int | None) -> TrainResult:
        for module in self.target.trained_modules():
            module.train()
        more = True
        while more and self.progress.epoch <= self.plan.epochs:
            epoch = self.progress.epoch
            if self.monitor is not None:
                self.monitor.epoch(epoch, self.plan.epochs)
            more = self._run_epoch(epoch)
            saved = self._finish_epoch(epoch)
            stop = stop_after_epoch is not None and epoch >= stop_after_epoch and more
            if (saved or stop) and more:
                self.outputs.save_state(force=stop)
            if stop:
                return TrainResult(self.out, self.progress.step, epoch)
            if more and self._stop_due():
                raise StopRequested
        self.outputs.finish(self.progress)
        return TrainResult(self.out, self.progress.step, self.progress.epoch - 1)


def train(
    config: TrainConfig,
    resume: Path | None = None,
    stop_after_epoch: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train `config`; with `resume`, continue exactly from a `state/` folder.

    A new run into a folder that holds another run is refused unless `overwrite` moves
    that run aside (`lorakit.training.rundir`).
    """
    return train_from(prepare_run_folder(config, resume, overwrite), config, stop_after_epoch)


def train_from(
    start: RunStart, config: TrainConfig, stop_after_epoch: int | None = None
) -> TrainResult:
    """Train from an already prepared run folder (the CLI writes files there in between)."""
    if start.progress is not None and start.progress.finished:
        report_finished(start, start.progress)
        return TrainResult(start.out, start.progress.step, start.progress.epoch - 1)
    return Trainer(config, start).run(stop_after_epoch)
