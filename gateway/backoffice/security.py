"""The back office's guards: the session cookie, CSRF tokens, the login throttle,
the security headers, and ``guarded``, which every page and action goes through.

- The session cookie is ``__Host-posgw_session``: HttpOnly, Secure, SameSite=Strict,
  Path=/ and no Domain (the ``__Host-`` prefix makes browsers insist on all of
  it). Browsers treat http://127.0.0.1 and http://localhost as secure, so
  Secure cookies work there over plain HTTP; anywhere else, serve it over TLS.
- Every POST carries the session's CSRF token, as the form field ``csrf`` or
  the header ``X-CSRF-Token`` (htmx sends it: ``hx-headers`` on the body);
  without it, or with another: 403. The login form, before any session, has
  its own token in a ``__Host-posgw_login`` cookie (double submit).
- A client address may try to log in ``login_attempts_per_minute`` times a
  minute (in this process); more: 429.
- Content-Security-Policy: scripts, styles and images from this origin only;
  no inline script or style, no eval, no frames, forms only to this origin.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.backoffice.access import ROUTE_ROLES, Viewer
from gateway.domain.validate import InvalidInput
from gateway.services.sessions import Session, find_session

SESSION_COOKIE = "__Host-posgw_session"
LOGIN_COOKIE = "__Host-posgw_login"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def set_cookie(response: Response, name: str, value: str, max_age_s: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age_s, path="/", secure=True, httponly=True, samesite="strict")


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def same_token(sent: str | None, expected: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


class Forbidden(Exception):
    """The viewer may not see or do this (403)."""


class NotFound(Exception):
    """No such thing (404)."""


class LoginThrottle:
    """At most ``attempts_max`` login attempts per client address in any ``window_s`` (a sliding window)."""

    def __init__(self, attempts_max: int, window_s: float = 60.0) -> None:
        self.attempts_max = attempts_max
        self.window_s = window_s
        self._attempts: dict[str, deque[float]] = {}

    def allow(self, address: str, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        attempts = self._attempts.setdefault(address, deque())
        while attempts and attempts[0] <= now_s - self.window_s:
            attempts.popleft()
        if len(attempts) >= self.attempts_max:
            return False
        attempts.append(now_s)
        if len(self._attempts) > 10_000:  # a bound on memory: forget the idle addresses
            for key in [key for key, queue in self._attempts.items() if not queue]:
                del self._attempts[key]
        return True


class SecurityHeaders:
    """An ASGI middleware adding the security headers to every HTTP response and
    calling ``on_response(route, status)`` once per response (for /metrics)."""

    def __init__(self, app: ASGIApp, on_response: Callable[[str, int], None]) -> None:
        self.app = app
        self.on_response = on_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
                self.on_response(scope.get("posgw.route", "other"), message["status"])
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def current_session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 100:
        return None
    return await find_session(request.app.state.pool, token)


@dataclass
class Page:
    """What a guarded handler gets: the request, who is looking, its session, a connection, the form of a POST."""

    request: Request
    viewer: Viewer
    session: Session
    conn: asyncpg.Connection
    form: FormData | None

    def field(self, name: str) -> str | None:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else None

    def render(self, template: str, status_code: int = 200, **context: Any) -> Response:
        return self.request.app.state.templates.TemplateResponse(
            self.request, template, {"viewer": self.viewer, "csrf": self.session.csrf_token, **context},
            status_code=status_code)


Handler = Callable[[Page], Awaitable[Response]]


def error_page(request: Request, status: int, message: str, viewer: Viewer | None = None,
               csrf: str | None = None) -> Response:
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"viewer": viewer, "csrf": csrf, "status": status, "message": message},
        status_code=status)


def guarded(method: str, path: str) -> Callable[[Handler], Route]:
    """A route whose handler runs only for a logged-in user of a role ``ROUTE_ROLES`` allows it,
    and, for a POST, only with the session's CSRF token. Not logged in: a GET goes to the
    login page, a POST is 401. ``Forbidden`` from the handler is 403, ``NotFound`` 404,
    ``InvalidInput`` 400."""
    roles = ROUTE_ROLES[(method, path)]

    def decorate(handler: Handler) -> Route:
        async def endpoint(request: Request) -> Response:
            request.scope["posgw.route"] = path
            session = await current_session(request)
            if session is None:
                if method == "GET":
                    return RedirectResponse("/login", status_code=303)
                return PlainTextResponse("log in first", status_code=401)
            viewer = Viewer(session.name, session.role, session.agent)
            if viewer.role not in roles:
                return error_page(request, 403, "Your role may not open this page.", viewer, session.csrf_token)
            form = None
            if method == "POST":
                form = await request.form(max_files=0, max_fields=50)
                sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
                if not same_token(sent if isinstance(sent, str) else None, session.csrf_token):
                    return error_page(request, 403, "Missing or wrong CSRF token: reload the page and try again.",
                                      viewer, session.csrf_token)
            async with request.app.state.pool.acquire() as conn:
                try:
                    return await handler(Page(request, viewer, session, conn, form))
                except Forbidden:
                    return error_page(request, 403, "This lies outside what you may see.", viewer, session.csrf_token)
                except NotFound as exc:
                    return error_page(request, 404, str(exc) or "Not found.", viewer, session.csrf_token)
                except InvalidInput as exc:
                    return error_page(request, 400, str(exc), viewer, session.csrf_token)

        return Route(path, endpoint, methods=[method])

    return decorate
