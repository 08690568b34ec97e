"""The attribute classifier that judges generated images, and how it reads its verdicts.

A small CNN with one head per attribute plus a subject head ("none" or one of the
subjects). It keeps the 4×4 feature map flat instead of pooling it, because position is
one of the attributes. Trained by tools/pretrain_tiny.py on rendered scenes passed through
the tiny VAE, so it judges the blur and colour shifts of decoded images as it would
clean ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from lorakit.synthetic.scenes import ATTRIBUTES, SIDE
from lorakit.synthetic.subjects import SUBJECTS

NONE = "none"
HEADS: dict[str, tuple[str, ...]] = {
    **{name: values for name, values in ATTRIBUTES.items()},
    "subject": (NONE, *SUBJECTS),
}
WEIGHTS = Path(__file__).parent / "weights" / "classifier.safetensors"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, stride=2, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class AttributeClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, 32), _block(32, 64), _block(64, 96), _block(96, 96), nn.Flatten()
        )
        self.trunk = nn.Sequential(nn.Linear(96 * (SIDE // 16) ** 2, 256), nn.SiLU())
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(v)) for name, v in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head for images in [-1, 1], shape (N, 3, 64, 64)."""
        hidden = self.trunk(self.features(images))
        return {name: head(hidden) for name, head in self.heads.items()}


@dataclass(frozen=True)
class Verdict:
    """What the classifier sees in one image: a value per attribute, and the subject."""

    values: dict[str, str]

    @property
    def subject(self) -> str:
        return self.values["subject"]


def load_classifier(path: Path = WEIGHTS) -> AttributeClassifier:
    model = AttributeClassifier()
    model.load_state_dict(load_file(path))
    return model.eval()


def images_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of any size as a (N, 3, 64, 64) batch in [-1, 1]."""
    arrays = [
        np.asarray(im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX)) for im in images
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


@torch.no_grad()
def judge(model: AttributeClassifier, images: list[Image.Image]) -> list[Verdict]:
    logits = model(images_to_tensor(images))
    picks = {name: logits[name].argmax(1).tolist() for name in HEADS}
    return [
        Verdict({name: HEADS[name][picks[name][i]] for name in HEADS}) for i in range(len(images))
    ]
