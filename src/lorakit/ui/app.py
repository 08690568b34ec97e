"""`create_app`: the FastAPI application behind `lorakit ui`.

The app only arranges pages around the stage packages; every dataset, caption, training
and inference step is the same function (or, for heavy steps, the same `lorakit` command
run by the worker) that the CLI uses. User errors are `LorakitError`s whose one line is
shown inline where the request came from, with status 422 (htmx swaps it in place).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import escape

from lorakit.errors import LorakitError
from lorakit.ui.jobs import JobStore
from lorakit.ui.projects import Projects
from lorakit.ui.security import LOOPBACK_NAMES, TOKEN_COOKIE, Guard, Roots
from lorakit.ui.store import DataDir
from lorakit.ui.supervisor import Supervisor

HERE = Path(__file__).parent
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@dataclass
class UI:
    """Everything a request handler needs, on `request.app.state.ui`."""

    roots: Roots
    data: DataDir
    guard: Guard
    templates: Jinja2Templates
    projects: Projects
    jobs: JobStore
    supervisor: Supervisor
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="lorakit-ui-lint")
    )
    linting: set[int] = field(default_factory=set)

    @property
    def allowed(self) -> Roots:
        """Where configs may point: the roots and the UI's own work folders."""
        return Roots([*self.roots.folders, self.data.root])

    def page(self, request: Request, template: str, **context: Any) -> HTMLResponse:
        context |= {"csrf": self.guard.csrf, "roots": self.roots}
        return self.templates.TemplateResponse(request, template, context)

    def fragment(self, request: Request, template: str, **context: Any) -> HTMLResponse:
        return self.page(request, template, **context)


def ui_of(request: Request) -> UI:
    return request.app.state.ui


def message(text: str, kind: str = "ok", status: int = 200) -> HTMLResponse:
    role = "alert" if kind == "error" else "status"
    return HTMLResponse(f'<p class="msg {kind}" role="{role}">{escape(text)}</p>', status)


def redirect(url: str) -> Response:
    """Send an htmx request (or a plain one) to another page."""
    return Response(status_code=204, headers={"HX-Redirect": url})


async def _lorakit_error(request: Request, exc: Exception) -> HTMLResponse:
    return message(str(exc), "error", 422)


def _access(guard: Guard) -> Callable[..., Any]:
    async def check(request: Request, call_next: Callable[..., Any]) -> Response:
        if not guard.host_ok(request):
            return PlainTextResponse("lorakit ui: unexpected Host header", status_code=400)
        if not guard.token_ok(request):
            return PlainTextResponse(
                "lorakit ui: this server needs its access token; open the URL it printed "
                "at start (…/?token=…)",
                status_code=401,
            )
        response = await call_next(request)
        if guard.token and request.query_params.get("token") == guard.token:
            response.set_cookie(TOKEN_COOKIE, guard.token, httponly=True, samesite="strict")
        return response

    return check


def create_app(
    roots: Sequence[Path],
    data_dir: Path,
    token: str | None = None,
    host: str = "127.0.0.1",
    start_worker: bool = True,
) -> FastAPI:
    """The app for `roots` (the only folders it may open), keeping its state in `data_dir`.

    With a loopback `host` the Host header must name loopback too (DNS rebinding)."""
    from lorakit.ui import (
        routes_captions,
        routes_dataset,
        routes_generate,
        routes_jobs,
        routes_projects,
        routes_results,
        routes_train,
    )

    data = DataDir(data_dir)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    guard = Guard(token, hosts=set(LOOPBACK_NAMES) if host in LOOPBACK_NAMES else set())
    ui = UI(
        roots=Roots(roots),
        data=data,
        guard=guard,
        templates=templates,
        projects=Projects(data),
        jobs=JobStore(data),
        supervisor=Supervisor(data),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_worker:
            ui.supervisor.start()
        yield
        ui.supervisor.stop()
        ui.background.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(guard.check_csrf)],
    )
    app.state.ui = ui
    app.middleware("http")(_access(guard))
    app.add_exception_handler(LorakitError, _lorakit_error)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (
        routes_projects,
        routes_dataset,
        routes_captions,
        routes_train,
        routes_jobs,
        routes_results,
        routes_generate,
    ):
        app.include_router(module.router)
    return app
