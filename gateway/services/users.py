"""The back office's users: add, disable, set a TOTP secret, list, and log in.

Each change is audited as ``user.<verb>`` on ``user:<name>`` with the user's
state (name, role, agent, disabled, totp as a bool): never the password, its
hash or the TOTP secret (CLI.md, "Rules of the version 2 commands": Users,
Audit). Disabling a user revokes its sessions in the same transaction.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's
low-memory profile); hashing and verifying run in a worker thread, off the
event loop. TOTP is RFC 6238 (HMAC-SHA1, 6 digits, 30 s steps, one step of
drift either way), implemented here in a few lines.

Logging in counts failures in a row per user: at ``failures_max`` the user is
locked out for ``lockout_s``, and while locked even the right password is
refused (without being checked).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import struct
import time
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.domain.validate import InvalidInput
from gateway.services.audit import State, audited
from gateway.services.sessions import revoke_user_sessions

ROLES = ("admin", "operator", "auditor", "agent")
NAME_MAX = 64
PASSWORD_MIN = 10  # characters
TOTP_STEP_S = 30
TOTP_DIGITS = 6
TOTP_ISSUER = "posgw"

_hasher = PasswordHasher()
# Verified when the name is unknown, so that a wrong name costs what a wrong password costs.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def user_entity(name: str) -> str:
    return f"user:{name}"


def valid_name(value: str) -> str:
    if not (1 <= len(value) <= NAME_MAX and all(c.isascii() and (c.isalnum() or c in "_.@-") for c in value)):
        raise InvalidInput(f"a user name is 1 to {NAME_MAX} letters, digits, _ . @ or -: {value!r}")
    return value


def valid_password(value: str) -> str:
    if len(value) < PASSWORD_MIN:
        raise InvalidInput(f"a password has at least {PASSWORD_MIN} characters")
    return value


# -- TOTP (RFC 6238 over RFC 4226) ----------------------------------------------------------


def hotp(secret: bytes, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226: HMAC-SHA1 of the counter, dynamically truncated to ``digits`` digits."""
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10 ** digits:0{digits}d}"


def totp(secret: bytes, at_s: float, step_s: int = TOTP_STEP_S, digits: int = TOTP_DIGITS) -> str:
    """RFC 6238: the HOTP of the number of ``step_s`` steps since the epoch."""
    return hotp(secret, int(at_s // step_s), digits)


def totp_matches(secret: bytes, code: str, at_s: float) -> bool:
    """The code of this step, the one before or the one after (clocks drift)."""
    return any(hmac.compare_digest(totp(secret, at_s + drift * TOTP_STEP_S), code) for drift in (-1, 0, 1))


def totp_uri(name: str, secret: bytes) -> str:
    """The ``otpauth://`` URI an authenticator app reads (Key Uri Format)."""
    label = urllib.parse.quote(f"{TOTP_ISSUER}:{name}")
    secret_b32 = base64.b32encode(secret).decode().rstrip("=")
    return f"otpauth://totp/{label}?secret={secret_b32}&issuer={TOTP_ISSUER}&algorithm=SHA1&digits=6&period=30"


# -- the users ------------------------------------------------------------------------------


async def user_state(conn: asyncpg.Connection, name: str) -> State:
    """What ``user list`` shows of one user; no secret."""
    row = await conn.fetchrow("SELECT * FROM web_users WHERE name = $1", name)
    return None if row is None else _user_view(row)


def _user_view(row: asyncpg.Record) -> dict[str, Any]:
    return {"name": row["name"], "role": row["role"], "agent": row["agent_code"], "disabled": row["disabled"],
            "totp": row["totp_secret"] is not None}


async def user_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM web_users WHERE name = $1", name))


async def list_users(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """``user list``'s ``users``: in the order they were added."""
    return [_user_view(row) for row in await conn.fetch("SELECT * FROM web_users ORDER BY id")]


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def add_user(conn: asyncpg.Connection, actor: str, name: str, role: str, agent: str | None,
                   password: str) -> None:
    """A user of ``role``; ``agent`` is required for, and only for, the agent role."""
    valid_name(name)
    if role not in ROLES:
        raise InvalidInput(f"--role must be one of {', '.join(ROLES)}: {role!r}")
    if (role == "agent") != (agent is not None):
        raise InvalidInput("--agent is required for, and only for, the agent role")
    password_hash = await hash_password(valid_password(password))

    async def change() -> None:
        if await user_exists(conn, name):
            raise InvalidInput(f"user {name} already exists")
        if agent is not None and not await conn.fetchval("SELECT 1 FROM agents WHERE code = $1", agent):
            raise InvalidInput(f"unknown agent {agent}")
        await conn.execute("INSERT INTO web_users (name, role, agent_code, password_hash) VALUES ($1, $2, $3, $4)",
                           name, role, agent, password_hash)

    await audited(conn, actor, "user.add", user_entity(name), lambda: user_state(conn, name), change)


async def _existing(conn: asyncpg.Connection, name: str) -> int:
    user_id = await conn.fetchval("SELECT id FROM web_users WHERE name = $1", name)
    if user_id is None:
        raise InvalidInput(f"unknown user {name}")
    return user_id


async def disable_user(conn: asyncpg.Connection, actor: str, name: str) -> None:
    """Disable the user and revoke its sessions at once; idempotent."""

    async def change() -> None:
        user_id = await _existing(conn, name)
        await conn.execute("UPDATE web_users SET disabled = true WHERE id = $1", user_id)
        await revoke_user_sessions(conn, user_id)

    await audited(conn, actor, "user.disable", user_entity(name), lambda: user_state(conn, name), change)


async def set_totp(conn: asyncpg.Connection, actor: str, name: str) -> str:
    """A new TOTP secret for the user (replacing any earlier one); return its ``otpauth://`` URI,
    to be shown once and never audited."""
    secret = secrets.token_bytes(20)

    async def change() -> None:
        await conn.execute("UPDATE web_users SET totp_secret = $2 WHERE id = $1", await _existing(conn, name), secret)

    await audited(conn, actor, "user.totp", user_entity(name), lambda: user_state(conn, name), change)
    return totp_uri(name, secret)


# -- logging in -----------------------------------------------------------------------------


class LoginResult(StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"  # unknown name, wrong password or wrong/missing TOTP code
    LOCKED = "locked"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class WebUser:
    id: int
    name: str
    role: str
    agent: str | None


@dataclass(frozen=True, slots=True)
class Login:
    result: LoginResult
    user: WebUser | None = None


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def log_in(conn: asyncpg.Connection, name: str, password: str, code: str | None, *, failures_max: int,
                 lockout_s: float, now_s: float | None = None) -> Login:
    """Check a name, password and (for a user with TOTP) code; count a failure, lock out at ``failures_max``.

    The password is verified in a worker thread. A disabled user is refused
    whatever it sends; a locked one too, until ``locked_until``."""
    row = await conn.fetchrow(
        "SELECT *, locked_until > now() AS locked FROM web_users WHERE name = $1", name)
    if row is None:
        await asyncio.to_thread(_verify, _DUMMY_HASH, password)
        return Login(LoginResult.BAD_CREDENTIALS)
    if row["disabled"]:
        return Login(LoginResult.DISABLED)
    if row["locked"]:
        return Login(LoginResult.LOCKED)
    good = await asyncio.to_thread(_verify, row["password_hash"], password)
    if good and row["totp_secret"] is not None:
        good = code is not None and totp_matches(bytes(row["totp_secret"]), code.strip(),
                                                 time.time() if now_s is None else now_s)
    if not good:
        failures = await conn.fetchval(
            """UPDATE web_users SET failed_logins = failed_logins + 1,
                      locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + $3::interval END
                WHERE id = $1 RETURNING failed_logins""", row["id"], failures_max, timedelta(seconds=lockout_s))
        return Login(LoginResult.LOCKED if failures >= failures_max else LoginResult.BAD_CREDENTIALS)
    if row["failed_logins"] or row["locked_until"] is not None:
        await conn.execute("UPDATE web_users SET failed_logins = 0, locked_until = NULL WHERE id = $1", row["id"])
    return Login(LoginResult.OK, WebUser(row["id"], row["name"], row["role"], row["agent_code"]))
