"""Peak resident memory of loading a FLUX.1 transformer in bf16 and with `fp8_base`.

    .venv/bin/python bench/flux_load_memory.py [--double 2] [--single 4] [--keep DIR]

Writes a BFL transformer file with random weights at FLUX.1's real width (3072, 24 heads,
MLP 12288, T5 width 4096) but only `--double` double and `--single` single blocks, once in
bf16 (as `flux1-dev.safetensors` ships) and once in float8 e4m3fn (the "fp8" downloads),
plus the tiny CLIP-L / T5 / VAE files of the test helpers. Each load then runs in a fresh
subprocess that reports its peak RSS (`VmHWM`; `ru_maxrss` beside it) and the bytes of the
loaded weights. Rows:

- `bf16`: `load_flux_model(dtype=bf16)`;
- `fp8 after`: the same, then `to_fp8_base` (the route before the loader took `fp8_base`:
  the whole transformer in bf16 first);
- `fp8 stream`: `load_flux_model(fp8_base=True)`, cast tensor by tensor.

"budget" is what a streamed load may take: the loaded weights + the largest BFL tensor read
in bf16 (single blocks' `linear1`) + the imports' resident set before loading (`import
torch` alone is printed as the floor). The writer runs in its own process too, so this
parent stays small and the children's `ru_maxrss` is theirs. Linux only (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9

WRITE = """
import json, shutil, sys
from pathlib import Path
import torch
from lorakit.models.flux.memory import FP8
from lorakit.models.flux.model import bundled_flux_dir
from lorakit.models.tensors import read_index
from lorakit.network.tensorfile import Entry, write_streamed
from tests.helpers.flux import tiny_flux_pipeline, write_flux_files, write_random_bfl

root, double, single = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
pipe = tiny_flux_pipeline("dev")
pipe.save_pretrained(root / "config", safe_serialization=True)
shutil.rmtree(root / "config" / "transformer")  # the folder: the encoders' and VAE's configs
config = json.loads((bundled_flux_dir("dev") / "transformer" / "config.json").read_text())
config.update(num_layers=double, num_single_layers=single)
(root / "config" / "transformer").mkdir()
(root / "config" / "transformer" / "config.json").write_text(json.dumps(config))
write_flux_files(pipe, root / "parts")
bf16 = write_random_bfl(root / "flux-bf16.safetensors", config, dtype=torch.bfloat16)
index = read_index(bf16)
entries = [Entry(key, FP8, info.shape) for key, info in index.items()]
generator = torch.Generator().manual_seed(0)
values = (torch.empty(e.shape).normal_(0.0, 0.02, generator=generator).to(FP8) for e in entries)
write_streamed(root / "flux-fp8.safetensors", entries, values)
"""

CHILD = """
import json, resource, sys, time

def peak():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

mode = sys.argv[1]
import torch
if mode == "torch":
    print(json.dumps({"peak": peak()}))
    raise SystemExit
from lorakit.models.flux.loader import load_flux_model
from lorakit.models.flux.memory import to_fp8_base

folder, transformer, clip_l, t5xxl, ae = sys.argv[2:]
before, start = peak(), time.perf_counter()
model = load_flux_model(
    transformer, dtype=torch.bfloat16, clip_l=clip_l, t5xxl=t5xxl, ae=ae, config=folder,
    fp8_base=mode == "fp8 stream",
)
if mode == "fp8 after":
    to_fp8_base(model.transformer)
seconds = time.perf_counter() - start
modules = (model.transformer, model.vae, *model.text_encoders)
size = lambda m: sum(t.numel() * t.element_size() for t in m.state_dict().values())
print(json.dumps({
    "before": before, "peak": peak(), "seconds": seconds,
    "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "weights": sum(size(m) for m in modules), "transformer": size(model.transformer),
}))
"""


def python(script: str, *args: str) -> dict[str, float]:
    """Run `script` in a fresh interpreter from the repository root; its last JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"{args[:1]} failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def largest_tensor(path: Path, itemsize: int = 2) -> int:
    """Bytes of the file's largest tensor read in a dtype of `itemsize` (bf16: 2)."""
    with path.open("rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    header.pop("__metadata__", None)
    return max(math.prod(entry["shape"]) for entry in header.values()) * itemsize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--double", type=int, default=2, help="double blocks (FLUX.1: 19)")
    parser.add_argument("--single", type=int, default=4, help="single blocks (FLUX.1: 38)")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        print(f"writing {args.double} double + {args.single} single blocks…", file=sys.stderr)
        python(WRITE, str(root), str(args.double), str(args.single))
        parts = [str(root / "parts" / f"{name}.safetensors") for name in ("clip_l", "t5xxl", "ae")]
        floor = python(CHILD, "torch")["peak"]
        print(f"import torch alone: {floor / GB:.2f} GB peak RSS")
        print(
            f"{'file':<21} {'load':<10} {'file GB':>7} {'tr GB':>6} {'wts GB':>6} "
            f"{'before':>6} {'peak GB':>7} {'maxrss':>6} {'budget':>6} {'+load/wts':>9} {'s':>5}"
        )
        for name, modes in (
            ("flux-bf16.safetensors", ("bf16", "fp8 after", "fp8 stream")),
            ("flux-fp8.safetensors", ("fp8 after", "fp8 stream")),
        ):
            path = root / name
            for mode in modes:
                r = python(CHILD, mode, str(root / "config"), str(path), *parts)
                budget = r["weights"] + largest_tensor(path) + r["before"]
                print(
                    f"{name:<21} {mode:<10} {path.stat().st_size / GB:7.2f} "
                    f"{r['transformer'] / GB:6.2f} {r['weights'] / GB:6.2f} "
                    f"{r['before'] / GB:6.2f} {r['peak'] / GB:7.2f} {r['maxrss'] / GB:6.2f} "
                    f"{budget / GB:6.2f} {(r['peak'] - r['before']) / r['weights']:9.2f} "
                    f"{r['seconds']:5.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
