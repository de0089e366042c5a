"""The database: the pool, the embedded PostgreSQL, migrations."""
