"""A SQL table as a source of observation batches, pulled incrementally by a watermark.

Each discovery plans at most one batch: the rows whose watermark column (an
autoincrement id, an ``updated_at`` timestamp, ...) lies above the highest
watermark already planned, up to the current maximum. The plan records that
range, so reading the batch again (re-materializing its partition) reads exactly
the rows in ``(lo, hi]``, never rows that arrived later.

An updated row whose ``updated_at`` was bumped falls into the next pull and
supersedes its earlier version in the feature store (same entity id, later
ingestion). With an id watermark, updates are not seen.

Known limits of any watermark pull: rows whose watermark is NULL are never
pulled, and a row committed *after* a pull with a watermark at or below that
pull's ``hi`` (a long transaction holding an older id or timestamp) is missed by
later pulls. Rows stay in the database: nothing is moved or deleted, and the
source only reads (SQLite files are opened read-only).

SQLAlchemy (installed with MLflow and Dagster) is imported inside methods, like
in :mod:`mlplatform.resources.ledger`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import urllib.parse
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import Field

from mlplatform.core.batches import BatchPlan
from mlplatform.core.ingest import FileRejected
from mlplatform.resources.sources import RawChunk

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table

__all__ = ["SQL_KEY_PREFIX", "SqlSourceError", "SqlTableSource", "mask_url"]

SQL_KEY_PREFIX = "sql"
EVENT_TIME = "event_time"
_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
_MAX_REASON = 400

logger = logging.getLogger(__name__)


class SqlSourceError(RuntimeError):
    """The source cannot plan: database unreachable, watermark column missing or unusable."""


class _SourceMissing(Exception):
    """The database file or the table does not exist (yet)."""


class _ColumnMissing(Exception):
    """A configured column is not in the table."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also when it does not parse)."""
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return _URL_PASSWORD.sub(r"\g<head>***@", url)


# -- watermark values --------------------------------------------------------------------
# A watermark is saved in the plan as text with its kind, and bound back as the same
# Python value, so a re-read compares against exactly what the planning query returned.


def _format_mark(value: object, where: str) -> tuple[str, str]:
    """(kind, text) of a watermark value returned by the database."""
    if isinstance(value, bool):
        raise SqlSourceError(f"{where}: a boolean column cannot be a watermark")
    if isinstance(value, int):
        return "int", str(value)
    if isinstance(value, float):
        return "float", repr(value)
    if isinstance(value, Decimal):
        return "decimal", str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return "timestamp", value.isoformat()
    if isinstance(value, date):
        return "date", value.isoformat()
    if isinstance(value, str):
        return "text", value
    raise SqlSourceError(
        f"{where}: unsupported watermark type {type(value).__name__}; use an integer, "
        "number, timestamp, date or ISO text column"
    )


def _parse_mark(kind: str, text: str) -> Any:
    """The watermark value saved by :func:`_format_mark`."""
    parsers: dict[str, Any] = {
        "int": int,
        "float": float,
        "decimal": Decimal,
        "timestamp": datetime.fromisoformat,
        "date": date.fromisoformat,
        "text": str,
    }
    if kind not in parsers:
        raise ValueError(f"unknown watermark kind {kind!r}; expected one of {sorted(parsers)}")
    return parsers[kind](text)


# -- rows to Arrow ---------------------------------------------------------------------------

_PLAIN_TYPES = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_decimal,
    pa.types.is_date,
    pa.types.is_timestamp,
)


def _as_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _column_array(values: Sequence[object]) -> pa.Array:
    """One column as Arrow: as stored where Arrow can hold it, timestamps in UTC, else text.

    SQLite is dynamically typed, so a REAL column may hold text; such a column
    (and anything Arrow cannot hold as a plain value) becomes text, which typing
    then reports value by value.
    """
    first = next((v for v in values if v is not None), None)
    if first is None:
        return pa.nulls(len(values), pa.string())
    try:
        if isinstance(first, datetime):
            # naive values are UTC; aware ones are converted to UTC
            return pa.array(values, pa.timestamp("us", tz="UTC"))
        array = pa.array(values)
        if any(is_plain(array.type) for is_plain in _PLAIN_TYPES):
            return array
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    return pa.array([None if v is None else _as_text(v) for v in values], pa.string())


def _arrow_table(names: list[str], rows: Sequence[Sequence[object]]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.Table.from_arrays([_column_array(c) for c in columns], names=names)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _driver_reason(exc: BaseException, secrets: Sequence[str]) -> str:
    """The driver's message, one line, without SQL, parameters or secrets."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    text = text.split("[SQL:")[0].split("(Background on this error")[0]
    text = " ".join(text.split())
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return text[:_MAX_REASON] or type(exc).__name__


class SqlTableSource(dg.ConfigurableResource):
    """Rows of one SQL table, pulled incrementally by a monotonic watermark column."""

    name: str = Field(
        pattern=_NAME_PATTERN,
        description="Source name (lowercase letters, digits, '_', '.', '-'); batch keys are "
        "sql-<name>-<sequence>.",
    )
    url: str = Field(
        description="SQLAlchemy URL of the database, e.g. sqlite:////data/plant.db or "
        "postgresql://reader@db/plant (pass secrets with dg.EnvVar)."
    )
    table: str = Field(description="Table (or view) to pull rows from.")
    watermark_column: str = Field(
        description="Column that only grows for new or changed rows: an autoincrement id, or "
        "an updated_at timestamp (which also re-pulls updated rows)."
    )
    db_schema: str | None = Field(
        default=None, description="Database schema of the table (default: the connection's)."
    )
    event_time_column: str | None = Field(
        default=None,
        description="Column holding when each observation was made; it becomes event_time.",
    )
    column_map: dict[str, str] = Field(
        default={},
        description="Renames from database column to canonical name, e.g. "
        "{'temp_air': 'air_temperature_k'}.",
    )

    # -- the BatchSource protocol ---------------------------------------------------------

    @property
    def source_name(self) -> str:
        """The configured ``name``."""
        return self.name

    def plan_new(self, planned: list[BatchPlan]) -> list[BatchPlan]:
        """One plan for the rows above the highest planned watermark, if there are any.

        Returns ``[]`` (and logs a warning) when the database file or the table does
        not exist yet.

        Raises
        ------
        SqlSourceError
            When the database cannot be queried, or the watermark column is missing
            or of an unusable type.
        """
        import sqlalchemy as sa

        last = self._last_mark(planned)
        try:
            with self._connection() as conn:
                table = self._reflect(conn)
                mark = self._column(table, self.watermark_column)
                query = sa.select(sa.func.count(), sa.func.max(mark)).where(
                    mark.is_not(None) if last is None else mark > last[0]
                )
                count, high = conn.execute(query).one()
        except _SourceMissing as exc:
            logger.warning(f"SQL source {self.name!r}: {exc}; nothing to pull yet")
            return []
        except _ColumnMissing as exc:
            raise SqlSourceError(
                f"SQL source {self.name!r}: table {self._qualified!r} in {self._masked_url} "
                f"has no watermark column {self.watermark_column!r}"
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise SqlSourceError(
                f"SQL source {self.name!r}: cannot query table {self._qualified!r} in "
                f"{self._masked_url}: {self._reason(exc)}"
            ) from exc
        if not count:
            return []
        kind, hi = _format_mark(high, f"{self._qualified}.{self.watermark_column}")
        ref = {
            "table": self._qualified,
            "column": self.watermark_column,
            "kind": kind,
            "hi": hi,
            "rows": str(int(count)),
        }
        lo = None if last is None else last[1]
        if lo is not None:
            ref["lo"] = lo
        key = f"{SQL_KEY_PREFIX}-{self.name}-{self._next_sequence(planned):06d}"
        plan = BatchPlan(key, self.name, self._label(lo, hi), ref)
        logger.info(f"SQL source {self.name!r}: planned {key}: {plan.label} ({count:,} rows)")
        return [plan]

    def read(self, plan: BatchPlan, chunk_rows: int) -> Generator[RawChunk, None, None]:
        """The plan's rows in watermark order, at most ``chunk_rows`` per chunk, streamed.

        Row numbers are 1-based positions within the pull; timestamps are UTC. The
        connection stays open while chunks are consumed; closing the generator early
        releases it.

        Raises
        ------
        FileRejected
            Naming the table (and column), when the database is unreachable, the
            table or a configured column is missing, the query fails, or no row
            of the range is left.
        """
        import sqlalchemy as sa

        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        lo, hi = self._range(plan)
        rows_read = 0
        abandoned = False
        try:
            with self._connection() as conn:
                table = self._reflect(conn)
                mark = self._column(table, self.watermark_column)
                names = self._output_names([c.name for c in table.columns], plan.label)
                tiebreak = [c for c in table.primary_key.columns if c.name != mark.name]
                condition = mark <= hi if lo is None else sa.and_(mark > lo, mark <= hi)
                # untyped columns: values as the driver returns them, no SQLAlchemy
                # conversion that would fail on one bad value of a dynamically typed column
                query = (
                    sa.select(
                        *[sa.type_coerce(c, sa.types.NULLTYPE).label(c.name) for c in table.c]
                    )
                    .where(condition)
                    .order_by(mark, *tiebreak)
                )
                result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
                    query
                )
                for rows in result.partitions(chunk_rows):
                    arrow = _arrow_table(names, rows)
                    numbers = np.arange(
                        rows_read + 1, rows_read + arrow.num_rows + 1, dtype="int64"
                    )
                    rows_read += arrow.num_rows
                    try:
                        yield RawChunk(arrow, numbers)
                    except GeneratorExit:
                        abandoned = True
                        raise
        except _SourceMissing as exc:
            raise FileRejected(plan.label, str(exc)) from exc
        except _ColumnMissing as exc:
            column = exc.column
            what = "watermark column" if column == self.watermark_column else "column"
            raise FileRejected(
                plan.label, f"table {self._qualified!r} has no {what} {column!r}", column=column
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            if abandoned:  # the reader stopped early; closing the connection failed
                logger.debug(f"{plan.label}: closing an abandoned read: {self._reason(exc)}")
                return
            raise FileRejected(
                plan.label,
                f"cannot read table {self._qualified!r} from {self._masked_url}: "
                f"{self._reason(exc)}",
            ) from exc
        if rows_read == 0:
            raise FileRejected(
                plan.label,
                f"no rows of table {self._qualified!r} are left in the planned range "
                "(deleted, or moved on by an update, since the batch was planned)",
            )
        planned_rows = plan.ref.get("rows")
        if planned_rows is not None and planned_rows.isdigit() and int(planned_rows) != rows_read:
            logger.warning(
                f"{plan.label}: read {rows_read:,} rows, {int(planned_rows):,} when planned "
                "(rows changed inside the range since)"
            )

    def finish(self, plan: BatchPlan, error: str | None) -> None:
        """Nothing to move: the rows stay in the database. Logs the outcome."""
        if error is None:
            logger.info(f"SQL source {self.name!r}: batch {plan.key} stored ({plan.label})")
        else:
            logger.warning(f"SQL source {self.name!r}: batch {plan.key} rejected: {error}")

    # -- helpers --------------------------------------------------------------------------

    @property
    def _qualified(self) -> str:
        return self.table if self.db_schema is None else f"{self.db_schema}.{self.table}"

    @property
    def _masked_url(self) -> str:
        return mask_url(self.url)

    def _reason(self, exc: BaseException) -> str:
        import sqlalchemy as sa

        try:
            password = sa.make_url(self.url).password
        except (sa.exc.ArgumentError, ValueError):
            password = None
        secrets = [] if not password else [str(password), urllib.parse.quote_plus(str(password))]
        return _driver_reason(exc, secrets)

    def _label(self, lo: str | None, hi: str) -> str:
        return f"{self._qualified} rows with {self.watermark_column} in ({lo or '-inf'}, {hi}]"

    def _ours(self, plan: BatchPlan) -> bool:
        """Whether ``plan`` pulled this table by this watermark (not an earlier configuration)."""
        return (
            plan.ref.get("table", self._qualified) == self._qualified
            and plan.ref.get("column", self.watermark_column) == self.watermark_column
            and bool(plan.ref.get("hi"))
        )

    def _last_mark(self, planned: list[BatchPlan]) -> tuple[Any, str] | None:
        """The highest planned watermark of this table and column: (value, text as saved)."""
        marks = [
            (_parse_mark(p.ref.get("kind", "int"), p.ref["hi"]), p.ref["hi"])
            for p in planned
            if self._ours(p)
        ]
        if not marks:
            return None
        try:
            return max(marks, key=lambda mark: mark[0])
        except TypeError as exc:
            kinds = sorted({p.ref.get("kind", "int") for p in planned if self._ours(p)})
            raise SqlSourceError(
                f"SQL source {self.name!r}: planned batches mix watermark kinds {kinds} for "
                f"{self._qualified}.{self.watermark_column}"
            ) from exc

    def _next_sequence(self, planned: list[BatchPlan]) -> int:
        prefix = f"{SQL_KEY_PREFIX}-{self.name}-"
        numbers = [
            int(p.key[len(prefix) :])
            for p in planned
            if p.key.startswith(prefix) and p.key[len(prefix) :].isdigit()
        ]
        return max(numbers, default=0) + 1

    def _range(self, plan: BatchPlan) -> tuple[object | None, object]:
        if plan.source != self.name:
            raise FileRejected(plan.label, f"planned by source {plan.source!r}, not {self.name!r}")
        ref = plan.ref
        for field, mine in (("table", self._qualified), ("column", self.watermark_column)):
            if ref.get(field, mine) != mine:
                raise FileRejected(
                    plan.label,
                    f"planned with {field} {ref[field]!r}, but source {self.name!r} now reads "
                    f"{field} {mine!r}",
                )
        if not ref.get("hi"):
            raise FileRejected(plan.label, "the plan has no watermark range (ref 'hi' missing)")
        kind = ref.get("kind", "int")
        try:
            lo = _parse_mark(kind, ref["lo"]) if ref.get("lo") else None
            return lo, _parse_mark(kind, ref["hi"])
        except (ValueError, ArithmeticError) as exc:  # decimal.InvalidOperation is arithmetic
            raise FileRejected(
                plan.label, f"unreadable watermark range in the plan: {exc}"
            ) from exc

    def _output_names(self, columns: list[str], label: str) -> list[str]:
        """Column names handed on: ``column_map`` renames, the event time as ``event_time``."""
        renames: Mapping[str, str] = dict(self.column_map)
        if self.event_time_column is not None:
            renames = {**renames, self.event_time_column: EVENT_TIME}
        for column in renames:
            if column not in columns:
                raise _ColumnMissing(column)
        names = [renames.get(c, c) for c in columns]
        for name in names:
            if names.count(name) > 1:
                raise FileRejected(
                    label,
                    f"two columns of table {self._qualified!r} are named {name!r} after "
                    "column_map and event_time_column renames",
                    column=name,
                )
        return names

    def _column(self, table: Table, name: str) -> Any:
        if name not in table.c:
            raise _ColumnMissing(name)
        return table.c[name]

    def _engine(self) -> Engine:
        """A pool-less engine: every connection closes when released."""
        import sqlalchemy as sa

        url = sa.make_url(self.url)
        if url.drivername == "postgresql" and not _installed("psycopg") and _installed("psycopg2"):
            # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3; use psycopg2 when that is
            # the driver installed
            url = url.set(drivername="postgresql+psycopg2")
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            database = str(url.database)
            if "uri" not in url.query:
                path = Path(database)
                if not path.is_file():
                    raise _SourceMissing(
                        f"database file {path} of {self._masked_url} does not exist "
                        f"(table {self._qualified!r})"
                    )
                # read-only: a source never writes, and never creates an empty file
                url = url.set(
                    database="file:" + urllib.parse.quote(os.path.abspath(path)),
                    query={**url.query, "mode": "ro", "uri": "true"},
                )
        return sa.create_engine(url, poolclass=sa.pool.NullPool)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        import sqlalchemy as sa

        try:
            engine = self._engine()
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise sa.exc.ArgumentError(f"invalid database URL {self._masked_url}") from exc
        except ImportError as exc:
            raise sa.exc.NoSuchModuleError(
                f"the database driver for {self._masked_url} is not installed ({exc})"
            ) from exc
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def _reflect(self, conn: Connection) -> Table:
        import sqlalchemy as sa

        try:
            return sa.Table(self.table, sa.MetaData(), schema=self.db_schema, autoload_with=conn)
        except sa.exc.NoSuchTableError as exc:
            raise _SourceMissing(
                f"table {self._qualified!r} does not exist in {self._masked_url}"
            ) from exc
