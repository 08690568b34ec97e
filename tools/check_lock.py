"""Fail when requirements.lock and pyproject.toml disagree (run by `make test`, so by CI).

The lock is what `make setup` installs, so it must (1) pin every requirement pyproject names
at a version its range allows, (2) hold exactly the packages those requirements pull in,
transitively (nothing missing, nothing stale), and (3) match what is installed in the venv.
Everything is read offline: the lock's pins, pyproject's ranges and the installed packages'
own metadata. torch is the one exception: it comes from TORCH_SPEC (CPU or CUDA build), so
the lock holds its dependencies but not torch itself.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
UNLOCKED = {"torch"}
FIX = "run `make lock` (it refreshes requirements.lock and runs the tests)"


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
            name, version = line.split(" ", 1)[0].split("==")
            pins[canonicalize_name(name)] = version
    return pins


def project_requirements(pyproject: Path) -> list[Requirement]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    extras = data["project"]["optional-dependencies"]
    names = data["project"]["dependencies"] + [req for group in extras.values() for req in group]
    return [Requirement(text) for text in names + data["build-system"]["requires"]]


def applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras or {""})


def closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots pull in, read from the installed packages' metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(req, set()) for req in roots]
    while todo:
        req, parent_extras = todo.pop()
        if not applies(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed: reported against the lock, its own needs unknown
        todo += [(Requirement(text), set(req.extras)) for text in requires]
    return names


def problems(lock: dict[str, str], roots: list[Requirement]) -> list[str]:
    found = []
    for req in roots:
        name = canonicalize_name(req.name)
        if name in UNLOCKED:
            continue
        if name not in lock:
            found.append(f"pyproject.toml needs {req} but the lock has no {name}")
        elif not req.specifier.contains(lock[name], prereleases=True):
            found.append(f"pyproject.toml needs {req} but the lock pins {name}=={lock[name]}")
    needed = closure(roots) - UNLOCKED
    found += [f"the lock misses {name}, which the project pulls in" for name in needed - set(lock)]
    found += [f"the lock pins {name}, which nothing needs" for name in set(lock) - needed]
    for name, version in lock.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            found.append(f"{name}: the lock pins {version}, the venv has {installed}")
    return found


def main(argv: list[str]) -> int:
    lock_path = Path(argv[1]) if len(argv) > 1 else ROOT / "requirements.lock"
    found = problems(read_lock(lock_path), project_requirements(ROOT / "pyproject.toml"))
    for line in found:
        print(f"{lock_path.name}: {line}", file=sys.stderr)
    if found:
        print(f"{lock_path.name} and pyproject.toml disagree: {FIX}", file=sys.stderr)
        return 1
    print(f"{lock_path.name} matches pyproject.toml and the venv")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
