"""The back office's sessions, in PostgreSQL.

A session is an opaque random token (32 bytes, URL-safe base64) that only the
cookie holds; the table keeps its SHA-256, so reading the table opens no
session. Each has its own anti-CSRF token. A session ends at its expiry, or at
once when revoked: logging out revokes it, disabling a user revokes all of the
user's. Sessions are not audited (logging in changes no entity).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

TOKEN_BYTES = 32


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    name: str
    role: str
    agent: str | None
    csrf_token: str


async def create_session(conn: asyncpg.Connection | asyncpg.Pool, user_id: int, lifetime_s: float) -> str:
    """A new session of the user for ``lifetime_s``; return its token (for the cookie, nowhere else)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    await conn.execute(
        """INSERT INTO web_sessions (token_sha256, user_id, csrf_token, expires_at)
           VALUES ($1, $2, $3, now() + $4::interval)""",
        token_digest(token), user_id, secrets.token_urlsafe(TOKEN_BYTES), timedelta(seconds=lifetime_s))
    return token


async def find_session(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> Session | None:
    """The live session of this token: not expired, not revoked, its user not disabled; else None."""
    row = await conn.fetchrow(
        """SELECT s.user_id, u.name, u.role, u.agent_code, s.csrf_token
             FROM web_sessions s JOIN web_users u ON u.id = s.user_id
            WHERE s.token_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled""",
        token_digest(token))
    return None if row is None else Session(row["user_id"], row["name"], row["role"], row["agent_code"],
                                            row["csrf_token"])


async def revoke_session(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> None:
    await conn.execute("UPDATE web_sessions SET revoked_at = now() WHERE token_sha256 = $1 AND revoked_at IS NULL",
                       token_digest(token))


async def revoke_user_sessions(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> int:
    """Revoke every live session of the user; return how many."""
    result = await conn.execute(
        "UPDATE web_sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id)
    return int(result.split()[-1])
