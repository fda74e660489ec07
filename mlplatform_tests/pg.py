"""Throwaway PostgreSQL databases on the local server, for tests against a real database.

:func:`fresh_database` creates a uniquely named database, yields its URL and drops
it afterwards (ending any connection a test left open). When the server cannot be
reached, or psycopg2 is missing, the calling test is skipped with the reason.

The server is found at ``$MLPLATFORM_TEST_POSTGRES_URL``, by default
``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres`` (a superuser, trust
authentication). For the unix socket use e.g.
``postgresql+psycopg2://postgres@/postgres?host=/var/run/postgresql``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["ADMIN_URL_ENV", "admin_url", "connections_to", "fresh_database"]

ADMIN_URL_ENV = "MLPLATFORM_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "mlplatform_test"


def admin_url() -> str:
    """URL of a superuser connection to the maintenance database."""
    return os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL)


def _admin_engine() -> Engine:
    import sqlalchemy as sa

    url = sa.make_url(admin_url())
    connect_args = {"connect_timeout": 5} if url.get_backend_name() == "postgresql" else {}
    return sa.create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool, connect_args=connect_args
    )


@contextmanager
def fresh_database(prefix: str = DATABASE_PREFIX) -> Iterator[str]:
    """A new, empty database named ``<prefix>_<random>``; yields its URL, then drops it.

    Skips the calling test when the server is unreachable or psycopg2 is missing.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed: PostgreSQL tests need it")
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        except sa.exc.OperationalError as exc:
            reason = " ".join(str(exc.orig).split())[:300]
            pytest.skip(
                f"PostgreSQL is not reachable at {admin.url.render_as_string()} "
                f"(set {ADMIN_URL_ENV} to use another server): {reason}"
            )
        try:
            yield admin.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
    finally:
        admin.dispose()


def connections_to(database_url: str) -> int:
    """How many sessions (other than this query's) are connected to ``database_url``'s database."""
    import sqlalchemy as sa

    database = sa.make_url(database_url).database
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            count = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            ).scalar_one()
        return int(count)
    finally:
        admin.dispose()
