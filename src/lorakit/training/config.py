"""The typed training config: one TOML file, nested sections, defaults that follow the guides.

Why pydantic with `extra="forbid"`: the guides' users copy settings between tools, and a
misspelt key (``unet_lr`` as ``unet_Lr``) must fail loudly with the closest valid name instead
of training silently with the default. Every error becomes one `LorakitError` line naming the
file, the key and the fix.

Defaults follow the guides: rank 32 / alpha 16 (guide 003 "start with rank 32", alpha half the
rank), U-Net LR 1e-4 and text-encoder LR 5e-5 (guides 000/003), AdamW8bit with a cosine
schedule (guides 000/001), batch 1, fp16, cached latents, 10 epochs saving every epoch
(guide 001), captions from ``.txt``. `resolution = None` means the family's native size
(512 for SD1.5, 1024 for SDXL).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.training.config_checks import check_consistency, explain

OptimizerName = Literal["adamw", "adamw8bit", "adafactor", "prodigy", "dadaptadam", "lion"]
SchedulerName = Literal[
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "adafactor",
]
Precision = Literal["no", "fp16", "bf16"]
SavePrecision = Literal["fp32", "fp16", "bf16"]
CacheMode = Literal["memory", "disk", "none"]
# Keys that were true/false switches before they took a choice, and what those values read as.
LEGACY_FLAGS: dict[str, dict[bool, str]] = {
    "training.cache_text_encoder": {True: "memory", False: "none"},
}


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    path: str = ""
    family: Literal["sd15", "sdxl", "tiny", "flux1"] | None = None
    config: str | None = None
    """A diffusers model folder whose configs describe a single file of another size
    (default: lorakit's bundled SD1.5/SDXL/FLUX.1 configs). Only its *config.json files are read."""
    clip_l: str | None = None
    t5xxl: str | None = None
    ae: str | None = None
    """FLUX.1 only: the CLIP-L, T5-XXL and VAE files a BFL transformer file
    (`flux1-dev.safetensors`) lacks; they replace what an all-in-one file holds."""
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Frozen-weight dtype; "auto" follows `training.mixed_precision`."""


class DatasetSection(Section):
    path: str | list[str] = ""
    caption_ext: str = ".txt"
    resolution: int | None = Field(default=None, ge=64)
    enable_buckets: bool = True
    bucket_min: int = Field(default=256, ge=64)
    bucket_max: int = Field(default=2048, ge=64)
    bucket_step: int = Field(default=64, ge=8)
    repeats: int | None = Field(default=None, ge=1)
    """Overrides the `N_` folder repeats (and the 1 of a flat folder) when set."""
    flip_aug: bool = False
    color_aug: bool = False
    shuffle_caption: bool = False
    keep_tokens: int = Field(default=0, ge=0)
    caption_dropout: float = Field(default=0.0, ge=0.0, le=1.0)
    trigger: str = ""
    reg_path: str | None = None
    prior_loss_weight: float = Field(default=1.0, ge=0.0)

    @field_validator("caption_ext")
    @classmethod
    def _dotted(cls, value: str) -> str:
        return value if value.startswith(".") else f".{value}"


class NetworkSection(Section):
    """The network to train.

    `type`: "lora" (sd-scripts' LoRA; with `conv_rank` it is LoCon, as today), "locon"
    (the same LoRA with the 3×3 convs always on: `conv_rank`/`conv_alpha` default to
    `rank`/`alpha`, LyCORIS' defaults), "dora" (LoRA + LyCORIS' weight decomposition,
    `dora_scale`), "loha" or "lokr" (LyCORIS' Hadamard / Kronecker products). Every type
    takes `rank`/`alpha`; `conv_rank` adds its conv variant. LoHa/LoKr/DoRA files load in
    lorakit, ComfyUI and A1111, not in diffusers' `load_lora_weights` for LoHa/LoKr.
    """

    type: Literal["lora", "locon", "dora", "loha", "lokr"] = "lora"
    rank: int = Field(default=32, ge=1)
    alpha: float = Field(default=16.0, gt=0.0)
    conv_rank: int | None = Field(default=None, ge=1)
    conv_alpha: float | None = Field(default=None, gt=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    weights: str | None = None
    """A LoRA file to continue from (guide 000's fix for an undertrained LoRA)."""
    factor: int = Field(default=-1, ge=-1)
    """LoKr only: the size of the small Kronecker factor (-1: each size split closest to
    a square, LyCORIS' default)."""

    def conv(self) -> tuple[int | None, float | None]:
        """(conv_rank, conv_alpha) as trained: "locon" defaults them to rank/alpha."""
        if self.type != "locon":
            return self.conv_rank, self.conv_alpha
        return self.conv_rank or self.rank, self.conv_alpha or self.alpha


class OptimizerSection(Section):
    name: OptimizerName = "adamw8bit"
    unet_lr: float = Field(default=1e-4, ge=0.0)
    text_encoder_lr: float | list[float] = 5e-5
    """One LR for every text encoder, or [TE1, TE2] for SDXL; 0 freezes the encoder."""
    weight_decay: float = Field(default=0.01, ge=0.0)
    max_grad_norm: float = Field(default=1.0, ge=0.0)
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower().replace("_", "") if isinstance(value, str) else value

    @field_validator("text_encoder_lr")
    @classmethod
    def _te_lr(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not 1 <= len(values) <= 2 or any(v < 0 for v in values):
            raise ValueError("give one learning rate >= 0 or two ([te1, te2])")
        return value


class SchedulerSection(Section):
    name: SchedulerName = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Warmup as a fraction of the run's total steps (kohya_ss' "LR warmup %" / 100): the
    count is only known once the dataset is planned, so `with_warmup_steps` turns it into
    `warmup_steps` and the run's config.toml records the steps."""
    num_cycles: int = Field(default=1, ge=1)
    power: float = Field(default=1.0, gt=0.0)


class TrainingSection(Section):
    epochs: int = Field(default=10, ge=1)
    max_train_steps: int | None = Field(default=None, ge=1)
    """When set, training stops after this many optimizer steps (epochs follow from it)."""
    batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    mixed_precision: Precision = "fp16"
    seed: int = 42
    gradient_checkpointing: bool = False
    cache_latents: CacheMode = "memory"
    cache_text_encoder: CacheMode = "memory"
    """Text-encoder outputs per caption, computed once: in memory, in safetensors files
    under `<output_dir>/cache/text` ("disk": later runs and resumes read them back; FLUX.1
    then keeps T5-XXL off the device), or "none". Only while no text encoder trains and
    captions are fixed strings. true/false (older configs) read as "memory"/"none"."""
    clip_skip: int = Field(default=1, ge=1)
    noise_offset: float = Field(default=0.0, ge=0.0)
    min_snr_gamma: float | None = Field(default=None, gt=0.0)
    prediction: Literal["auto", "epsilon", "v_prediction"] = "auto"
    log_every_n_steps: int = Field(default=10, ge=1)
    """How often the loss is read back from the device (each read is a host sync)."""
    cpu_threads: int | None = Field(default=None, ge=1)
    """Torch threads on a machine without CUDA; unset: `lorakit.threads`' rule decides."""

    @field_validator("cache_text_encoder", mode="before")
    @classmethod
    def _cache_flag(cls, value: Any) -> Any:
        """Configs written before "disk" existed hold a boolean: true is "memory", false "none"."""
        if isinstance(value, bool):
            return LEGACY_FLAGS["training.cache_text_encoder"][value]
        return value


class SavingSection(Section):
    output_dir: str = "output"
    name: str = "lora"
    save_every_n_epochs: int | None = Field(default=1, ge=1)
    save_every_n_steps: int | None = Field(default=None, ge=1)
    keep_last: int | None = Field(default=None, ge=1)
    save_precision: SavePrecision = "fp16"
    save_state: bool = True


class SamplingSection(Section):
    prompts: str | None = None
    every_n_steps: int | None = Field(default=None, ge=1)
    every_n_epochs: int | None = Field(default=1, ge=1)


class ValidationSection(Section):
    enabled: bool = True
    split: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Fraction of images held out; 0 validates on all training images."""
    seed: int = 1234
    timesteps: int = Field(default=4, ge=1)
    """Fixed timesteps per image, spread evenly over the schedule."""


class FluxSection(Section):
    """FLUX.1 training (`lorakit.models.flux.flow.FlowConfig`, whose defaults these are:
    sd-scripts' README settings, checked equal in the tests): how σ is drawn and the
    guidance value dev is conditioned on."""

    timestep_sampling: Literal["shift", "sigmoid", "uniform"] = "shift"
    flow_shift: float = Field(default=3.0, gt=0.0)
    sigmoid_scale: float = Field(default=1.0, gt=0.0)
    guidance: float = Field(default=1.0, ge=0.0)
    fp8_base: bool = False
    """sd-scripts' `--fp8_base`: the blocks' frozen Linear weights stored as float8 e4m3,
    computed in bf16 (`lorakit.models.flux.memory`)."""
    blocks_to_swap: int = Field(default=0, ge=0)
    """sd-scripts' `--blocks_to_swap N`: N // 2 double and (N - N // 2) × 2 single blocks
    keep their weights on the CPU, copied to the GPU for each forward and backward."""


class TrainConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    saving: SavingSection = Field(default_factory=SavingSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    flux: FluxSection | None = None
    """FLUX.1 settings; unset (and absent from an SD run's config.toml) means the defaults."""

    def dataset_paths(self) -> list[Path]:
        paths = self.dataset.path
        return [Path(p) for p in ([paths] if isinstance(paths, str) else paths)]

    def text_encoder_lrs(self, count: int) -> list[float]:
        """One LR per text encoder (a single value applies to all)."""
        value = self.optimizer.text_encoder_lr
        values = value if isinstance(value, list) else [value]
        return values * count if len(values) == 1 else values[:count]

    def with_warmup_steps(self, total_steps: int) -> TrainConfig:
        """The same config with `scheduler.warmup_ratio` turned into steps of a run of
        `total_steps`, rounded as kohya_ss rounds its warmup percentage."""
        sched = self.scheduler
        if not sched.warmup_ratio:
            return self
        steps = round(sched.warmup_ratio * total_steps)
        warmup = sched.model_copy(update={"warmup_steps": steps, "warmup_ratio": 0.0})
        return self.model_copy(update={"scheduler": warmup})

    def to_dict(self) -> dict[str, Any]:
        """Plain data for TOML (None values dropped: TOML has no null, defaults restore them)."""
        return _drop_none(self.model_dump(mode="json"))


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    return data


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """Validate `data` into a `TrainConfig`; the first problem becomes a one-line error."""
    try:
        config = TrainConfig.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        tail = f" (+{more} more)" if more else ""
        raise LorakitError(f"{source}: {explain(TrainConfig, first)}{tail}") from None
    check_consistency(config, source)
    return config


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LorakitError(f"{path}: config file not found; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise LorakitError(f"{path}: not valid TOML ({exc}); fix the syntax") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` → (["a", "b"], value); the value is a TOML literal, else a plain string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise LorakitError(f"--set {item!r}: write it as section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [p.strip() for p in key.strip().split(".")], value


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge nested dicts; values of `override` win."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: Mapping[str, Any], items: Iterable[str]) -> dict[str, Any]:
    """Apply `--set a.b=value` items to nested config data."""
    out = dict(data)
    for item in items:
        keys, value = parse_override(item)
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        out = merge(out, nested)
    return out


def load_config(
    path: Path | None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Read `path` (optional) over `base` data (e.g. an imported kohya JSON), then `--set`s."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = merge(data, read_toml(path))
    data = apply_overrides(data, overrides)
    return config_from_dict(data, str(path) if path is not None else "config")


def _absolute(value: str | None) -> str | None:
    return str(Path(value).absolute()) if value else value


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """The same config with every file and folder made absolute.

    The run's `config.toml` is a record to train again from, and it lives in the output
    folder: paths relative to where the first run started would break from anywhere else.
    """
    data = config.model_dump()
    paths = config.dataset.path
    data["dataset"]["path"] = (
        _absolute(paths) if isinstance(paths, str) else [_absolute(p) for p in paths]
    )
    for section, key in (
        ("model", "path"),
        ("model", "clip_l"),
        ("model", "t5xxl"),
        ("model", "ae"),
        ("dataset", "reg_path"),
        ("network", "weights"),
        ("sampling", "prompts"),
        ("saving", "output_dir"),
    ):
        data[section][key] = _absolute(data[section][key])
    return TrainConfig.model_validate(data)


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the config as TOML, atomically; `load_config(path)` gives it back."""
    atomic_write_text(path, tomli_w.dumps(config.to_dict()))
