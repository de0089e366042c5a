"""Migrations: numbered plain SQL files, applied in order, recorded in a table.

Files live in ``ledger/migrations`` (the ledger's tables) and
``gateway/db/migrations`` (the gateway's); their numbers form one sequence,
``NNNN_name.sql``. SQL functions live apart, in ``ledger/functions`` and
``gateway/acquiring/functions``: each file is ``CREATE OR REPLACE`` and is applied
again whenever its content changes (its checksum is recorded), so a
function's one true text is its file. Applying is idempotent and safe to run
concurrently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

import gateway
import ledger

_LEDGER, _GATEWAY = Path(ledger.__file__).parent, Path(gateway.__file__).parent
MIGRATION_DIRS = (_LEDGER / "migrations", _GATEWAY / "db" / "migrations")  # ledger first
FUNCTION_DIRS = (_LEDGER / "functions", _GATEWAY / "acquiring" / "functions")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x706F7367  # advisory lock held while migrating


class UnmigratedDatabase(Exception):
    """The database lacks migrations this code needs."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available() -> list[Migration]:
    found: dict[int, Migration] = {}
    for directory in MIGRATION_DIRS:
        for path in directory.glob("*.sql"):
            match = _NAME.match(path.name)
            if not match:
                raise RuntimeError(f"migration file {path} is not named NNNN_name.sql")
            version = int(match.group(1))
            if version in found:
                raise RuntimeError(f"migration {version} appears twice: {found[version].path}, {path}")
            found[version] = Migration(version, path.stem, path)
    return [found[v] for v in sorted(found)]


@dataclass(frozen=True)
class FunctionScript:
    name: str  # package/file
    checksum: str
    path: Path


def function_scripts() -> list[FunctionScript]:
    scripts = []
    for directory in FUNCTION_DIRS:
        for path in sorted(directory.glob("*.sql")):
            checksum = hashlib.sha256(path.read_bytes()).hexdigest()
            scripts.append(FunctionScript(f"{directory.parent.name}/{path.name}", checksum, path))
    return scripts


async def _function_checksums(conn: asyncpg.Connection) -> dict[str, str]:
    if not await conn.fetchval("SELECT to_regclass('schema_functions') IS NOT NULL"):
        return {}
    return {row["name"]: row["checksum"] for row in await conn.fetch("SELECT name, checksum FROM schema_functions")}


async def applied(conn: asyncpg.Connection) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their names."""
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        have = await applied(conn)
        for migration in available():
            if migration.version in have:
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            done.append(migration.name)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_functions (
                   name text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        current = await _function_checksums(conn)
        for script in function_scripts():
            if current.get(script.name) == script.checksum:
                continue
            async with conn.transaction():
                await conn.execute(script.path.read_text())
                await conn.execute(
                    """INSERT INTO schema_functions (name, checksum) VALUES ($1, $2)
                       ON CONFLICT (name) DO UPDATE SET checksum = $2, applied_at = now()""",
                    script.name, script.checksum,
                )
            done.append(script.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return done


async def check_migrated(conn: asyncpg.Connection) -> None:
    have = await applied(conn)
    missing = [m.name for m in available() if m.version not in have]
    current = await _function_checksums(conn)
    missing += [f.name for f in function_scripts() if current.get(f.name) != f.checksum]
    if missing:
        raise UnmigratedDatabase(
            f"the database lacks {len(missing)} migration(s) ({', '.join(missing)}): run `posgw db migrate`"
        )
