"""Atomic file writes, and output places checked before any work is spent on them.

A crash or Ctrl-C never leaves a half-written output behind: at worst a hidden temporary
(`.<name>.<random>.tmp`, see `temp_target`) that the next run of the same command removes.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lorakit.errors import LorakitError

# `tempfile.mkstemp` names: the prefix, 8 random characters, the suffix.
_TEMP = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success.

    The temporary file lives in the same folder so the final `os.replace` is atomic on
    POSIX and Windows; on any exception it is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give outputs the mode a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def temp_target(path: Path) -> str | None:
    """The file name an `atomic_path` temporary was for; None for any other file."""
    match = _TEMP.fullmatch(path.name)
    return match["target"] if match else None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: str | os.PathLike[str], what: str) -> None:
    """Raise a one-line `LorakitError` unless files can be written in `folder` (created as
    needed), so a bad output place stops a command before it loads anything.

    A probe file is created and removed in the nearest existing folder: permission bits
    alone say nothing for root, and nothing else tells a read-only mount apart.
    """
    folder = Path(folder)
    existing = _nearest_existing(folder.absolute())
    if not existing.is_dir():
        raise LorakitError(
            f"{what} {folder}: {existing} is a file, not a folder; choose another {what}"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".lorakit-probe-", dir=existing)
    except OSError as exc:
        raise LorakitError(
            f"{what} {folder}: cannot write in {existing} ({exc.strerror}); "
            f"choose a writable {what}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_writable_file(path: str | os.PathLike[str], what: str) -> None:
    """Like `check_writable_folder`, for an output file: it must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise LorakitError(f"{what} {path} is a folder; name a file, e.g. {path / 'out'}")
    check_writable_folder(path.parent, what)
