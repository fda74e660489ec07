"""Sample data for the embedded default: generated AI4I-like rows into both sources.

``mlplatform run`` drops most generated rows into the landing folder as a CSV file
and appends the rest to the SQL source's table, so every run exercises both sources.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlplatform.core.schema import DatasetSpec

__all__ = ["max_entity_id", "readings_table", "write_sql_readings"]


def readings_table(
    metadata: sa.MetaData, spec: DatasetSpec, table: str, watermark: str, event_time: str
) -> sa.Table:
    """The SQL source's table: an autoincrement watermark, a reading time, canonical columns."""
    types: dict[str, sa.types.TypeEngine[Any]] = {
        "int64": sa.BigInteger(),
        "float64": sa.Float(),
        "string": sa.String(64),
    }
    columns: list[sa.Column[Any]] = [
        sa.Column(watermark, sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(event_time, sa.DateTime(timezone=True), nullable=False),
    ]
    columns += [sa.Column(c.name, types[c.dtype]) for c in spec.columns if c.dtype != "timestamp"]
    return sa.Table(table, metadata, *columns)


def write_sql_readings(
    url: str,
    spec: DatasetSpec,
    frame: pd.DataFrame,
    *,
    table: str,
    watermark: str,
    event_time: str,
    start: datetime | None = None,
) -> int:
    """Append ``frame`` (source headers or canonical names) to the readings table.

    Readings are stamped one minute apart, ending now (or from ``start``).
    Returns the number of rows written.
    """
    rows = frame.rename(columns=spec.source_to_name)
    rows = rows[[c.name for c in spec.columns if c.name in rows.columns]].copy()
    first = start or datetime.now(UTC) - timedelta(minutes=len(rows))
    rows[event_time] = [first + timedelta(minutes=i) for i in range(len(rows))]
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        target = readings_table(metadata, spec, table, watermark, event_time)
        metadata.create_all(engine)
        with engine.begin() as conn:
            records = [{str(k): v for k, v in r.items()} for r in rows.to_dict(orient="records")]
            conn.execute(sa.insert(target), records)
    finally:
        engine.dispose()
    return len(rows)


def max_entity_id(url: str, table: str, entity_id: str) -> int:
    """The largest entity id in the readings table (0 if it is empty or absent)."""
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table(table):
            return 0
        with engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.max(sa.column(entity_id))).select_from(sa.table(table))
            ).scalar()
        return int(found or 0)
    finally:
        engine.dispose()
