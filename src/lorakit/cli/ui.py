"""`lorakit ui`: the local web app over the same stages (needs `pip install lorakit[ui]`)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError

DEFAULT_PORT = 7865


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "lorakit" / "ui"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="open the web UI (local, offline)",
        description="Serve the lorakit web UI: projects, dataset, captions, training with a "
        "job queue, results and generation, in the browser. Binds 127.0.0.1; a --host other "
        "than loopback needs --token, which every request must then carry.",
    )
    parser.add_argument(
        "--root",
        action="append",
        type=Path,
        metavar="FOLDER",
        help="a folder the UI may open (repeatable; default: the current folder)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"projects, job queue and logs (default {default_data_dir()})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LORAKIT_UI_TOKEN"),
        help="access token required on every request (or LORAKIT_UI_TOKEN)",
    )
    parser.set_defaults(func=run)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LorakitError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
        ) from None
    sock.listen(128)
    return sock


def run(args: argparse.Namespace) -> int:
    from lorakit.ui.security import is_loopback

    if not is_loopback(args.host) and not args.token:
        raise LorakitError(
            f"--host {args.host} lets other machines connect; add --token SECRET "
            "(every request must then carry it) or keep the default 127.0.0.1"
        )
    try:
        import uvicorn

        from lorakit.ui.app import create_app
    except ModuleNotFoundError as exc:
        raise LorakitError(
            f"the web UI needs {exc.name}; install it with: pip install 'lorakit[ui]'"
        ) from None
    roots = args.root or [Path.cwd()]
    data_dir = args.data_dir or default_data_dir()
    app = create_app(roots, data_dir, token=args.token, host=args.host)
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    query = f"?token={args.token}" if args.token else ""
    print(f"lorakit ui: open http://{shown}:{port}/{query}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
