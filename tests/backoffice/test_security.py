"""The back office's security over HTTP: the session cookie, CSRF, lock-out,
throttling, TOTP, revocation, the headers; and its users' service and CLI."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest

from gateway.backoffice.app import create_app
from gateway.backoffice.security import CONTENT_SECURITY_POLICY, LoginThrottle
from gateway.backoffice.settings import WebSettings
from gateway.services import users
from gateway.services.sessions import token_digest
from tests.backoffice.conftest import BASE_URL, PASSWORD, Browser

# -- TOTP: the RFC's own vectors -------------------------------------------------------------------

RFC_SECRET = b"12345678901234567890"


@pytest.mark.parametrize("counter, code", [(0, "755224"), (1, "287082"), (2, "359152"), (9, "520489")])
def test_hotp_matches_rfc_4226_appendix_d(counter, code):
    assert users.hotp(RFC_SECRET, counter) == code


@pytest.mark.parametrize("at_s, code", [(59, "94287082"), (1111111109, "07081804"), (1234567890, "89005924"),
                                        (2000000000, "69279037")])
def test_totp_matches_rfc_6238_appendix_b_sha1(at_s, code):
    assert users.totp(RFC_SECRET, at_s, digits=8) == code
    assert users.totp(RFC_SECRET, at_s) == code[-6:]


def test_a_totp_code_is_good_one_step_either_side_and_no_further():
    secret, now_s = b"k" * 20, 1_700_000_000.0
    assert users.totp_matches(secret, users.totp(secret, now_s - 30), now_s)
    assert users.totp_matches(secret, users.totp(secret, now_s + 30), now_s)
    assert not users.totp_matches(secret, users.totp(secret, now_s - 90), now_s)


def test_the_login_throttle_allows_so_many_a_window_per_address():
    throttle = LoginThrottle(3, window_s=60)
    assert [throttle.allow("a", t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert throttle.allow("b", 3)
    assert throttle.allow("a", 60.5)  # the first attempt left the window


# -- logging in ------------------------------------------------------------------------------------


async def test_the_session_cookie_is_host_prefixed_httponly_secure_and_strict(web_world, browse, db):
    browser = await browse()
    response = await browser.log_in("operator")
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "__Host-posgw_session" in v)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "path"} <= attributes and "domain" not in attributes
    assert "samesite=strict" in cookie.lower()
    token = cookie.split(";")[0].split("=", 1)[1]
    stored = await db.fetchval("SELECT token_sha256 FROM web_sessions")
    assert bytes(stored) == token_digest(token)  # the table keeps only the hash
    assert (await browser.get("/dashboard")).status_code == 200


async def test_every_answer_carries_the_strict_content_security_policy(web_world, browse):
    browser = await browse("admin")
    for path in ("/login", "/dashboard", "/terminals", "/static/htmx.min.js", "/healthz"):
        response = await browser.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["x-frame-options"] == "DENY"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    page = (await browser.get("/dashboard")).text
    assert "<script>" not in page and " style=" not in page and " on" + "click" not in page


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(web_world, browse, cli):
    browser = await browse("operator")
    assert (await browser.post("/terminals/TERM0001/status", {"status": "frozen"}, csrf=False)).status_code == 403
    assert (await browser.post("/terminals/TERM0001/status", {"status": "frozen", "csrf": "forged"},
                               csrf=False)).status_code == 403
    assert (await cli("terminal", "show", "TERM0001", "--json")).json["status"] == "active"
    assert (await browser.post("/terminals/TERM0001/status", {"status": "frozen"})).status_code == 303
    assert (await cli("terminal", "show", "TERM0001", "--json")).json["status"] == "frozen"


async def test_htmx_requests_may_send_the_token_as_a_header(web_world, browse, cli):
    browser = await browse("operator")
    response = await browser.client.post("/agents/AG03/status", data={"status": "frozen"},
                                         headers={"X-CSRF-Token": browser.csrf, "HX-Request": "true"})
    assert response.status_code == 303
    assert (await cli("agent", "show", "AG03", "--json")).json["status"] == "frozen"


async def test_a_login_without_its_form_token_is_refused(web_world, browse):
    browser = await browse()
    response = await browser.client.post("/login", data={"name": "admin", "password": PASSWORD})
    assert response.status_code == 403


async def test_wrong_passwords_lock_the_user_out_even_from_the_right_one(web_world, browse, web_settings):
    browser = await browse()
    for _ in range(web_settings.login_failures_max - 1):
        assert (await browser.log_in("auditor", "wrong password!")).status_code == 401
    assert (await browser.log_in("auditor", "wrong password!")).status_code == 423
    response = await browser.log_in("auditor", PASSWORD)
    assert response.status_code == 423 and "locked" in response.text
    assert (await browser.log_in("admin", PASSWORD)).status_code == 303  # others are not locked


async def test_a_good_login_resets_the_count_of_failures(web_world, browse, web_settings, db):
    browser = await browse()
    for _ in range(web_settings.login_failures_max - 1):
        await browser.log_in("auditor", "wrong password!")
    assert (await browser.log_in("auditor", PASSWORD)).status_code == 303
    assert await db.fetchval("SELECT failed_logins FROM web_users WHERE name = 'auditor'") == 0


async def test_too_many_attempts_from_one_address_are_throttled(web_world, settings, web_pool, db):
    app = create_app(settings, WebSettings(login_attempts_per_minute=2), web_pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        browser = Browser(client)
        assert (await browser.log_in("nobody", "x" * 12)).status_code == 401
        assert (await browser.log_in("nobody", "x" * 12)).status_code == 401
        assert (await browser.log_in("admin", PASSWORD)).status_code == 429
        metrics = (await client.get("/metrics")).text
    assert 'posgw_web_logins_total{result="throttled"} 1.0' in metrics
    assert 'posgw_web_logins_total{result="bad_credentials"} 2.0' in metrics


async def test_a_totp_user_needs_the_current_code(web_world, browse, cli, db):
    result = await cli("--actor", "test:admin", "user", "totp", "operator")
    assert result.code == 0 and result.stdout.count("\n") == 1
    uri = result.stdout.strip()
    assert uri.startswith("otpauth://totp/posgw%3Aoperator?secret=")
    secret = bytes(await db.fetchval("SELECT totp_secret FROM web_users WHERE name = 'operator'"))
    browser = await browse()
    assert (await browser.log_in("operator", PASSWORD)).status_code == 401  # no code
    assert (await browser.log_in("operator", PASSWORD, "000000" if users.totp(secret, time.time()) != "000000"
                                 else "111111")).status_code == 401
    assert (await browser.log_in("operator", PASSWORD, users.totp(secret, time.time()))).status_code == 303
    events = (await cli("audit", "list", "--entity", "user:operator", "--json")).json["events"]
    assert [(e["action"], e["actor"], e["after"]["totp"]) for e in events] == [("user.totp", "test:admin", True)]
    assert uri.split("secret=")[1].split("&")[0] not in json.dumps(events)


async def test_disabling_a_user_ends_its_sessions_at_once(web_world, browse, cli):
    browser = await browse("operator")
    assert (await browser.get("/dashboard")).status_code == 200
    assert (await cli("user", "disable", "operator")).code == 0
    response = await browser.get("/dashboard")
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert (await browser.log_in("operator")).status_code == 401


async def test_logging_out_revokes_the_session(web_world, browse):
    browser = await browse("auditor")
    cookie = browser.client.cookies.get("__Host-posgw_session")
    assert (await browser.post("/logout")).status_code == 303
    browser.client.cookies.set("__Host-posgw_session", cookie, domain="testserver")  # a copy of the old cookie
    assert (await browser.get("/dashboard")).status_code == 303


# -- changes are audited with the web user as the actor -------------------------------------------


async def test_web_changes_are_audited_as_the_web_user(web_world, browse, cli):
    browser = await browse("operator")
    await browser.post("/terminals/TERM0002/status", {"status": "frozen"})
    await browser.post("/agents/AG01/topup", {"amount": "250"})
    admin = await browse("admin")
    await admin.post("/users", {"name": "clerk", "role": "auditor", "password": "a long password"})
    events = (await cli("audit", "list", "--json")).json["events"]
    assert [(e["actor"], e["action"], e["entity"]) for e in events if e["actor"].startswith("web:")] == [
        ("web:operator", "terminal.freeze", "terminal:TERM0002"), ("web:operator", "agent.topup", "agent:AG01"),
        ("web:admin", "user.add", "user:clerk")]
    assert (await cli("agent", "show", "AG01", "--json")).json["float_fen"] == 25000
    user_event = events[-1]
    assert user_event["after"] == {"name": "clerk", "role": "auditor", "agent": None, "disabled": False,
                                   "totp": False}
    audit_page = (await admin.get("/audit", params={"actor": "web:operator"})).text
    assert "terminal:TERM0002" in audit_page and "user:clerk" not in audit_page


async def test_a_bad_amount_or_status_is_400_and_changes_nothing(web_world, browse, cli):
    browser = await browse("operator")
    for amount in ("", "-5", "1.234", "ten", "0"):
        assert (await browser.post("/agents/AG01/topup", {"amount": amount})).status_code == 400, amount
    assert (await browser.post("/terminals/TERM0001/status", {"status": "melted"})).status_code == 400
    assert (await cli("agent", "show", "AG01", "--json")).json["float_fen"] == 0


# -- the users' CLI --------------------------------------------------------------------------------


async def test_user_cli_adds_lists_and_disables(web_world, cli, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))
    result = await cli("user", "add", "clerk", "--role", "agent", "--agent", "AG02", "--password-stdin", "--json")
    assert result.code == 0, result.stderr
    assert result.json == {"name": "clerk", "role": "agent", "agent": "AG02", "disabled": False, "totp": False}
    listed = (await cli("user", "list", "--json")).json["users"]
    assert [u["name"] for u in listed] == ["admin", "operator", "auditor", "agent1", "agent3", "clerk"]
    assert (await cli("user", "disable", "clerk")).code == 0
    assert (await cli("user", "list", "--json")).json["users"][-1]["disabled"] is True
    assert (await cli("user", "disable", "clerk")).code == 0  # idempotent


@pytest.mark.parametrize("argv, stdin, message", [
    (("user", "add", "x1", "--role", "agent", "--password-stdin"), "long enough password", "--agent is required"),
    (("user", "add", "x1", "--role", "admin", "--agent", "AG01", "--password-stdin"), "long enough password",
     "--agent is required"),
    (("user", "add", "x1", "--role", "agent", "--agent", "NOPE", "--password-stdin"), "long enough password",
     "unknown agent"),
    (("user", "add", "admin", "--role", "admin", "--password-stdin"), "long enough password", "already exists"),
    (("user", "add", "x1", "--role", "admin", "--password-stdin"), "short", "at least 10"),
    (("user", "add", "x 1", "--role", "admin", "--password-stdin"), "long enough password", "user name"),
    (("user", "add", "x1", "--role", "admin"), "long enough password", "--password-stdin"),
    (("user", "disable", "nobody"), "", "unknown user"),
    (("user", "totp", "nobody"), "", "unknown user"),
])
async def test_user_cli_refuses_bad_input_with_exit_2(web_world, cli, monkeypatch, argv, stdin, message):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin + "\n"))
    result = await cli(*argv)
    assert result.code == 2 and message in result.stderr.splitlines()[-1]
    assert len((await cli("user", "list", "--json")).json["users"]) == 5


async def test_passwords_are_stored_as_argon2id_hashes(web_world, cli, db, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))
    await cli("user", "add", "clerk", "--role", "auditor", "--password-stdin")
    stored = await db.fetchval("SELECT password_hash FROM web_users WHERE name = 'clerk'")
    assert stored.startswith("$argon2id$") and "a fine long password" not in stored


async def test_healthz_and_metrics(web_world, browse):
    browser = await browse("auditor")
    assert (await browser.get("/healthz")).text == "ok\n"
    await browser.get("/terminals")
    metrics = (await browser.get("/metrics")).text
    assert 'posgw_web_requests_total{route="/terminals",status="200"} 1.0' in metrics
    assert 'posgw_web_logins_total{result="ok"} 1.0' in metrics
