"""What keeps a local web app local: confined paths, an access token and CSRF checks.

A browser tab is a hostile neighbour: any page the user visits can send requests to
127.0.0.1. So every state change is a POST that must carry the page's CSRF token (a
random value only our own pages know), the Host header must name the address we serve
(DNS rebinding), and a server reachable from other machines needs an access token on
every request. Every path a request names is resolved (symlinks included) and must lie
inside one of the `--root` folders.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from fastapi import HTTPException, Request

from lorakit.errors import LorakitError

TOKEN_COOKIE = "lorakit_ui_token"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Roots:
    """The folders this UI may read and write; everything else is refused."""

    def __init__(self, folders: Sequence[Path]):
        if not folders:
            raise LorakitError("give at least one --root folder")
        for folder in folders:
            if not Path(folder).is_dir():
                raise LorakitError(f"--root {folder}: not a folder; pass an existing folder")
        self.folders = [Path(folder).resolve() for folder in folders]

    def describe(self) -> str:
        return ", ".join(str(f) for f in self.folders)

    def contains(self, path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved == root or resolved.is_relative_to(root) for root in self.folders)

    def resolve(self, text: str | Path, what: str = "path") -> Path:
        """The real path of `text` (absolute, or relative to the first root) if it lies
        inside a root; `..` parts are refused outright, symlinks are followed before the
        check so a link cannot lead outside."""
        raw = str(text).strip()
        if not raw:
            raise LorakitError(f"{what} is empty; pick a folder or file inside {self.describe()}")
        if ".." in PurePath(raw).parts:
            raise LorakitError(f"{what} {raw}: '..' is not allowed; give the path without it")
        candidate = Path(raw).expanduser()
        if not candidate.is_absolute():
            candidate = self.folders[0] / candidate
        if not self.contains(candidate):
            raise LorakitError(
                f"{what} {raw} is outside the folders this UI may open ({self.describe()}); "
                "pick one inside them or restart lorakit ui with --root"
            )
        return candidate.resolve()

    def existing_folder(self, text: str | Path, what: str = "folder") -> Path:
        path = self.resolve(text, what)
        if not path.is_dir():
            raise LorakitError(f"{what} {text}: no such folder; check the path")
        return path


@dataclass
class Guard:
    """The server's secrets: the optional access token and the CSRF token of its pages."""

    token: str | None
    hosts: set[str] = field(default_factory=set)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def host_ok(self, request: Request) -> bool:
        """False for Host headers we do not serve (a rebinding attack names its own domain)."""
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
        return not self.hosts or host in self.hosts

    def token_ok(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = (
            request.query_params.get("token")
            or request.cookies.get(TOKEN_COOKIE)
            or request.headers.get("x-lorakit-token")
            or ""
        )
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def check_csrf(self, request: Request) -> None:
        """POSTs carry the token in a header (htmx) or a form field (plain forms)."""
        if request.method in SAFE_METHODS:
            return
        given = request.headers.get(CSRF_HEADER)
        if given is None and "form" in request.headers.get("content-type", ""):
            given = str((await request.form()).get(CSRF_FIELD, ""))
        if not given or not hmac.compare_digest(given.encode(), self.csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page")
