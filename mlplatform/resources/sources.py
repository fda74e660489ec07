"""What a source of observations is: something that plans batches and reads them in chunks.

Two sources ship: the landing folder (:class:`~mlplatform.resources.landing.LandingArea`)
and a SQL table (:class:`~mlplatform.resources.sql_source.SqlTableSource`). A third
is one class with the four methods of :class:`BatchSource` (see the README), added
to the ``sources`` list in :mod:`mlplatform.defs.resources`.

Row numbers travel with every chunk, so quarantine entries and errors name the
row as the source knows it (the line of a CSV file, the position in a SQL pull).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from mlplatform.core.batches import BatchPlan

__all__ = ["BatchSource", "RawChunk", "RejectedRow"]


@dataclass(frozen=True)
class RejectedRow:
    """A row the reader could not split into fields (e.g. a CSV line with too many fields)."""

    row_number: int
    reason: str
    text: str


@dataclass(frozen=True)
class RawChunk:
    """Rows of one batch as read: columns as text (CSV) or as stored (Parquet, SQL).

    ``row_numbers`` are the 1-based data-row numbers of ``table``'s rows in the
    source; ``rejected`` are rows of the same stretch that could not be parsed.
    ``parsed`` names the columns whose text the reader turned into numbers (a CSV
    reader told which columns are numeric): their text is gone, so a chunk with a
    row to quarantine is read again as text, to keep what the file said.
    """

    table: pa.Table
    row_numbers: np.ndarray
    rejected: tuple[RejectedRow, ...] = field(default=())
    parsed: frozenset[str] = field(default=frozenset())


@runtime_checkable
class BatchSource(Protocol):
    """A source of observation batches."""

    @property
    def source_name(self) -> str:
        """Unique name; it prefixes the source's batch keys."""
        ...

    def plan_new(self, planned: list[BatchPlan]) -> list[BatchPlan]:
        """Plans for data not yet planned (``planned``: this source's saved plans)."""
        ...

    def read(self, plan: BatchPlan, chunk_rows: int) -> Iterator[RawChunk]:
        """The batch's rows in chunks of about ``chunk_rows``, in source order.

        A source whose chunks carry ``parsed`` columns must also take the keyword
        ``parse_numbers=False`` (every such column as text then).

        Raises
        ------
        mlplatform.core.ingest.FileRejected
            When the batch as a whole cannot be read (naming the file and why).
        """
        ...

    def finish(self, plan: BatchPlan, error: str | None) -> None:
        """Called once the batch is stored (``error`` None) or rejected (with the reason)."""
        ...
