"""Ingestion of source batches into the feature store: discover, read, type, validate, store.

The asset, the sensor, the CLI and the benchmark all call these two functions,
so what is measured and tested is what runs.

Every batch obeys the **count invariant**: rows landed = rows stored + rows
quarantined. A batch that cannot be read at all is rejected as a whole: the
store is unchanged (the new version is never committed) and the source moves
its file to the rejected area with the reason.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from mlplatform.core.batches import BatchManifest, BatchPlan, add_lineage, file_batch_key
from mlplatform.core.expectations import ROW_ID, ValidationSummary, suite_fingerprint
from mlplatform.core.ingest import (
    PARSE_EXPECTATION,
    QUARANTINE_COLUMNS,
    FileRejected,
    SeenIds,
    TypedBatch,
    TypedRows,
    ValidationMismatch,
    check_stored_rows,
    type_rows,
    validate_rows,
)
from mlplatform.core.schema import DatasetSpec
from mlplatform.resources.feature_store import BatchWriter, FeatureStore
from mlplatform.resources.landing import LandingArea
from mlplatform.resources.sources import BatchSource, RawChunk

__all__ = ["DEFAULT_CHUNK_ROWS", "BatchReport", "Discovery", "discover", "ingest_batch"]

# one GX validation per chunk costs ~0.3 s of fixed overhead: chunks are large; a
# million typed rows take ~250 MB
DEFAULT_CHUNK_ROWS = 1_000_000
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Discovery:
    """New batches found, and landed files that repeat stored content."""

    new: list[BatchPlan] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retry: list[BatchPlan] = field(default_factory=list)

    @property
    def to_ingest(self) -> list[BatchPlan]:
        """New batches, then planned batches whose ingestion never completed."""
        return [*self.new, *self.retry]


def discover(sources: Sequence[BatchSource], store: FeatureStore) -> Discovery:
    """Plan a batch for every new file or new SQL rows, and save the plans.

    A landed file whose content is already stored is archived at once, as a
    duplicate that adds no rows. A source that cannot be planned (database down)
    is reported in ``errors``; the other sources are still planned. Batches
    planned earlier whose ingestion never completed, and whose data still waits,
    are listed in ``retry``.
    """
    committed = {m.key for m in store.manifests()}
    new: list[BatchPlan] = []
    duplicates: list[str] = []
    names = [s.source_name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    errors: list[str] = []
    retry: list[BatchPlan] = []
    for source in sources:
        waiting = (
            {file_batch_key(f.sha256) for f in source.pending()}
            if isinstance(source, LandingArea)
            else None
        )
        for plan in store.plans(source.source_name):
            # planned but never stored (a crash, a database outage): its data is still
            # waiting (a landed file not yet archived or rejected; rows in a table)
            if plan.key not in committed and (waiting is None or plan.key in waiting):
                retry.append(plan)
        if isinstance(source, LandingArea):
            duplicates += [f.name for f in source.archive_duplicates(committed)]
        try:
            plans = source.plan_new(store.plans(source.source_name))
        except Exception as exc:  # one broken source must not hide the others' data
            _log.error(f"source {source.source_name!r}: cannot plan new batches: {exc}")
            errors.append(f"{source.source_name}: {exc}")
            continue
        for plan in plans:
            if plan.source != source.source_name:
                raise ValueError(f"{source.source_name}: planned a batch of {plan.source!r}")
            store.save_plan(plan)
            new.append(plan)
    return Discovery(new, duplicates, errors, retry)


@dataclass(frozen=True)
class BatchReport:
    """What ingesting one batch did."""

    plan: BatchPlan
    manifest: BatchManifest
    validation: ValidationSummary
    quarantine_sample: pd.DataFrame

    @property
    def rows_landed(self) -> int:
        """Rows the source delivered (parsed or not)."""
        return self.manifest.rows_landed


def _rejected_rows(chunk: RawChunk, label: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_file": label,
            "row_number": pd.Series([r.row_number for r in chunk.rejected], dtype="int64"),
            "column": "<row>",
            "value": [r.text for r in chunk.rejected],
            "expectation": PARSE_EXPECTATION,
            "reason": [r.reason for r in chunk.rejected],
            "record": [r.text for r in chunk.rejected],
        }
    )[QUARANTINE_COLUMNS]


_DONE = object()


def _prefetched(chunks: Iterator[RawChunk]) -> Iterator[RawChunk]:
    """``chunks``, with the next one read on a background thread meanwhile.

    Reading (pyarrow) releases the GIL, so it overlaps typing and validation of the
    current chunk; at most one chunk waits. Errors are re-raised in the caller.
    """
    box: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        box.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            box.put(exc)

    thread = threading.Thread(target=produce, name="batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def ingest_batch(
    plan: BatchPlan,
    source: BatchSource,
    store: FeatureStore,
    spec: DatasetSpec,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ingested_at: pd.Timestamp | None = None,
    log: logging.Logger | None = None,
) -> BatchReport:
    """Read ``plan``'s rows chunk by chunk into a new version of its batch.

    Each chunk's failing rows are found by the vectorized evaluation of the
    schema's suite, and its valid rows are written while Great Expectations
    validates the same chunk on a worker thread. The version is committed only
    once GX has confirmed every chunk; if GX ever disagrees, the attempt is
    dropped (nothing was visible) and the batch is read again with GX's own rows.

    Raises
    ------
    FileRejected
        When the batch cannot be ingested at all; the store is unchanged and the
        source has been told (a landed file moves to the rejected area).
    """
    log = log or _log
    stamp = ingested_at if ingested_at is not None else pd.Timestamp(datetime.now(UTC))
    stamp = stamp.as_unit("us")
    exact, numbers = False, True
    try:
        while True:
            try:
                report = _ingest(
                    plan, source, store, spec, chunk_rows, stamp, log, exact=exact, numbers=numbers
                )
                break
            except ValidationMismatch as exc:
                if exact:
                    raise
                log.warning(f"{exc}; reading {plan.label} again with Great Expectations' rows")
                exact = True
            except _TextNeeded as exc:
                log.info(f"{exc}; reading {plan.label} again with every column as text")
                numbers = False
    except FileRejected as exc:
        source.finish(plan, str(exc))
        raise
    source.finish(plan, None)
    return report


def _write_early(
    typed: TypedRows,
    writer: BatchWriter,
    spec: DatasetSpec,
    plan: BatchPlan,
    stamp: pd.Timestamp,
) -> tuple[list[str], pd.DataFrame] | None:
    """Start writing every row of a chunk whose values all typed; (parts, rows) or None.

    None when a value failed typing or a required integer is missing: some row is
    bad, and only the valid ones are written, once they are known.
    """
    if not typed.clean:
        return None
    try:
        stored = typed.stored()
    except ValueError:  # a missing required integer: that row fails validation
        return None
    rows = add_lineage(stored, spec, plan=plan, ingested_at=stamp, constants=False)
    names = writer.write_rows(rows, spec.event_time, unique=_unique(spec))
    return (names, rows) if names else None


def _unique(spec: DatasetSpec) -> tuple[str, ...]:
    """Stored columns whose values never repeat in a version: validated ids, row numbers."""
    return (spec.entity_id, ROW_ID)


class _TextNeeded(Exception):
    """A chunk read with numbers parsed has rows to quarantine: their text is needed."""


def _ingest(
    plan: BatchPlan,
    source: BatchSource,
    store: FeatureStore,
    spec: DatasetSpec,
    chunk_rows: int,
    stamp: pd.Timestamp,
    log: logging.Logger,
    *,
    exact: bool,
    numbers: bool,
) -> BatchReport:
    """One attempt of :func:`ingest_batch`; commits only what GX confirmed.

    With ``numbers`` the source may parse numeric columns as it reads them; without,
    it is asked for text (``parse_numbers=False``).
    """
    landed = stored = quarantined = 0
    summary = ValidationSummary()
    stored_summary = ValidationSummary()
    stored_checks: list[Future[ValidationSummary]] = []
    sample: list[pd.DataFrame] = []
    seen_ids = SeenIds()
    unconfirmed: TypedBatch | None = None
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="gx-validation") as gx,
        store.writer(plan, stamp) as writer,
    ):
        chunks = (
            source.read(plan, chunk_rows)
            if numbers
            else source.read(plan, chunk_rows, parse_numbers=False)  # type: ignore[call-arg]
        )
        for i, chunk in enumerate(_prefetched(chunks)):
            landed += chunk.table.num_rows + len(chunk.rejected)
            if chunk.rejected:
                bad = _rejected_rows(chunk, plan.label)
                writer.write_quarantine(bad)
                quarantined += len(chunk.rejected)
                sample.append(bad.head(5))
            if chunk.table.num_rows == 0:
                continue
            typed_rows = type_rows(chunk.table, spec, plan.label, row_numbers=chunk.row_numbers)
            # Every value typed: every row is likely valid, so GX starts validating the
            # chunk now and its rows start on their way to disk meanwhile (the part is
            # dropped if a row fails after all; nothing is visible before the commit).
            early = None
            if typed_rows.clean and not exact:
                typed_rows.start_validation(gx)
                early = _write_early(typed_rows, writer, spec, plan, stamp)
            rows = early[1] if early is not None else None
            typed = validate_rows(
                typed_rows, seen_ids=seen_ids, confirm_on=None if exact else gx, exact=exact
            )
            if chunk.parsed and typed.rows_quarantined:
                # the quarantine keeps each bad row's text as landed, which parsing lost
                raise _TextNeeded(
                    f"{plan.label}: chunk {i + 1} has {typed.rows_quarantined:,} rows to quarantine"
                )
            if early is not None and typed.rows_quarantined:
                writer.discard(early[0])
                rows = None
            if rows is None:
                # encoded and written on the writer thread while GX validates this chunk
                rows = add_lineage(typed.valid, spec, plan=plan, ingested_at=stamp, constants=False)
                writer.write_rows(rows, spec.event_time, unique=_unique(spec))
            # GX validates the chunk while its rows are written (the two overlap)
            typed.start_confirmation()
            # GX's verdict on the rows as stored, on its thread once the chunk's is done
            stored_checks.append(
                gx.submit(check_stored_rows, rows, spec, rows_quarantined=typed.rows_quarantined)
            )
            writer.write_quarantine(typed.quarantine)
            stored += len(typed.valid)
            quarantined += typed.rows_quarantined
            if unconfirmed is not None:  # at most one chunk waits for GX
                summary = summary.merge(unconfirmed.confirmed())
            unconfirmed = typed
            if not typed.quarantine.empty and sum(len(s) for s in sample) < 20:
                sample.append(typed.quarantine.head(20))
            log.info(
                f"{plan.label}: chunk {i + 1}: {chunk.table.num_rows:,} rows read, "
                f"{len(typed.valid):,} stored, {typed.rows_quarantined:,} quarantined "
                f"(total {landed:,} landed)"
            )
        if unconfirmed is not None:
            summary = summary.merge(unconfirmed.confirmed())
        if landed == 0:
            raise FileRejected(plan.label, "no data rows (a header only, or an empty pull)")
        for check in stored_checks:
            stored_summary = stored_summary.merge(check.result())
        manifest = writer.commit(
            rows_landed=landed,
            rows_quarantined=quarantined,
            validation=summary.as_metadata(),
            suite=suite_fingerprint(spec),
            stored_check=stored_summary.as_metadata(),
        )
    quarantine_sample = (
        pd.concat(sample, ignore_index=True).head(20)
        if sample
        else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    )
    return BatchReport(plan, manifest, summary, quarantine_sample)
