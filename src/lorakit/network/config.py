"""What a network is made of: its type, rank, alpha, the optional conv part, dropout."""

from __future__ import annotations

from dataclasses import dataclass

from lorakit.errors import LorakitError

NETWORK_TYPES = ("lora", "dora", "loha", "lokr")


@dataclass
class LoRAConfig:
    """sd-scripts' network_dim / network_alpha / conv_dim / conv_alpha / network_dropout,
    and LyCORIS' algo (`type`) and LoKr `factor`.

    `type` is "lora" (LoCon when `conv_rank` is set), "dora" (LoRA with LyCORIS'
    weight decomposition, `dora_wd`), "loha" or "lokr". `alpha` scales the update by
    alpha / rank; `conv_rank` adds the type's conv variant to the UNet's 3×3 convs (and,
    as sd-scripts does, to the ResNet blocks' time-embedding Linear and 1×1 shortcuts at
    `rank`). `conv_alpha` defaults to `conv_rank`'s sd-scripts default of 1. `factor`
    (LoKr only) bounds the small Kronecker factor; -1 splits each size closest to a
    square. Dropout is LoRA's alone: LyCORIS has none for LoHa/LoKr/DoRA.
    """

    rank: int = 16
    alpha: float = 8.0
    conv_rank: int | None = None
    conv_alpha: float | None = None
    dropout: float = 0.0
    train_unet: bool = True
    train_text_encoder: bool = True
    type: str = "lora"
    factor: int = -1

    def __post_init__(self) -> None:
        if self.type not in NETWORK_TYPES:
            raise LorakitError(
                f"network type {self.type!r} unknown; use one of {', '.join(NETWORK_TYPES)}"
            )
        if self.rank < 1:
            raise LorakitError(f"rank must be >= 1, got {self.rank}")
        if self.conv_rank is not None and self.conv_rank < 1:
            raise LorakitError(f"conv_rank must be >= 1 or None, got {self.conv_rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise LorakitError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dropout and self.type != "lora":
            raise LorakitError(f"dropout is LoRA's only; set it to 0 for a {self.type} network")
        if self.factor != -1 and (self.type != "lokr" or self.factor < 1):
            raise LorakitError(f"factor {self.factor}: give -1 or a size >= 1, for lokr only")

    @property
    def effective_conv_alpha(self) -> float:
        return float(self.conv_alpha if self.conv_alpha is not None else 1.0)
