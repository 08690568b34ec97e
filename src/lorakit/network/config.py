"""What a LoRA network is made of: rank, alpha, the optional conv (LoCon) part, dropout."""

from __future__ import annotations

from dataclasses import dataclass

from lorakit.errors import LorakitError


@dataclass
class LoRAConfig:
    """sd-scripts' network_dim / network_alpha / conv_dim / conv_alpha / network_dropout.

    `alpha` scales the update by alpha / rank; `conv_rank` adds LoRA to the UNet's 3×3
    convs (and, as sd-scripts does, to the ResNet blocks' time-embedding Linear and 1×1
    shortcuts at `rank`). `conv_alpha` defaults to `conv_rank`'s sd-scripts default of 1.
    """

    rank: int = 16
    alpha: float = 8.0
    conv_rank: int | None = None
    conv_alpha: float | None = None
    dropout: float = 0.0
    train_unet: bool = True
    train_text_encoder: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise LorakitError(f"rank must be >= 1, got {self.rank}")
        if self.conv_rank is not None and self.conv_rank < 1:
            raise LorakitError(f"conv_rank must be >= 1 or None, got {self.conv_rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise LorakitError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def effective_conv_alpha(self) -> float:
        return float(self.conv_alpha if self.conv_alpha is not None else 1.0)
