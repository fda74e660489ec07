"""The SQL table source against real databases: a SQLite file and a fresh PostgreSQL database.

Rows go in with SQLAlchemy, come out through ``discover`` and ``ingest_batch``
exactly as in production, and are checked in the feature store. PostgreSQL runs
with a non-UTC session time zone, so timestamps must come back converted to UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlplatform.core.batches import BatchPlan, parse_time
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import TYPE_EXPECTATION, FileRejected
from mlplatform.core.schema import AI4I
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.ingestion import discover, ingest_batch
from mlplatform.resources.sources import BatchSource
from mlplatform.resources.sql_source import SqlSourceError, SqlTableSource, mask_url
from mlplatform_tests.pg import connections_to, fresh_database

SOURCE = "plant"
TABLE = "readings"
BASE = datetime(2024, 3, 1, tzinfo=UTC)
PASSWORD = "s3cret-pw"
UNREACHABLE = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x"
PG_TIMEZONE = "Asia/Kolkata"  # +05:30: a session time zone that is not UTC


@dataclass
class Database:
    """A database the test writes rows into, and the URL the source reads it by."""

    backend: str
    url: str
    engine: sa.Engine

    def create_readings(
        self, name: str = TABLE, *, drop: Sequence[str] = (), text_updated_at: bool = False
    ) -> sa.Table:
        """A readings table with canonical columns, an id and an ``updated_at`` watermark."""
        metadata = sa.MetaData()
        columns: list[sa.Column[Any]] = [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("udi", sa.BigInteger),
            sa.Column("product_id", sa.Text),
            sa.Column("type", sa.Text),
            sa.Column("air_temperature_k", sa.Float),
            sa.Column("process_temperature_k", sa.Float),
            sa.Column("rotational_speed_rpm", sa.Integer),
            sa.Column("torque_nm", sa.Float),
            sa.Column("tool_wear_min", sa.Integer),
            sa.Column("machine_failure", sa.Integer),
            *[sa.Column(mode, sa.Integer) for mode in ("twf", "hdf", "pwf", "osf", "rnf")],
            sa.Column("measured_at", sa.DateTime(timezone=True)),
            sa.Column("updated_at", sa.Text() if text_updated_at else sa.DateTime(timezone=True)),
        ]
        table = sa.Table(name, metadata, *[c for c in columns if c.name not in drop])
        metadata.create_all(self.engine)
        return table

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (keys missing from ``table`` are left out)."""
        keep = [{k: v for k, v in r.items() if k in table.c} for r in rows]
        with self.engine.begin() as conn:
            conn.execute(table.insert(), keep)


def readings(n: int, *, seed: int, start_udi: int = 1) -> list[dict[str, Any]]:
    """AI4I-like rows, canonical names; measured ``udi`` minutes, updated ``udi`` s after BASE."""
    frame = generate_ai4i(n, seed=seed, start_udi=start_udi).rename(columns=AI4I.source_to_name)
    rows = [{str(k): v for k, v in r.items()} for r in frame.to_dict(orient="records")]
    for row in rows:
        row["measured_at"] = BASE + timedelta(minutes=int(row["udi"]))
        row["updated_at"] = BASE + timedelta(seconds=int(row["udi"]))
    return rows


@contextmanager
def _sqlite(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        yield Database("sqlite", url, engine)
    finally:
        engine.dispose()


@contextmanager
def _postgres() -> Iterator[Database]:
    with fresh_database() as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            name = engine.dialect.identifier_preparer.quote(str(engine.url.database))
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER DATABASE {name} SET timezone TO '{PG_TIMEZONE}'")
            yield Database("postgresql", url, engine)
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of each backend."""
    with _sqlite(tmp_path) if request.param == "sqlite" else _postgres() as db:
        yield db


@pytest.fixture
def postgres() -> Iterator[Database]:
    """An empty PostgreSQL database (skips without a server)."""
    with _postgres() as db:
        yield db


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Database]:
    """An empty SQLite database file."""
    with _sqlite(tmp_path) as db:
        yield db


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    """An empty feature store."""
    return FeatureStore(root=str(tmp_path / "store"))


def plant(db: Database | str, **overrides: Any) -> SqlTableSource:
    """The source reading the readings table by id, with ``measured_at`` as event time."""
    config: dict[str, Any] = {
        "name": SOURCE,
        "url": db if isinstance(db, str) else db.url,
        "table": TABLE,
        "watermark_column": "id",
        "event_time_column": "measured_at",
    }
    return SqlTableSource(**(config | overrides))


def hand_made_plan(label: str = "readings rows with id in (-inf, 10]") -> BatchPlan:
    """A plan as discovery would save it, for reads that must fail before any row."""
    return BatchPlan("sql-plant-000001", SOURCE, label, {"hi": "10", "kind": "int"})


def current(store: FeatureStore) -> pd.DataFrame:
    """The rows the store serves now, by entity id."""
    return store.as_of(AI4I).sort_values("udi").reset_index(drop=True)


# -- a pull, end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("watermark", ["id", "updated_at"])
def test_table_rows_are_discovered_and_stored(
    database: Database, store: FeatureStore, watermark: str
) -> None:
    rows = readings(300, seed=1)
    database.insert(database.create_readings(), rows)
    source = plant(database, watermark_column=watermark)
    assert isinstance(source, BatchSource)

    [plan] = discover([source], store).new
    assert plan.key == "sql-plant-000001"
    assert plan.source == SOURCE
    assert store.plans(SOURCE) == [plan]
    assert plan.ref["kind"] == ("int" if watermark == "id" else "timestamp")
    assert not plan.ref.get("lo")
    hi = plan.ref["hi"]
    if watermark == "id":
        assert hi == "300"
    else:
        assert parse_time(hi) == BASE + timedelta(seconds=300)
    assert plan.label == f"readings rows with {watermark} in (-inf, {hi}]"

    manifest = ingest_batch(plan, source, store, AI4I).manifest
    assert (manifest.rows_landed, manifest.rows_stored, manifest.rows_quarantined) == (300, 300, 0)
    assert manifest.rows_landed == manifest.rows_stored + manifest.rows_quarantined

    stored = current(store)
    expected = pd.DataFrame(rows)
    assert stored["udi"].tolist() == expected["udi"].tolist()
    assert stored["type"].tolist() == expected["type"].tolist()
    assert stored["product_id"].tolist() == expected["product_id"].tolist()
    np.testing.assert_array_equal(stored["torque_nm"], expected["torque_nm"])
    np.testing.assert_array_equal(stored["rotational_speed_rpm"], expected["rotational_speed_rpm"])
    assert stored["rotational_speed_rpm"].dtype == "int64"
    # the event time is the measured_at column, in UTC whatever the session time zone
    assert str(stored["event_time"].dt.tz) == "UTC"
    assert stored["event_time"].tolist() == [
        pd.Timestamp(BASE + timedelta(minutes=u)) for u in expected["udi"]
    ]
    assert stored["source_file"].eq(plan.label).all()
    assert stored["batch_id"].eq(plan.key).all()
    assert stored["source_row"].tolist() == list(range(1, 301))


def test_a_second_discovery_pulls_only_the_new_rows(
    database: Database, store: FeatureStore
) -> None:
    table = database.create_readings()
    database.insert(table, readings(200, seed=2))
    source = plant(database)
    [first] = discover([source], store).new
    ingest_batch(first, source, store, AI4I)

    database.insert(table, readings(150, seed=3, start_udi=201))
    [second] = discover([source], store).new
    assert second.key == "sql-plant-000002"
    assert (second.ref["lo"], second.ref["hi"], second.ref["rows"]) == ("200", "350", "150")
    assert second.label == "readings rows with id in (200, 350]"
    manifest = ingest_batch(second, source, store, AI4I).manifest
    assert (manifest.rows_landed, manifest.rows_stored) == (150, 150)
    assert store.read_batch(second.key)["udi"].tolist() == list(range(201, 351))
    assert current(store)["udi"].tolist() == list(range(1, 351))

    assert discover([source], store).new == []


def test_an_updated_row_supersedes_its_old_version_and_as_of_still_sees_the_old(
    database: Database, store: FeatureStore
) -> None:
    table = database.create_readings()
    rows = readings(100, seed=4)
    database.insert(table, rows)
    source = plant(database, watermark_column="updated_at")
    first_ingestion = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=2)
    [first] = discover([source], store).new
    ingest_batch(first, source, store, AI4I, ingested_at=first_ingestion)

    old_torque = float(rows[6]["torque_nm"])
    new_torque = 123.4
    with database.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.udi == 7)
            .values(torque_nm=new_torque, updated_at=BASE + timedelta(days=1))
        )
    [second] = discover([source], store).new
    assert second.key == "sql-plant-000002"
    assert second.ref["lo"] == first.ref["hi"]
    assert second.ref["rows"] == "1"
    manifest = ingest_batch(
        second, source, store, AI4I, ingested_at=first_ingestion + pd.Timedelta(hours=1)
    ).manifest
    assert manifest.rows_landed == 1

    now = current(store)
    assert len(now) == 100
    assert now.loc[now["udi"] == 7, "torque_nm"].item() == new_torque
    assert now.loc[now["udi"] == 7, "batch_id"].item() == second.key
    before = store.as_of(AI4I, first_ingestion + pd.Timedelta(minutes=30))
    assert len(before) == 100
    assert before.loc[before["udi"] == 7, "torque_nm"].item() == old_torque


def test_reingesting_a_plan_rereads_exactly_its_range(
    database: Database, store: FeatureStore
) -> None:
    table = database.create_readings()
    database.insert(table, readings(120, seed=5))
    source = plant(database)
    [plan] = discover([source], store).new
    ingest_batch(plan, source, store, AI4I)

    database.insert(table, readings(80, seed=6, start_udi=121))  # after the plan's range
    again = ingest_batch(plan, source, store, AI4I).manifest
    assert (again.rows_landed, again.rows_stored) == (120, 120)
    assert len(store.manifests(plan.key)) == 2
    assert current(store)["udi"].tolist() == list(range(1, 121))
    [later] = discover([source], store).new
    assert later.ref["rows"] == "80"


# -- bad rows and whole-pull failures ----------------------------------------------------------


def test_invalid_rows_are_quarantined_with_row_column_and_expectation(
    database: Database, store: FeatureStore
) -> None:
    rows = readings(50, seed=7)
    rows[4]["torque_nm"] = -3.0
    rows[9]["type"] = "Q"
    rows[19]["air_temperature_k"] = None
    database.insert(database.create_readings(), rows)
    source = plant(database)
    [plan] = discover([source], store).new

    manifest = ingest_batch(plan, source, store, AI4I).manifest
    assert (manifest.rows_landed, manifest.rows_stored, manifest.rows_quarantined) == (50, 47, 3)
    quarantine = store.read_quarantine(plan.key).sort_values("row_number")
    assert quarantine["row_number"].tolist() == [5, 10, 20]
    assert quarantine["column"].tolist() == ["Torque [Nm]", "Type", "Air temperature [K]"]
    assert quarantine["expectation"].tolist() == [
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_null",
    ]
    values = quarantine["value"].tolist()
    assert (float(values[0]), values[1:]) == (-3.0, ["Q", "<missing>"])
    assert quarantine["source_file"].eq(plan.label).all()
    assert set(current(store)["udi"]) == set(range(1, 51)) - {5, 10, 20}


def test_text_in_a_numeric_sqlite_column_is_quarantined_not_fatal(
    sqlite: Database, store: FeatureStore
) -> None:
    table = sqlite.create_readings()
    sqlite.insert(table, readings(30, seed=8))
    with sqlite.engine.begin() as conn:  # SQLite keeps text in a REAL column
        conn.exec_driver_sql("UPDATE readings SET torque_nm = 'n/a' WHERE udi = 3")
    source = plant(sqlite)
    [plan] = discover([source], store).new

    manifest = ingest_batch(plan, source, store, AI4I).manifest
    assert (manifest.rows_stored, manifest.rows_quarantined) == (29, 1)
    [bad] = store.read_quarantine(plan.key).to_dict(orient="records")
    assert (bad["row_number"], bad["column"], bad["value"]) == (3, "Torque [Nm]", "n/a")
    assert bad["expectation"] == TYPE_EXPECTATION


def test_a_missing_table_plans_nothing_and_fails_a_read_naming_it(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    database.create_readings()
    url = database.url
    if database.backend == "postgresql":  # trust authentication ignores the password
        url = sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    source = plant(url, table="no_such_table")

    with caplog.at_level(logging.WARNING, logger="mlplatform.resources.sql_source"):
        assert source.plan_new([]) == []
    assert "no_such_table" in caplog.text
    assert mask_url(url) in caplog.text
    assert PASSWORD not in caplog.text

    with pytest.raises(FileRejected, match="no_such_table") as info:
        list(source.read(hand_made_plan(), 100))
    assert PASSWORD not in str(info.value)


def test_a_table_without_a_required_column_is_rejected_naming_the_column(
    database: Database, store: FeatureStore
) -> None:
    database.insert(database.create_readings(drop=["torque_nm"]), readings(20, seed=9))
    source = plant(database)
    [plan] = discover([source], store).new

    with pytest.raises(FileRejected, match="missing required column") as info:
        ingest_batch(plan, source, store, AI4I)
    assert info.value.column == "Torque [Nm]"
    assert info.value.source_file == plan.label
    assert store.manifests() == []


def test_missing_configured_columns_are_named(database: Database) -> None:
    database.insert(database.create_readings(), readings(10, seed=10))

    no_watermark = plant(database, watermark_column="seq_no")
    with pytest.raises(SqlSourceError, match="seq_no"):
        no_watermark.plan_new([])
    with pytest.raises(FileRejected, match="readings") as info:
        list(no_watermark.read(hand_made_plan(), 100))
    assert info.value.column == "seq_no"

    no_event_time = plant(database, event_time_column="taken_at")
    with pytest.raises(FileRejected) as info:
        list(no_event_time.read(hand_made_plan(), 100))
    assert info.value.column == "taken_at"


def test_an_unreachable_server_is_a_rejection_without_the_password() -> None:
    source = plant(UNREACHABLE)
    with pytest.raises(FileRejected, match="cannot read table 'readings'") as info:
        list(source.read(hand_made_plan(), 100))
    assert PASSWORD not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    with pytest.raises(SqlSourceError) as planning:
        source.plan_new([])
    assert PASSWORD not in str(planning.value)


def test_a_missing_sqlite_file_plans_nothing_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    source = plant(f"sqlite:///{path}")
    assert source.plan_new([]) == []
    with pytest.raises(FileRejected, match="does not exist"):
        list(source.read(hand_made_plan(), 100))
    assert not path.exists()


# -- streaming and connections ----------------------------------------------------------------


def test_reads_in_chunks_with_consecutive_row_numbers(database: Database) -> None:
    database.insert(database.create_readings(), readings(1_050, seed=11))
    source = plant(database)
    [plan] = source.plan_new([])

    chunks = list(source.read(plan, 100))
    assert [c.table.num_rows for c in chunks] == [100] * 10 + [50]
    numbers = np.concatenate([c.row_numbers for c in chunks])
    np.testing.assert_array_equal(numbers, np.arange(1, 1_051))
    assert numbers.dtype == np.int64
    udis = np.concatenate([c.table.column("udi").to_numpy() for c in chunks])
    np.testing.assert_array_equal(udis, np.arange(1, 1_051))
    assert "event_time" in chunks[0].table.column_names
    assert all(not c.rejected for c in chunks)


def test_reads_stream_through_a_server_side_cursor_and_leave_no_connection(
    postgres: Database,
) -> None:
    postgres.insert(postgres.create_readings(), readings(500, seed=12))
    source = plant(postgres)
    [plan] = source.plan_new([])
    assert connections_to(postgres.url) == 0

    assert sum(c.table.num_rows for c in source.read(plan, 100)) == 500
    assert connections_to(postgres.url) == 0

    chunks = source.read(plan, 100)
    try:
        assert next(chunks).table.num_rows == 100
        with sa.create_engine(postgres.url, poolclass=sa.pool.NullPool).connect() as conn:
            [query] = conn.execute(
                sa.text(
                    "SELECT query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
        assert query.startswith("FETCH FORWARD")  # rows come from a named cursor, in parts
    finally:
        chunks.close()  # a reader that stops early releases the connection
    assert connections_to(postgres.url) == 0


# -- identifiers and configuration -------------------------------------------------------------


def test_quoted_identifiers_schema_and_column_map(database: Database, store: FeatureStore) -> None:
    schema = "main" if database.backend == "sqlite" else "Plant A"
    if database.backend == "postgresql":
        with database.engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema))
    metadata = sa.MetaData()
    headers = {  # database column -> canonical name, where they differ
        "Row Id": None,
        "UDI": None,
        "Product ID": None,
        "Type": None,
        "Air temperature [K]": None,
        "proc temp; DROP TABLE x": "process_temperature_k",
        "Rotational speed [rpm]": None,
        "Torque [Nm]": None,
        "Tool wear [min]": None,
        "Machine failure": None,
        "Measured At": None,
    }
    table = sa.Table(
        "Sensor Readings",
        metadata,
        *[
            sa.Column(h, sa.Integer, primary_key=True, autoincrement=True)
            if h == "Row Id"
            else sa.Column(h, sa.DateTime(timezone=True) if h == "Measured At" else sa.Text)
            for h in headers
        ],
        schema=schema,
    )
    metadata.create_all(database.engine)
    by_name = {v: k for k, v in AI4I.source_to_name.items()} | {
        "process_temperature_k": "proc temp; DROP TABLE x",
        "measured_at": "Measured At",
    }
    rows = [
        {by_name.get(k, k): (str(v) if k != "measured_at" else v) for k, v in r.items()}
        for r in readings(40, seed=13)
    ]
    database.insert(table, [{k: v for k, v in r.items() if k in headers} for r in rows])
    source = SqlTableSource(
        name="plant.line-1",
        url=database.url,
        table="Sensor Readings",
        db_schema=schema,
        watermark_column="Row Id",
        event_time_column="Measured At",
        column_map={"proc temp; DROP TABLE x": "process_temperature_k"},
    )

    [plan] = discover([source], store).new
    assert plan.key == "sql-plant.line-1-000001"
    assert plan.label == f"{schema}.Sensor Readings rows with Row Id in (-inf, 40]"
    manifest = ingest_batch(plan, source, store, AI4I).manifest
    assert (manifest.rows_stored, manifest.rows_quarantined) == (40, 0)
    stored = current(store)
    expected = pd.DataFrame(readings(40, seed=13))
    np.testing.assert_array_equal(
        stored["process_temperature_k"], expected["process_temperature_k"]
    )
    assert stored["event_time"].min() == pd.Timestamp(BASE + timedelta(minutes=1))


def test_a_text_watermark_in_sqlite_pulls_incrementally(
    sqlite: Database, store: FeatureStore
) -> None:
    table = sqlite.create_readings(text_updated_at=True)
    rows = readings(20, seed=14)
    for row in rows:
        row["updated_at"] = row["updated_at"].isoformat()
    sqlite.insert(table, rows[:15])
    source = plant(sqlite, watermark_column="updated_at")
    [first] = discover([source], store).new
    assert (first.ref["kind"], first.ref["rows"]) == ("text", "15")
    sqlite.insert(table, rows[15:])
    [second] = discover([source], store).new
    assert (second.ref["lo"], second.ref["rows"]) == (first.ref["hi"], "5")
    manifest = ingest_batch(second, source, store, AI4I).manifest
    assert manifest.rows_landed == 5


def test_source_names_must_be_usable_in_batch_keys() -> None:
    with pytest.raises(ValueError, match="pattern"):
        plant("sqlite:///x.db", name="Plant A")


def test_mask_url_hides_passwords_even_in_urls_that_do_not_parse() -> None:
    assert mask_url(UNREACHABLE) == "postgresql://postgres:***@127.0.0.1:1/x"
    assert PASSWORD not in mask_url(f"not a url://me:{PASSWORD}@host")
    assert mask_url("sqlite:////data/plant.db") == "sqlite:////data/plant.db"
