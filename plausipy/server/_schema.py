"""The collector's tables, as numbered migrations for SQLite and PostgreSQL.

Each migration is a list of statements per dialect; :func:`migrate` applies
the ones a database has not seen, in one transaction each, and records them
in ``schema_migrations``. Add a new version at the end; never edit one that
has shipped. The dashboard's rollup tables come from
``plausipy.server._rollups.ROLLUP_DDL`` and are created (idempotently) after
the migrations::

    storage = open_storage("sqlite:////tmp/c.sqlite3")
    migrate(storage)          # -> [1] the first time, [] afterwards
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plausipy.server._storage import Storage

__all__ = ["MIGRATIONS", "current_version", "migrate"]

# The v1 tables once, with a placeholder wherever the two dialects spell a
# column type differently; _render() fills them in from _COLUMN_TYPES.
_V1 = [
    """CREATE TABLE users (
        id {id} PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at {timestamp} NOT NULL)""",
    """CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        expires_at {timestamp} NOT NULL)""",
    """CREATE TABLE packages (
        id {id} PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key TEXT NOT NULL UNIQUE,
        owner_id {bigint} NOT NULL REFERENCES users(id),
        k_threshold INTEGER NOT NULL DEFAULT 5,
        retention_days INTEGER NOT NULL DEFAULT 395,
        created_at {timestamp} NOT NULL)""",
    """CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        created_at {timestamp} NOT NULL)""",
    """CREATE TABLE records (
        package_id {bigint} NOT NULL,
        run_id TEXT NOT NULL,
        uid_hash TEXT NOT NULL,
        scope TEXT NOT NULL,
        version TEXT NOT NULL,
        role TEXT NOT NULL,
        hour {timestamp} NOT NULL,
        day {day} NOT NULL,
        duration_ms {bigint},
        peak_rss_kib {bigint},
        exit_code {bigint},
        os TEXT,
        arch TEXT,
        python TEXT,
        implementation TEXT,
        country TEXT,
        region TEXT,
        timezone TEXT,
        props TEXT,
        received_at {timestamp} NOT NULL,
        PRIMARY KEY (package_id, run_id))""",
    "CREATE INDEX records_by_uid ON records (package_id, uid_hash)",
    "CREATE INDEX records_by_day ON records (package_id, day)",
    """CREATE TABLE dirty_days (
        package_id {bigint} NOT NULL,
        day {day} NOT NULL,
        PRIMARY KEY (package_id, day))""",
]

# SQLite stores times and days as ISO text and every integer in one 64-bit
# INTEGER (an INTEGER PRIMARY KEY is the rowid); PostgreSQL needs the types named.
_COLUMN_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {"id": "INTEGER", "bigint": "INTEGER", "timestamp": "TEXT", "day": "TEXT"},
    "postgresql": {"id": "BIGSERIAL", "bigint": "BIGINT", "timestamp": "TIMESTAMPTZ", "day": "DATE"},
}


def _render(statements: list[str]) -> dict[str, list[str]]:
    """Each dialect's statements, e.g. ``{"sqlite": [...], "postgresql": [...]}``."""
    return {
        dialect: [statement.format(**types) for statement in statements]
        for dialect, types in _COLUMN_TYPES.items()
    }


#: version -> {dialect: [statements]}; append only.
MIGRATIONS: dict[int, dict[str, list[str]]] = {
    1: _render(_V1),
}

_BOOKKEEPING = {
    dialect: (
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        f" (version INTEGER PRIMARY KEY, applied_at {types['timestamp']} NOT NULL)"
    )
    for dialect, types in _COLUMN_TYPES.items()
}

# Several workers start at once on one PostgreSQL: one of them migrates, the
# others wait on this advisory lock and then find nothing left to do.
_PG_MIGRATION_LOCK = 0x706C6175  # "plau"


def _rollup_ddl(dialect: str) -> list[str]:
    try:
        from plausipy.server._rollups import ROLLUP_DDL
    except ImportError:
        return []
    return list(ROLLUP_DDL.get(dialect, []))


def current_version(storage: Storage) -> int:
    """The highest migration applied, 0 for an empty database."""
    with storage.transaction() as tx:
        tx.execute(_BOOKKEEPING[storage.dialect])
    rows = storage.read("SELECT MAX(version) FROM schema_migrations")
    return int(rows[0][0] or 0)


def migrate(storage: Storage) -> list[int]:
    """Apply missing migrations and the rollup DDL; return the versions applied."""
    from plausipy.server._storage import utc_now_text

    applied: list[int] = []
    for version in sorted(MIGRATIONS):
        with storage.transaction() as tx:
            tx.execute(_BOOKKEEPING[storage.dialect])
            if storage.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
            if tx.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                continue
            for statement in MIGRATIONS[version][storage.dialect]:
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, utc_now_text())
            )
            applied.append(version)
    rollups = _rollup_ddl(storage.dialect)
    if rollups:
        with storage.transaction() as tx:
            if storage.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
            for statement in rollups:
                tx.execute(statement)
    return applied
