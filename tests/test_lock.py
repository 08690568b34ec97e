"""tools/check_lock.py: the lock CI installs must agree with pyproject.toml and the venv."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "tools" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lock(check_lock) -> dict[str, str]:
    return check_lock.read_lock(ROOT / "requirements.lock")


@pytest.fixture(scope="module")
def roots(check_lock) -> list[Requirement]:
    return check_lock.project_requirements(ROOT / "pyproject.toml")


def test_the_committed_lock_agrees(check_lock, lock, roots) -> None:
    assert check_lock.problems(lock, roots) == []
    assert "torch" not in lock  # torch comes from TORCH_SPEC, CPU or CUDA
    assert {"transformers", "peft", "diffusers", "mpmath"} <= set(lock)


def test_a_new_dependency_missing_from_the_lock_is_named(check_lock, lock, roots) -> None:
    found = check_lock.problems(lock, [*roots, Requirement("left-pad>=1")])
    assert any("left-pad" in line and "no left-pad" in line for line in found)


def test_a_range_that_excludes_the_pin_is_named(check_lock, lock, roots) -> None:
    narrowed = [Requirement("rich>=99") if r.name == "rich" else r for r in roots]
    found = check_lock.problems(lock, narrowed)
    assert found == [f"pyproject.toml needs rich>=99 but the lock pins rich=={lock['rich']}"]


def test_missing_and_stale_pins_are_named(check_lock, lock, roots) -> None:
    edited = {k: v for k, v in lock.items() if k != "mpmath"} | {"left-pad": "1.3.0"}
    found = check_lock.problems(edited, roots)
    assert "the lock misses mpmath, which the project pulls in" in found
    assert "the lock pins left-pad, which nothing needs" in found


def test_a_venv_that_differs_from_the_lock_is_named(check_lock, lock, roots) -> None:
    found = check_lock.problems({**lock, "rich": "0.1"}, roots)
    assert any(line.startswith("rich: the lock pins 0.1, the venv has") for line in found)


def test_the_command_fails_with_the_fix(check_lock, tmp_path: Path, capsys) -> None:
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    broken = tmp_path / "requirements.lock"
    broken.write_text(text.replace("\nrich==", "\nrich-old=="), encoding="utf-8")
    assert check_lock.main(["check_lock", str(broken)]) == 1
    assert "run `make lock`" in capsys.readouterr().err
