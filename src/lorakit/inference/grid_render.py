"""How the grid makes and describes its cells, one small object per model family.

The grid (`lorakit.inference.grid`) lays out columns (LoRA files), rows (weights) and
blocks (prompts) alike for every family; only how a cell is rendered and how the settings
are written differ. SD1.5/SDXL render through `lorakit.inference.generate`, the column's
file injected once and its multiplier set per row; FLUX.1 through `flux_generate`, the
file applied at each row's weight as `lorakit generate` applies a `<lora:name:weight>` tag.
Either way a cell is the image `lorakit generate` makes with the same seed and settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from lorakit.inference.flux_generate import (
    CFG,
    SAMPLER,
    FluxOptions,
    applied_flux_loras,
    flux_info,
    render_flux,
    resolved,
)
from lorakit.inference.generate import (
    GenerateOptions,
    generation_info,
    model_identity,
    render,
    resolve_size,
)
from lorakit.inference.metadata import GenerationInfo
from lorakit.inference.prompt import LoraRef
from lorakit.inference.samplers import canonical_sampler_name
from lorakit.models import BaseModel
from lorakit.models.flux.model import FluxModel
from lorakit.network.lora import LoRANetwork
from lorakit.progress import shown


class GridRenderer(Protocol):
    """What the grid asks of a model family."""

    def size(self) -> tuple[int, int]:
        """Width and height of every cell."""
        ...

    def column(self, path: Path) -> AbstractContextManager[None]:
        """The LoRA file `path` in the model for the block, then the base back."""
        ...

    def render(self, prompt: str, weight: float, seed: int) -> Image.Image:
        """One cell: `prompt` with the current column's LoRA at `weight` (outside a
        column: the base model)."""
        ...

    def caption(self, seed: int) -> str:
        """One line with what every cell shares, so a screenshot of the grid stands alone."""
        ...

    def info(self, prompt: str, seed: int, axes: Mapping[str, str]) -> GenerationInfo:
        """The grid PNG's infotext: the family's own settings line plus the X/Y/Z axes."""
        ...


def settings_line(
    seed: int,
    sampler: str,
    steps: int,
    cfg: float,
    size: tuple[int, int],
    source: Path,
    guidance: float | None = None,
) -> str:
    """The grid's caption: seed, sampler, steps, CFG (and FLUX.1 dev's guidance), size, model."""
    shown_guidance = [] if guidance is None else [f"guidance {guidance:g}"]
    parts = [f"seed {seed}", sampler, f"{steps} steps", f"CFG {cfg:g}", *shown_guidance]
    return " · ".join([*parts, f"{size[0]}×{size[1]}", model_identity(source)[0]])


@dataclass
class SDGridRenderer:
    """SD1.5/SDXL cells; `options` holds the shared settings (the grid sets prompt and seed)."""

    base: BaseModel
    options: GenerateOptions
    _network: LoRANetwork | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        canonical_sampler_name(self.options.sampler)  # a bad name stops before any render
        self.size()

    def size(self) -> tuple[int, int]:
        return resolve_size(self.base, self.options.width, self.options.height)

    @contextmanager
    def column(self, path: Path) -> Iterator[None]:
        """Loaded once per column; rows only change its multiplier."""
        self._network = LoRANetwork.from_file(self.base, path, 1.0)
        try:
            yield
        finally:
            self._network.remove()
            self._network = None

    def render(self, prompt: str, weight: float, seed: int) -> Image.Image:
        if self._network is not None:
            self._network.multiplier = weight
        options = dataclasses.replace(self.options, prompt=prompt)
        with shown() as progress:
            return render(self.base, options, seed, progress)[0]

    def caption(self, seed: int) -> str:
        o = self.options
        sampler = canonical_sampler_name(o.sampler)
        return settings_line(seed, sampler, o.steps, o.cfg, self.size(), self.base.source)

    def info(self, prompt: str, seed: int, axes: Mapping[str, str]) -> GenerationInfo:
        options = dataclasses.replace(self.options, prompt=prompt)
        return generation_info(self.base, options, seed, extra=dict(axes))


@dataclass
class FluxGridRenderer:
    """FLUX.1 cells with the variant's defaults (Euler, CFG 1, dev's guidance); `modules`:
    the separate ae / clip_l / t5xxl files, named in the infotext as `generate` names them."""

    model: FluxModel
    options: FluxOptions
    modules: Mapping[str, Path | None] = field(default_factory=dict)
    _lora: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.options = resolved(self.model, dataclasses.replace(self.options, batch=1))

    def size(self) -> tuple[int, int]:
        assert self.options.width is not None and self.options.height is not None
        return self.options.width, self.options.height

    @contextmanager
    def column(self, path: Path) -> Iterator[None]:
        """Remembered only: each row applies the file at its weight, as a tag would."""
        self._lora = path
        try:
            yield
        finally:
            self._lora = None

    def render(self, prompt: str, weight: float, seed: int) -> Image.Image:
        refs = [LoraRef(self._lora.stem, self._lora, weight)] if self._lora else []
        options = dataclasses.replace(self.options, prompt=prompt)
        with applied_flux_loras(self.model, refs):
            return render_flux(self.model, options, seed)[0]

    def caption(self, seed: int) -> str:
        o = self.options
        assert o.steps is not None
        source = self.model.source
        return settings_line(seed, SAMPLER, o.steps, CFG, self.size(), source, o.guidance)

    def info(self, prompt: str, seed: int, axes: Mapping[str, str]) -> GenerationInfo:
        options = dataclasses.replace(self.options, prompt=prompt)
        info = flux_info(self.model, options, seed, self.modules, {})
        info.extra.update(axes)
        return info
