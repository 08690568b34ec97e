"""The `lorakit` command starts without loading torch and the model libraries.

Those take seconds to import; `lorakit --help` or a typo in a sub-command must answer at
once, so building the parser may import only light modules. Each check runs in a fresh
interpreter because this test session has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The libraries that take seconds to import (wave-2 rule: none at module level in cli/).
HEAVY = ("torch", "diffusers", "transformers", "cv2", "onnxruntime")

_PROBE = """
import json, sys
from lorakit.cli.main import build_parser
parser = build_parser()
try:
    parser.parse_args(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {heavy})))
"""


def _heavy_imports(*argv: str) -> list[str]:
    code = _PROBE.replace("{heavy}", repr(set(HEAVY)))
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("--help",),
        ("dataset", "--help"),
        ("lora", "verify", "--help"),
        ("caption", "--help"),
        ("train", "--help"),
    ],
)
def test_parser_and_help_import_no_heavy_library(argv: tuple[str, ...]) -> None:
    assert _heavy_imports(*argv) == []


def test_probe_sees_a_heavy_import() -> None:
    """The probe itself works: once a handler's module is imported, its libraries show up."""
    code = _PROBE.replace("{heavy}", repr(set(HEAVY))).replace(
        "parser = build_parser()", "parser = build_parser(); import lorakit.dataset.face_detect"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "cv2" in json.loads(result.stdout.strip().splitlines()[-1])
