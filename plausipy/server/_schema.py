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

_SQLITE_V1 = [
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        expires_at TEXT NOT NULL)""",
    """CREATE TABLE packages (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key TEXT NOT NULL UNIQUE,
        owner_id INTEGER NOT NULL REFERENCES users(id),
        k_threshold INTEGER NOT NULL DEFAULT 5,
        retention_days INTEGER NOT NULL DEFAULT 395,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE records (
        package_id INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        uid_hash TEXT NOT NULL,
        scope TEXT NOT NULL,
        version TEXT NOT NULL,
        role TEXT NOT NULL,
        hour TEXT NOT NULL,
        day TEXT NOT NULL,
        duration_ms INTEGER,
        peak_rss_kib INTEGER,
        exit_code INTEGER,
        os TEXT,
        arch TEXT,
        python TEXT,
        implementation TEXT,
        country TEXT,
        region TEXT,
        timezone TEXT,
        props TEXT,
        received_at TEXT NOT NULL,
        PRIMARY KEY (package_id, run_id))""",
    "CREATE INDEX records_by_uid ON records (package_id, uid_hash)",
    "CREATE INDEX records_by_day ON records (package_id, day)",
    """CREATE TABLE dirty_days (
        package_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        PRIMARY KEY (package_id, day))""",
]

_POSTGRESQL_V1 = [
    """CREATE TABLE users (
        id BIGSERIAL PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE packages (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key TEXT NOT NULL UNIQUE,
        owner_id BIGINT NOT NULL REFERENCES users(id),
        k_threshold INTEGER NOT NULL DEFAULT 5,
        retention_days INTEGER NOT NULL DEFAULT 395,
        created_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE records (
        package_id BIGINT NOT NULL,
        run_id TEXT NOT NULL,
        uid_hash TEXT NOT NULL,
        scope TEXT NOT NULL,
        version TEXT NOT NULL,
        role TEXT NOT NULL,
        hour TIMESTAMPTZ NOT NULL,
        day DATE NOT NULL,
        duration_ms BIGINT,
        peak_rss_kib BIGINT,
        exit_code BIGINT,
        os TEXT,
        arch TEXT,
        python TEXT,
        implementation TEXT,
        country TEXT,
        region TEXT,
        timezone TEXT,
        props TEXT,
        received_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (package_id, run_id))""",
    "CREATE INDEX records_by_uid ON records (package_id, uid_hash)",
    "CREATE INDEX records_by_day ON records (package_id, day)",
    """CREATE TABLE dirty_days (
        package_id BIGINT NOT NULL,
        day DATE NOT NULL,
        PRIMARY KEY (package_id, day))""",
]

#: version -> {dialect: [statements]}; append only.
MIGRATIONS: dict[int, dict[str, list[str]]] = {
    1: {"sqlite": _SQLITE_V1, "postgresql": _POSTGRESQL_V1},
}

_BOOKKEEPING = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
    ),
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
