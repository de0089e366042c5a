"""The back office's ASGI app (``posgw web``): a separate process over the same
database, with its own small pool; it never imports the terminal server.

Public: ``/login`` (GET, POST), ``/healthz`` (200 once the database answers and
is migrated, else 503), ``/metrics`` (this process's Prometheus counters:
requests by route and status, logins by result), ``/static/...`` (vendored
files). ``/`` sends a logged-in user to its home (agents: the portal; staff:
the dashboard). Everything else is in ``gateway.backoffice.pages``, guarded.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.backoffice import biller_api, biller_pages, inventory, money_pages, network_pages
from gateway.backoffice.access import AGENT
from gateway.backoffice.live import GatewayFigures, Shared
from gateway.backoffice.pages import ROUTES
from gateway.backoffice.security import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    SecurityHeaders,
    clear_cookie,
    current_session,
    error_page,
    same_token,
    set_cookie,
)
from gateway.backoffice.settings import WebSettings
from gateway.db.migrate import UnmigratedDatabase, check_migrated
from gateway.db.pool import database_url, host_by_host
from gateway.services.sessions import create_session, revoke_session
from gateway.services.users import LoginResult, log_in
from gateway.settings import Settings

HERE = Path(__file__).resolve().parent
LOGIN_FORM_MAX_S = 3600  # the login form's own CSRF cookie lives this long


class WebMetrics:
    """The web process's counters, in a registry of its own (not the gateway's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("posgw_web_requests_total", "Back office HTTP responses, by route template and status",
                                ["route", "status"], registry=self.registry)
        self.logins = Counter("posgw_web_logins_total", "Back office logins, by result (ok, bad_credentials, locked, "
                              "disabled, throttled, csrf)", ["result"], registry=self.registry)

    def count_response(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()


def yuan(fen: int | None) -> str:
    """Fen as yuan with two decimals (``-12.05``); empty for None."""
    if fen is None:
        return ""
    sign, fen = ("-", -fen) if fen < 0 else ("", fen)
    return f"{sign}{fen // 100:,}.{fen % 100:02d}"


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["yuan"] = yuan
    return Jinja2Templates(env=env)


# -- public routes -----------------------------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_form(request: Request, status: int = 200, message: str | None = None, name: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    response = request.app.state.templates.TemplateResponse(
        request, "login.html", {"viewer": None, "login_csrf": token, "message": message, "name": name},
        status_code=status)
    set_cookie(response, LOGIN_COOKIE, token, LOGIN_FORM_MAX_S)
    return response


async def login_page(request: Request) -> Response:
    request.scope["posgw.route"] = "/login"
    if await current_session(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_form(request)


_LOGIN_MESSAGES = {
    LoginResult.BAD_CREDENTIALS: (401, "Wrong name, password or code."),
    LoginResult.DISABLED: (401, "Wrong name, password or code."),  # a disabled account is not told apart
    LoginResult.LOCKED: (423, "Too many failed attempts: this account is locked for a while."),
}


async def login(request: Request) -> Response:
    request.scope["posgw.route"] = "/login"
    state = request.app.state
    if not state.throttle.allow(_client(request)):
        state.metrics.logins.labels("throttled").inc()
        return _login_form(request, 429, "Too many attempts from your address: wait a minute.")
    form = await request.form(max_files=0, max_fields=10)
    sent = form.get(CSRF_FIELD)
    if not same_token(sent if isinstance(sent, str) else None, request.cookies.get(LOGIN_COOKIE) or ""):
        state.metrics.logins.labels("csrf").inc()
        return _login_form(request, 403, "The form expired: try again.")
    name, password, code = (str(form.get(field) or "") for field in ("name", "password", "code"))
    async with state.pool.acquire() as conn:
        outcome = await log_in(conn, name[:64], password[:1024], code.strip() or None,
                               failures_max=state.web.login_failures_max, lockout_s=state.web.lockout_s)
        state.metrics.logins.labels(outcome.result.value).inc()
        if outcome.user is None:
            status, message = _LOGIN_MESSAGES[outcome.result]
            return _login_form(request, status, message, name[:64])
        token = await create_session(conn, outcome.user.id, state.web.session_lifetime_s)
    response = RedirectResponse("/", status_code=303)
    set_cookie(response, SESSION_COOKIE, token, state.web.session_lifetime_s)
    clear_cookie(response, LOGIN_COOKIE)
    return response


async def logout(request: Request) -> Response:
    request.scope["posgw.route"] = "/logout"
    session = await current_session(request)
    if session is not None:
        form = await request.form(max_files=0, max_fields=10)
        sent = request.headers.get("x-csrf-token") or form.get(CSRF_FIELD)
        if not same_token(sent if isinstance(sent, str) else None, session.csrf_token):
            return error_page(request, 403, "Missing or wrong CSRF token.")
        await revoke_session(request.app.state.pool, request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/login", status_code=303)
    clear_cookie(response, SESSION_COOKIE)
    return response


async def home(request: Request) -> Response:
    request.scope["posgw.route"] = "/"
    session = await current_session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/portal" if session.role == AGENT else "/dashboard", status_code=303)


async def healthz(request: Request) -> Response:
    request.scope["posgw.route"] = "/healthz"
    try:
        async with request.app.state.pool.acquire() as conn:
            await check_migrated(conn)
    except (OSError, asyncpg.PostgresError, UnmigratedDatabase) as exc:
        return PlainTextResponse(f"unavailable: {type(exc).__name__}\n", status_code=503)
    return PlainTextResponse("ok\n")


async def metrics(request: Request) -> Response:
    request.scope["posgw.route"] = "/metrics"
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- the app -----------------------------------------------------------------------------------


def create_app(settings: Settings, web: WebSettings | None = None, pool: asyncpg.Pool | None = None) -> Starlette:
    """The back office over ``settings``' database; with ``pool``, that pool (its owner closes it),
    else a pool of its own of at most ``web.pool_max`` connections, opened at start-up."""
    web = web or WebSettings()
    web_metrics = WebMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if pool is not None:
            yield
            return
        dsn = database_url(settings)
        app.state.pool = await asyncpg.create_pool(dsn, connect=host_by_host(dsn), min_size=1, max_size=web.pool_max,
                                                   command_timeout=settings.db_command_timeout_s)
        try:
            yield
        finally:
            await app.state.pool.close()

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *ROUTES,
        *inventory.ROUTES,
        biller_api.ROUTE,  # not a session route: a biller's bearer key (gateway.backoffice.biller_api)
        *biller_pages.ROUTES, *money_pages.ROUTES, *network_pages.ROUTES,
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(SecurityHeaders, on_response=web_metrics.count_response)])
    app.state.pool = pool  # else set by the lifespan
    app.state.settings = settings
    app.state.web = web
    app.state.metrics = web_metrics
    app.state.templates = _templates()
    app.state.throttle = LoginThrottle(web.login_attempts_per_minute)
    app.state.gateways = GatewayFigures(web.gateway_metrics_urls, web.gateway_metrics_interval_s)
    app.state.dashboard_figures = Shared(web.dashboard_cache_s)
    return app
