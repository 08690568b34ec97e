"""Peak resident memory of loading full-size single-file checkpoints.

    .venv/bin/python bench/load_memory.py [--families sd15 sdxl] [--dtypes bf16 fp32] [--keep DIR]

Writes full-size SD1.5 and SDXL base checkpoints with random fp16 weights in the released
key layouts (as `v1-5-pruned-emaonly` and `sd_xl_base_1.0` ship: fp16) into a temporary
folder, tensor by tensor, plus an SD1.5 `.ckpt`. Then each load runs in a fresh subprocess,
which reports its own peak RSS (`VmHWM` of /proc/self/status; `ru_maxrss` would include
this parent's peak, which Linux carries across fork and exec). Prints one row per load:
file size, weights' size in the target dtype, peak RSS of the process, peak above what the
imports took, that over the weights, and seconds. "dry run" rows name the family only
(what `lorakit train --dry-run` reads). Needs ~7 GB of disk for SDXL and, for SDXL in
fp32, ~15 GB of RAM; Linux only (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the LDM writer lives in the test helpers

GB = 1e9
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

CHILD = """
import json, sys, time
import torch
from lorakit.models import detect_family, load_base_model

def peak():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

path, dtype = sys.argv[1], sys.argv[2]
before, start = peak(), time.perf_counter()
if dtype == "dry run":
    detect_family(path)
    weights = 0
else:
    base = load_base_model(path, dtype=getattr(torch, dtype))
    modules = (base.unet, base.vae, *base.text_encoders)
    weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
seconds = time.perf_counter() - start
print(json.dumps({"before": before, "peak": peak(), "weights": weights, "seconds": seconds}))
"""


def measure(path: Path, dtype: str) -> dict[str, float]:
    """One load of `path` in `dtype` ("dry run": the family only) in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), dtype], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{path} ({dtype}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_files(folder: Path, families: list[str]) -> list[Path]:
    """The random-weight checkpoints: each family's .safetensors, and SD1.5's .ckpt."""
    import torch
    from safetensors.torch import load_file
    from tests.helpers.ldm import write_random_ldm

    files = []
    for family in families:
        print(f"writing {family}…", file=sys.stderr)
        files.append(write_random_ldm(folder / f"{family}.safetensors", family))
        if family == "sd15":
            files.append(folder / "sd15.ckpt")
            torch.save({"state_dict": load_file(files[-2])}, files[-1])
    return files


def row(path: Path, dtype: str, result: dict[str, float]) -> str:
    above = result["peak"] - result["before"]
    weights = result["weights"]
    ratio = f"{above / weights:5.2f}" if weights else "    -"
    size = f"{weights / GB:7.2f}" if weights else "      -"
    return (
        f"{path.name:<18} {dtype:<8} {path.stat().st_size / GB:7.2f} {size} "
        f"{result['peak'] / GB:8.2f} {above / GB:8.2f} {ratio} {result['seconds']:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["sd15", "sdxl"], choices=["sd15", "sdxl"])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=list(DTYPES))
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        files = write_files(folder, args.families)
        print(
            f"{'file':<18} {'dtype':<8} {'file GB':>7} {'wts GB':>7} {'peak GB':>8} "
            f"{'+load GB':>8} {'ratio':>5} {'seconds':>7}"
        )
        for path in files:
            for dtype in [*args.dtypes, "dry run"]:
                print(row(path, dtype, measure(path, DTYPES.get(dtype, dtype))), flush=True)


if __name__ == "__main__":
    main()
