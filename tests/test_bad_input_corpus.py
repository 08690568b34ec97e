"""Every bad input the issues named, through the `lorakit` command: one line on stderr,
exit 2, no traceback, nothing written and every file already there unchanged.

A case is one `Case(name, argv, setup)` line in CASES. In argv, `{tmp}` is the case's own
folder, `{model}` a tiny SD1.5 diffusers folder and `{config}` a valid training config
(`{tmp}/run.toml`: that model, concept images in `{tmp}/data`, output `{tmp}/out`). `setup`
puts the bad input on disk first; the helpers below build one in a call each.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
import torch
from safetensors.torch import save_file

from lorakit.cli.main import main
from tests.test_train_support import fast_config, make_concept

Setup = Callable[[Path], object]


@dataclass(frozen=True)
class Case:
    name: str
    argv: str
    """The command line after `lorakit`, split as a shell would."""
    setup: Setup = lambda tmp: None
    skip: str = ""


def _file(name: str, data: str | bytes = b"") -> Setup:
    """A file (text or bytes) at `{tmp}/name`, folders created as needed."""

    def make(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)

    return make


def _folder(name: str, mode: int = 0o755) -> Setup:
    def make(tmp: Path) -> None:
        (tmp / name).mkdir(parents=True)
        (tmp / name).chmod(mode)

    return make


def _all(*setups: Setup) -> Setup:
    return lambda tmp: [setup(tmp) for setup in setups]


class _WritesMarker:
    """A pickle that writes `{tmp}/marker` when loaded: a tampered state's payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _pickle(name: str) -> Setup:
    return lambda tmp: _file(name, pickle.dumps(_WritesMarker(tmp / "marker")))(tmp)


def _lora(name: str) -> Setup:
    """A small kohya-format LoRA file."""

    def make(tmp: Path) -> None:
        key = "lora_unet_down_blocks_0_attentions_0_proj_in"
        tensors = {
            f"{key}.lora_down.weight": torch.zeros(4, 32),
            f"{key}.lora_up.weight": torch.zeros(32, 4),
            f"{key}.alpha": torch.tensor(4.0),
        }
        save_file(tensors, str(tmp / name))

    return make


_SUMMARY = {"name": "tiny", "epochs": [{"epoch": 1, "step": 3, "file": "tiny-000001.safetensors"}]}
# What a run leaves (its state aside), with a temporary of a save a kill cut short.
_OLD_RUN = _all(
    _file("out/summary.json", json.dumps(_SUMMARY)),
    _file("out/config.toml", "[saving]\nname = 'tiny'\n"),
    _lora("out/tiny-000001.safetensors"),
    _file("out/.tiny-000002.safetensors.k1ll3d_x.tmp", b"\x00" * 64),
)
_PICKLE_IN_STATE = _pickle("out/state/custom_checkpoint_0.pkl")
_IN = _lora("in.safetensors")
_PROGRESS = {"epoch": 2, "step": 3, "epoch_batches": 0, "loss_sum": 0.0, "loss_count": 0}
# A state folder as lorakit writes it, with a `training.pt` that runs code when unpickled.
_TAMPERED_STATE = _all(
    _OLD_RUN,
    _file("out/state/complete", "lorakit state 2\n"),
    _file("out/state/progress.json", json.dumps(_PROGRESS | {"finished": False})),
    _file("out/state/rng-0.json", "{}"),
    _lora("out/state/lora.safetensors"),
    _pickle("out/state/training.pt"),
)
_ROOT = "root writes in a read-only folder" if os.geteuid() == 0 else ""
_LINUX = "" if sys.platform == "linux" else "Linux only"


def _kohya(name: str, **settings: object) -> Setup:
    """A kohya_ss GUI config for `{tmp}/data` into `{tmp}/out`, with inline sample prompts
    (which a refused import must not write either)."""

    def make(tmp: Path) -> None:
        paths = {"train_data_dir": str(tmp / "data"), "output_dir": str(tmp / "out")}
        data = {**paths, "sample_prompts": "sks disc", "sample_every_n_epochs": 1, **settings}
        _file(name, json.dumps(data))(tmp)

    return make


def _config_with(name: str, **dataset: object) -> Setup:
    """`{config}` with other [dataset] values, as `{tmp}/name`."""

    def make(tmp: Path) -> None:
        data = tomllib.loads((tmp / "run.toml").read_text(encoding="utf-8"))
        data["dataset"].update(dataset)
        _file(name, tomli_w.dumps(data))(tmp)

    return make


_KOHYA = "train --from-kohya {tmp}/kohya.json --set model.path='\"{model}\"'"
_LOKR_DORA = {"LoRA_type": "LyCORIS/LoKr", "network_dim": 100000, "factor": 8, "dora_wd": True}
_IA3 = {"LoRA_type": "LyCORIS/iA3", "network_dim": 1024, "network_alpha": 1024}


def _train_into(out: str) -> str:
    return f"train {{config}} --set saving.output_dir='\"{out}\"'"


_RESUME = "train {config} --resume {tmp}/out/state"
_CONVERT = "lora convert {tmp}/in.safetensors --to diffusers"

CASES = [
    Case("train: output_dir holds another run", "train {config}", _OLD_RUN),
    Case("train: output_dir is a file", "train {config}", _file("out", "notes")),
    Case("train: output_dir under a file", _train_into("{tmp}/f/out"), _file("f")),
    Case("train: output_dir read-only", _train_into("{tmp}/ro/out"), _folder("ro", 0o555), _ROOT),
    Case("train: output_dir in /proc", _train_into("/proc/lorakit"), skip=_LINUX),
    Case("train: --resume without a state", _RESUME, _OLD_RUN),
    Case("train: --resume of a state with pickles", _RESUME, _all(_OLD_RUN, _PICKLE_IN_STATE)),
    Case("train: --resume of a tampered training.pt", _RESUME, _TAMPERED_STATE),
    Case("train: --resume with --overwrite", _RESUME + " --overwrite", _OLD_RUN),
    Case("train: kohya LyCORIS/LoKr with DoRA", _KOHYA, _kohya("kohya.json", **_LOKR_DORA)),
    Case("train: kohya LyCORIS/iA3 config", _KOHYA, _kohya("kohya.json", **_IA3)),
    Case("train: kohya max_resolution 100", _KOHYA, _kohya("kohya.json", max_resolution="100")),
    Case(
        "train: TOML resolution 100", "train {tmp}/r.toml", _config_with("r.toml", resolution=100)
    ),
    Case("train: --set dataset.resolution=100", "train {config} --set dataset.resolution=100"),
    Case("generate: --out is a file", "generate x --model {model} --out {tmp}/o", _file("o")),
    Case("lora convert: output is a folder", _CONVERT + " {tmp}/d", _all(_IN, _folder("d"))),
    Case("lora convert: output under a file", _CONVERT + " {tmp}/f/x", _all(_IN, _file("f"))),
]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every file's bytes and mtime, every folder's name: what "nothing changed" compares."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case: Case, tmp_path: Path, tiny_sd15_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case.skip:
        pytest.skip(case.skip)
    make_concept(tmp_path / "data", count=2)
    config = fast_config(tiny_sd15_dir, tmp_path / "data", tmp_path / "out")
    (tmp_path / "run.toml").write_text(tomli_w.dumps(config.to_dict()), encoding="utf-8")
    case.setup(tmp_path)
    before = _snapshot(tmp_path)
    swap = {"{config}": "{tmp}/run.toml", "{tmp}": str(tmp_path), "{model}": str(tiny_sd15_dir)}
    argv = []
    for arg in shlex.split(case.argv):
        for key, value in swap.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lorakit: error: "), err
    assert out == ""
    assert _snapshot(tmp_path) == before
