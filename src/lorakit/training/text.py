"""Captions → U-Net conditioning, the way SD1.5 and SDXL were trained.

SD1.5 conditions on the last hidden state of its CLIP encoder (with `clip_skip` N, on the
N-th from last, passed through the final layer norm, as A1111 and kohya do). SDXL
concatenates the penultimate hidden states of both encoders (clip_skip counts from
there) and adds the projected pooled output of the second encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lorakit.models import BaseModel


def tokenize(base: BaseModel, captions: Sequence[str], device: torch.device) -> list[torch.Tensor]:
    return [
        tok(
            list(captions),
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device, non_blocking=True)
        for tok in base.tokenizers
    ]


def encode(
    base: BaseModel, captions: Sequence[str], clip_skip: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states [B, 77, D], pooled [B, P] for SDXL else None); gradients flow to the
    text encoders when they are being trained."""
    ids = tokenize(base, captions, device)
    if not base.is_sdxl:
        encoder = base.text_encoders[0]
        out = encoder(ids[0], output_hidden_states=clip_skip > 1)
        if clip_skip == 1:
            return out.last_hidden_state, None
        hidden = out.hidden_states[-clip_skip]
        return _final_norm(encoder)(hidden), None
    states, pooled = [], None
    for encoder, token_ids in zip(base.text_encoders, ids, strict=True):
        out = encoder(token_ids, output_hidden_states=True)
        states.append(out.hidden_states[-(clip_skip + 1)])
        pooled = getattr(out, "text_embeds", None)
    return torch.cat(states, dim=-1), pooled


def _final_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    """The encoder's final layer norm (transformers 5 dropped the `text_model.` level)."""
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm
