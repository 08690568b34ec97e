"""FLUX.1's two memory savers for 12–16 GB cards: fp8 base weights and block swap.

- `to_fp8_base`: the Linears inside the double and single blocks (99 % of the
  transformer's parameters, all but the embedders, final layer, biases and RMSNorm scales)
  store their frozen weight as float8 e4m3 and upcast it per call to the compute dtype
  (autocast's bf16), as sd-scripts' `--fp8_base`. What stays in bf16 is tiny and is what
  rounding hurts most: the timestep/guidance/text embedders, the output projection and the
  norms. A base read from an fp8 file was widened to bf16 exactly (e4m3 ⊂ bf16), so casting
  it back gives the file's own fp8 values. `load_flux_model(fp8_base=True)` makes the same
  float8 weights as it reads the file, tensor by tensor, so the bf16 transformer (24 GB for
  FLUX.1 dev) never sits in memory whole; `to_fp8_base` then only marks the layers.
- `BlockSwap`: sd-scripts' `--blocks_to_swap N` (the last N // 2 double and
  (N - N // 2) × 2 single blocks). Their frozen weights live on `storage` (the CPU); the
  block's own parameters become meta tensors, and every call copies the weights to
  `device` and runs the block on the copies (`torch.func.functional_call`). The LoRA
  parameters inside stay where they are (on the device, trained by the optimizer). With
  gradient checkpointing nothing of a block is kept between its forward and its
  recomputation in backward, so a block's weights are on the device during its forward and
  again during its backward only, then dropped: the frozen weights never change, so "moving
  them back" is freeing the copy. Without checkpointing autograd would keep every copy until
  backward, which is why the training side requires it.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lorakit.errors import LorakitError

FP8 = torch.float8_e4m3fn
# sd-scripts' `enable_block_swap` keeps at least two blocks of each kind on the device.
KEPT_ON_DEVICE = 2


class Fp8Linear(nn.Linear):
    """A frozen Linear whose weight is stored as float8 e4m3 and upcast for each call to
    autocast's dtype (or the input's), so it computes as the bf16 layer did."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        enabled = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if enabled else x.dtype
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), self.weight.to(dtype), bias)


BLOCK_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")


def block_linears(transformer: nn.Module) -> dict[str, nn.Linear]:
    """The plain Linears inside the double and single blocks, by their name in
    `transformer` (its state dict holds `<name>.weight`): the layers fp8_base stores."""
    return {
        name: module
        for name, module in transformer.named_modules()
        if name.startswith(BLOCK_PREFIXES) and type(module) is nn.Linear
    }


def _has_nan(weight: torch.Tensor) -> bool:
    """Whether a float8 e4m3fn tensor holds a NaN: the codes with all seven magnitude bits
    set (the format has no infinities, and torch 2.13 saturates a cast beyond ±448, so a
    NaN comes from the weights). Tested on the bytes: widening float8 to check it is ≈10×
    slower on a CPU."""
    return bool((weight.view(torch.uint8) & 0x7F).max() == 0x7F)


def as_fp8_linear(module: nn.Linear) -> None:
    """Make `module` an `Fp8Linear` whose weight is float8 e4m3 (cast here, or already cast
    by the loader as it read the file: then `.to` is a no-op and only the range is checked)."""
    weight = module.weight.detach().to(FP8)
    if not weight.is_meta and _has_nan(weight):
        raise LorakitError(
            "flux.fp8_base: a block weight exceeds float8 e4m3's range (±448); "
            "train this model without fp8_base"
        )
    module.__class__ = Fp8Linear
    module.weight = nn.Parameter(weight, requires_grad=False)


def to_fp8_base(transformer: nn.Module) -> int:
    """Store every block Linear's weight as float8 e4m3 (biases keep their dtype); the
    number of layers converted (0 for a transformer loaded with `fp8_base`). Before a LoRA
    is injected (it wraps these Linears)."""
    linears = block_linears(transformer)
    for module in linears.values():
        as_fp8_linear(module)
    return len(linears)


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of `module`'s parameters as stored (fp8 counts 1 per element)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def swap_split(blocks_to_swap: int, double_blocks: int, single_blocks: int) -> tuple[int, int]:
    """(double, single) blocks sd-scripts swaps for `--blocks_to_swap N` (a double block
    counts as two singles), refused in one line above what the model allows."""
    double = blocks_to_swap // 2
    single = (blocks_to_swap - double) * 2
    if double > double_blocks - KEPT_ON_DEVICE or single > single_blocks - KEPT_ON_DEVICE:
        allowed = [
            n
            for n in range(2 * double_blocks + 1)
            if n // 2 <= double_blocks - KEPT_ON_DEVICE
            and (n - n // 2) * 2 <= single_blocks - KEPT_ON_DEVICE
        ]
        raise LorakitError(
            f"flux.blocks_to_swap = {blocks_to_swap}: this FLUX.1 ({double_blocks} double, "
            f"{single_blocks} single blocks) swaps at most {max(allowed, default=0)}"
        )
    return double, single


class SwappedBlock(nn.Module):
    """One transformer block whose frozen weights live on `storage` and are copied to
    `device` for each call; `moves` counts the copies (grad: training forward and its
    recomputation in backward; no_grad: validation)."""

    def __init__(
        self, block: nn.Module, device: torch.device | str, storage: torch.device | str
    ) -> None:
        super().__init__()
        self.block, self.device = block, torch.device(device)
        self.moves: Counter[str] = Counter()
        # A plain dict, not buffers: `.to()` of the transformer must not bring them back.
        self.stored: dict[str, torch.Tensor] = {}
        for name, param in list(block.named_parameters()):
            if param.requires_grad:
                continue  # the LoRA's: trained on the device
            self.stored[name] = param.detach().to(storage)
            owner, _, attr = name.rpartition(".")
            meta = nn.Parameter(param.detach().to("meta"), requires_grad=False)
            setattr(block.get_submodule(owner), attr, meta)

    def forward(self, *args: object, **kwargs: object) -> object:
        weights = {name: t.to(self.device, non_blocking=True) for name, t in self.stored.items()}
        self.moves["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return functional_call(self.block, weights, args, kwargs)


class BlockSwap:
    """The last blocks of a FLUX transformer (sd-scripts' choice) swapped as `SwappedBlock`,
    then everything else of it (the kept blocks, the embedders, every LoRA parameter) moved
    to `device`. Built on a transformer still on the CPU, after the LoRA is injected and
    frozen, so the full weights never reach the device at once."""

    def __init__(
        self,
        transformer: nn.Module,
        blocks_to_swap: int,
        device: torch.device | str,
        storage: torch.device | str = "cpu",
    ) -> None:
        doubles, singles = transformer.transformer_blocks, transformer.single_transformer_blocks
        double, single = swap_split(blocks_to_swap, len(doubles), len(singles))
        self.blocks: list[SwappedBlock] = []
        for blocks, count in ((doubles, double), (singles, single)):
            for index in range(len(blocks) - count, len(blocks)):
                blocks[index] = SwappedBlock(blocks[index], device, storage)
                self.blocks.append(blocks[index])
        self.double, self.single = double, single
        # `Module.to` without the swapped weights (meta now, which `to` cannot copy).
        transformer._apply(lambda t: t if t.is_meta else t.to(device))

    def moves(self, kind: str = "grad") -> list[int]:
        """Copies to the device per swapped block, double blocks first."""
        return [block.moves[kind] for block in self.blocks]
