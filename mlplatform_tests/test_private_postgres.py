"""The private PostgreSQL server of :mod:`mlplatform_tests.pg`, which restart tests rely on.

A stop really ends the server (connections refused, every session over), a start
brings back the same data, and nothing is left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlplatform_tests.deploy.topology import free_port
from mlplatform_tests.pg import fresh_database, private_postgres

pytestmark = pytest.mark.slow  # starts a server


def test_restart_ends_sessions_and_keeps_the_data() -> None:
    with private_postgres(free_port()) as server:
        root = server.root
        pid = server.pid()
        assert pid is not None
        # not root, which PostgreSQL refuses: an unprivileged account when we are root
        uid = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert uid != 0 and (uid == os.geteuid() or os.geteuid() == 0)

        with fresh_database("mlplatform_private", server_url=server.url()) as url:
            engine = sa.create_engine(url, pool_size=1)  # keeps its connection open
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql("CREATE TABLE kept (n int)")
                    conn.exec_driver_sql("INSERT INTO kept VALUES (1)")

                server.stop("fast")
                assert not server.accepting() and server.pid() is None
                with pytest.raises(sa.exc.OperationalError):
                    sa.create_engine(url, poolclass=sa.pool.NullPool).connect()
                server.start()
                assert server.accepting()
                # the session the server had ended is gone: its next use fails ...
                with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                # ... and a new one finds the data written before the stop
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("SELECT n FROM kept").scalar_one() == 1

                assert server.restart(down_for=0.5) >= 0.5
                assert server.pid() not in (None, pid)
            finally:
                engine.dispose()
    assert not root.exists()
