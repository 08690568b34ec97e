"""The network part of a kohya_ss config: LoRA type, rank/alpha, conv and LyCORIS args.

kohya_ss turns the GUI's LoRA type into sd-scripts' `--network_module` and
`--network_args` (`algo=loha`, `conv_dim=8`, `dora_wd=True`, ...), and users may replace
them in `additional_parameters`. Both roads end here, so a config names the same network
whichever way it was saved. Types lorakit does not train are refused before anything is
written.
"""

from __future__ import annotations

from lorakit.training import import_kohya_schema as schema
from lorakit.training.import_common import Reader, arg_value, network_size, words

# Network args kohya_ss passes per LoRA type ("if value": zero and blank ones are left out).
_BLOCK_ARGS = words(
    """
    down_lr_weight mid_lr_weight up_lr_weight block_lr_zero_threshold block_dims
    block_alphas conv_block_dims conv_block_alphas rank_dropout module_dropout
    """
)
_LYCORIS_ARGS = words(
    """
    conv_dim conv_alpha rank_dropout bypass_mode dora_wd module_dropout use_tucker
    use_scalar rank_dropout_scale train_norm
    """
)
_LOKR_ARGS = words("factor use_cp decompose_both")
_LABELS = {"locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}
# Network args whose value here is what lorakit's LoRA/LoCon does anyway.
_NEUTRAL_ARGS = {"preset": "full"}


def _refuse(reader: Reader, what: str) -> None:
    raise reader.error(
        f"{what} is not supported: lorakit trains LoRA_type Standard (LoRA), Kohya LoCon, "
        "LyCORIS/LoCon (LoRA on convolutions too), LyCORIS/LoHa or LyCORIS/LoKr; choose one "
        "of those in kohya_ss and save the config again"
    )


def _network_args(reader: Reader, lora_type: str) -> dict[str, str]:
    """The network args sd-scripts receives: built by kohya_ss from the LoRA type's fields,
    or replaced by `--network_args` in additional_parameters."""
    given = reader.data.get("network_args")
    if isinstance(given, list):
        pairs = [str(item).partition("=") for item in given]
        if any(not sep for _, sep, _ in pairs):
            raise reader.error("additional_parameters --network_args items must be name=value")
        return {name: value for name, _, value in pairs}
    algo = schema.LYCORIS_ALGOS.get(lora_type)
    if algo:
        names = _LYCORIS_ARGS | (_LOKR_ARGS if algo == "lokr" else set())
        args = {name: reader.text(name) for name in sorted(names)}
        return args | {"preset": reader.text("LyCORIS_preset"), "algo": algo}
    args = {"conv_dim": reader.text("conv_dim"), "conv_alpha": reader.text("conv_alpha")}
    args = args if lora_type == "Kohya LoCon" else {}
    for key in sorted(_BLOCK_ARGS):
        if arg_value(reader.text(key) or "0") not in (0, False, ""):
            args[key] = reader.text(key)
    return args


def _module(reader: Reader, args: dict[str, str]) -> None:
    """The network type from sd-scripts' --network_module, LyCORIS' algo and dora_wd; any
    other module or algo is refused."""
    module = reader.text("network_module") or "networks.lora"
    algo = args.pop("algo", "lora" if module == "lycoris.kohya" else "")
    algo = algo.strip("\"'").lower()
    if module not in ("networks.lora", "lycoris.kohya"):
        _refuse(reader, f"additional_parameters --network_module {module}")
    if algo and algo not in ("lora", "locon", "loha", "lokr"):
        _refuse(reader, f"network_args algo={algo} (LyCORIS)")
    dora = arg_value(args.pop("dora_wd", "") or "0") is True
    if dora and algo in ("loha", "lokr"):
        _refuse(reader, f"dora_wd with LyCORIS algo {algo} (DoRA is trained on LoRA/LoCon)")
    kind = "dora" if dora else {"loha": "loha", "lokr": "lokr"}.get(algo, "lora")
    if kind != "lora":
        reader.set("network.type", kind)
    if kind == "lokr":
        _lokr_factor(reader, args)


def _lokr_factor(reader: Reader, args: dict[str, str]) -> None:
    """LoKr's `factor` (-1: LyCORIS' near-square split); 0 is refused by the config."""
    factor = arg_value(args.pop("factor", "-1") or "-1")
    if isinstance(factor, bool) or not isinstance(factor, int):
        raise reader.error(f"network factor must be a whole number, got {factor!r}; fix it")
    if factor != -1:
        reader.set("network.factor", factor)


def _conv(reader: Reader, args: dict[str, str]) -> None:
    """LoCon convolutions: conv_dim 0 trains none; conv_alpha 0 is conv_dim, none is 1
    (sd-scripts' networks.lora)."""
    dim = arg_value(args.pop("conv_dim", "0") or "0")
    alpha = arg_value(args.pop("conv_alpha", "1") or "1")
    whole = isinstance(dim, (int, float)) and not isinstance(dim, bool) and dim == int(dim)
    if not whole or dim < 0:
        raise reader.error(f"network conv_dim must be a whole number, got {dim!r}; fix it")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise reader.error(f"network conv_alpha must be a number, got {alpha!r}; fix it")
    if not dim:
        return
    reader.set("network.conv_rank", int(dim))
    reader.set("network.conv_alpha", float(alpha or dim))


def kohya_network(reader: Reader) -> None:
    """Rank, alpha, conv and network type from the LoRA type's fields or --network_args;
    what lorakit cannot train is refused, what it does not apply is noted."""
    lora_type = reader.text("LoRA_type") or "Standard"
    if lora_type not in schema.LORA_TYPES:
        _refuse(reader, f"LoRA_type {lora_type}")
    network_size(reader, "network_dim", "network_alpha")
    args = _network_args(reader, lora_type)
    _module(reader, args)
    _conv(reader, args)
    for name, value in args.items():
        if arg_value(value or "0") not in (0, False, "", _NEUTRAL_ARGS.get(name)):
            reader.note(f"network arg {name}={value} is not supported by lorakit; ignored")
    algo = schema.LYCORIS_ALGOS.get(lora_type)
    if algo:
        reader.note(
            f"LoRA_type {lora_type}: trained as lorakit's {_LABELS[algo]}, on kohya LoCon's "
            "layers (a LyCORIS preset may pick others)"
        )
