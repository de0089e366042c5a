import asyncpg
import pytest

from gateway.db.migrate import UnmigratedDatabase, available, check_migrated, function_scripts, migrate
from gateway.server.app import build_services
from tests.conftest import make_settings, with_database


def test_migrations_are_numbered_once_across_ledger_and_gateway():
    versions = [m.version for m in available()]
    assert versions == sorted(set(versions)) and versions[0] == 1


async def test_serve_refuses_an_unmigrated_database_and_migrate_fixes_it(pg_admin_url, tmp_path):
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute("DROP DATABASE IF EXISTS posgw_unmigrated WITH (FORCE)")
    await admin.execute("CREATE DATABASE posgw_unmigrated")
    url = with_database(pg_admin_url, "posgw_unmigrated")
    try:
        settings = make_settings(url, tmp_path)
        with pytest.raises(UnmigratedDatabase, match="posgw db migrate"):
            await build_services(settings)
        conn = await asyncpg.connect(url)
        assert len(await migrate(conn)) == len(available()) + len(function_scripts())
        assert await migrate(conn) == []
        await conn.close()
        services = await build_services(settings)
        await services.pool.close()
    finally:
        await admin.execute("DROP DATABASE IF EXISTS posgw_unmigrated WITH (FORCE)")
        await admin.close()


async def test_a_changed_function_script_is_applied_again_and_only_it(db):
    await check_migrated(db)
    script = function_scripts()[0]
    await db.execute("UPDATE schema_functions SET checksum = 'stale' WHERE name = $1", script.name)
    with pytest.raises(UnmigratedDatabase, match=script.name):
        await check_migrated(db)
    assert await migrate(db) == [script.name]
    await check_migrated(db)
