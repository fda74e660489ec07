"""The feature store on disk: versioned Parquet batches, their quarantine, and plans.

Layout under ``root``::

    plans/<batch>.json                     how to (re)read a batch (source, file hash, range)
    batches/<batch>/<version>/part-*.parquet         valid rows: typed, derived, lineage
    batches/<batch>/<version>/quarantine-*.parquet   invalid rows with file, row, column, reason
    batches/<batch>/<version>/_manifest.json         counts, ingestion time, validation summary

A version is written in a hidden temporary folder and renamed into place after its
manifest, so a crash mid-write leaves the previous state readable and no partial
version visible. Versions are never overwritten or deleted: re-ingesting a batch
adds a newer version, and :meth:`FeatureStore.as_of` can still read the old one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlplatform.core.batches import (
    AS_OF_KEYS,
    BatchManifest,
    BatchPlan,
    check_key,
    lineage_constants,
    parse_time,
    resolve_as_of,
    select_versions,
    version_name,
)
from mlplatform.core.expectations import (
    ValidationSummary,
    suite_fingerprint,
    table_expectations,
    validate,
)
from mlplatform.core.features import derived_fingerprint, stored_columns
from mlplatform.core.ingest import QUARANTINE_COLUMNS, empty_quarantine
from mlplatform.core.schema import DatasetSpec
from mlplatform.core.snapshots import FeatureSnapshot, SnapshotPart, mask_to_ranges, superseded_rows
from mlplatform.resources.feature_tables import SnapshotChanged, SnapshotTable
from mlplatform.resources.files import (
    TMP_PREFIX,
    file_sha256,
    fsync_file,
    write_bytes_atomic,
    write_parquet,
)

__all__ = ["BatchWriter", "FeatureStore", "SnapshotCheck"]

MANIFEST = "_manifest.json"
# parts hashed or read at once (hashing and Parquet decoding release the GIL)
_IO_THREADS = 4
# a chunk's rows are written as up to this many parts side by side, of at least
# _PART_ROWS rows each (encoding and compressing Parquet release the GIL)
_WRITERS = 2
_PART_ROWS = 250_000
_STALE_TMP_SECONDS = 3600.0


def _read_parquet(paths: list[Path], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The parts stacked, as one frame; ``columns`` (those a part has) only, if given."""
    if not paths:
        return pd.DataFrame()
    tables = []
    for p in paths:
        wanted = None
        if columns is not None:
            present = set(pq.read_schema(p).names)
            wanted = [c for c in columns if c in present]
        tables.append(pq.read_table(p, columns=wanted))
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    del tables
    # column by column, each Arrow column freed once converted: about one copy at a time
    return table.to_pandas(split_blocks=True, self_destruct=True)


@dataclass(frozen=True)
class SnapshotCheck:
    """What :meth:`FeatureStore.check_snapshot` found."""

    summary: ValidationSummary
    problems: list[str]
    parts_verified: int
    revalidated: list[str]

    @property
    def success(self) -> bool:
        """Whether every part is intact and typed, and every row passed the suite."""
        return self.summary.success and not self.problems

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for the asset check: GX's summary, the parts and their problems."""
        gx = self.summary.as_metadata()
        return {
            **{k: v for k, v in gx.items() if k != "failures"},
            "failures": [*self.problems, *gx["failures"]],
            "parts_verified": self.parts_verified,
            "revalidated_batches": list(self.revalidated),
        }


# storage types as Arrow names them in a part's footer, by declared dtype
_ARROW_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "int64": (pa.types.is_int64, "int64"),
    "float64": (pa.types.is_float64, "double"),
    "string": (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
    "timestamp": (pa.types.is_timestamp, "timestamp"),
}


def _schema_problems(
    spec: DatasetSpec, columns: Sequence[str], schema: pa.Schema, part: SnapshotPart
) -> list[str]:
    """What a part's footer lacks of the table's columns and their storage types."""
    declared = {c.name: c.dtype for c in spec.columns}
    problems = []
    where = f"batch {part.batch} ({part.path})"
    for name in columns:
        if name not in schema.names:
            problems.append(
                f"{where}: no column {name!r} (stored under an older schema: materialize "
                "this raw_observations partition again)"
            )
            continue
        dtype = declared.get(name)
        if dtype is None:
            continue
        accepts, shown = _ARROW_TYPES[dtype]
        found = schema.field(name).type
        if not accepts(found):
            problems.append(f"{where}: column {name!r} stored as {found}, declared {shown}")
    return problems


def _recorded_summary(recorded: Mapping[str, Any]) -> ValidationSummary:
    """A version's recorded stored-rows verdict, its counts only (failures are listed apart)."""
    return ValidationSummary(
        expectations_run=int(recorded.get("expectations_run", 0)),
        rows_checked=int(recorded.get("rows_checked", 0)),
    )


def _stamp(value: Any) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value)


class BatchWriter:
    """Writes one new version of a batch; nothing is visible until :meth:`commit`.

    Parts are converted to Arrow and written on background threads (both release the
    GIL) while the caller types and validates the next chunk: a chunk's rows in up to
    ``_WRITERS`` parts written side by side, and no other write while they are in
    flight.
    """

    def __init__(self, folder: Path, plan: BatchPlan, ingested_at: pd.Timestamp) -> None:
        self.plan = plan
        self.ingested_at = ingested_at
        self.version = version_name(ingested_at.to_pydatetime())
        self.final = folder / self.version
        if self.final.exists():
            raise FileExistsError(f"batch {plan.key}: version {self.version} already exists")
        self.tmp = folder / f"{TMP_PREFIX}{self.version}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.parts: list[str] = []
        self._next_part = 0
        self.quarantine_parts: list[str] = []
        # per row part: (rows, earliest event time, latest event time), once written
        self._stats: dict[str, tuple[int, pd.Timestamp | None, pd.Timestamp | None]] = {}
        self._sha256: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="batch-writer")
        self._pending: list[Future[None]] = []
        # the lineage every row of this version shares, added to rows that lack it
        self._constant = pa.Table.from_pandas(
            lineage_constants(plan, ingested_at), preserve_index=False
        )

    @property
    def rows_stored(self) -> int:
        """Rows in the parts written so far (waits for the write in flight)."""
        self._wait()
        return sum(rows for rows, _, _ in self._stats.values())

    def _submit(self, *jobs: Callable[[], None]) -> None:
        self._wait()
        self._pending = [self._pool.submit(job) for job in jobs]

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for job in pending:
            job.result()  # re-raises a failed write here

    def write_rows(
        self, rows: pd.DataFrame, event_time: str | None = None, *, unique: Sequence[str] = ()
    ) -> list[str]:
        """Append valid rows as parts, in order (``rows`` must not be changed afterwards).

        At least ``_PART_ROWS`` rows a part, in up to ``_WRITERS`` parts written side by
        side. Each part is read back as written: its footer must hold the rows and
        columns written, and the sha256 of its bytes is kept for the manifest. Returns
        the parts' names (none for no rows).

        Lineage that ``rows`` lack and every row of the version shares
        (:data:`~mlplatform.core.batches.CONSTANT_LINEAGE`: batch, source, file,
        ingestion time) is added to every row as it is written. Columns in ``unique``
        hold no repeated value (the entity id, ``source_row``): they are written
        without a dictionary.
        """
        if rows.empty:
            return []
        pieces = max(1, min(_WRITERS, len(rows) // _PART_ROWS))
        bounds = np.linspace(0, len(rows), pieces + 1).astype(int)
        jobs, names = [], []
        for start, stop in itertools.pairwise(bounds):
            name = f"part-{self._next_part:05d}.parquet"
            self._next_part += 1
            self.parts.append(name)
            names.append(name)
            jobs.append(self._part_job(rows.iloc[start:stop], event_time, name, unique))
        self._submit(*jobs)
        return names

    def _part_job(
        self, rows: pd.DataFrame, event_time: str | None, name: str, unique: Sequence[str]
    ) -> Callable[[], None]:
        constant = self._constant.select(
            [c for c in self._constant.column_names if c not in rows.columns]
        )
        columns = len(rows.columns) + constant.num_columns

        def job() -> None:
            table = pa.Table.from_pandas(rows, preserve_index=False)
            lo = hi = None
            if event_time is not None and event_time in rows.columns:
                bounds = pc.min_max(table.column(event_time))
                lo = _stamp(bounds["min"].as_py())
                hi = _stamp(bounds["max"].as_py())
            path = self.tmp / name
            write_parquet(table, path, constant=constant, plain=unique)
            footer = pq.read_metadata(path)
            if footer.num_rows != len(rows) or footer.num_columns != columns:
                raise OSError(
                    f"{path}: wrote {len(rows):,} rows of {columns} columns but the "
                    f"file says {footer.num_rows:,} rows of {footer.num_columns}"
                )
            self._sha256[name] = file_sha256(path)
            fsync_file(path)  # on disk before the commit, which then waits for nothing else
            self._stats[name] = (len(rows), lo, hi)

        return job

    def discard(self, names: Sequence[str]) -> None:
        """Drop the parts ``names`` written earlier (their rows were not all valid after all)."""
        self._wait()
        for name in names:
            self.parts.remove(name)
            self._stats.pop(name, None)
            self._sha256.pop(name, None)
            (self.tmp / name).unlink(missing_ok=True)

    def write_quarantine(self, quarantine: pd.DataFrame) -> None:
        """Append a part of quarantined rows (one row per failed row, column, expectation)."""
        if quarantine.empty:
            return
        name = f"quarantine-{len(self.quarantine_parts):05d}.parquet"
        frame = quarantine.assign(batch_id=self.plan.key, ingested_at=self.ingested_at)
        table = pa.Table.from_pandas(frame, preserve_index=False)

        def job() -> None:
            write_parquet(table, self.tmp / name)
            fsync_file(self.tmp / name)

        self._submit(job)
        self.quarantine_parts.append(name)

    def commit(
        self,
        *,
        rows_landed: int,
        rows_quarantined: int,
        validation: dict[str, Any],
        suite: str | None = None,
        stored_check: dict[str, Any] | None = None,
    ) -> BatchManifest:
        """Write the manifest and make the version visible (one rename).

        ``suite`` is the fingerprint of the suite the rows were validated with and
        ``stored_check`` Great Expectations' verdict on the rows as stored.
        """
        self._wait()
        self._pool.shutdown()
        lows = [lo for _, lo, _ in self._stats.values() if lo is not None and not pd.isna(lo)]
        highs = [hi for _, _, hi in self._stats.values() if hi is not None and not pd.isna(hi)]
        event_min = min(lows) if lows else None
        event_max = max(highs) if highs else None
        manifest = BatchManifest(
            key=self.plan.key,
            version=self.version,
            source=self.plan.source,
            label=self.plan.label,
            ingested_at=self.ingested_at.isoformat(),
            rows_landed=rows_landed,
            rows_stored=self.rows_stored,
            rows_quarantined=rows_quarantined,
            parts=tuple(self.parts),
            quarantine_parts=tuple(self.quarantine_parts),
            ref=dict(self.plan.ref),
            event_time_min=None if event_min is None else event_min.isoformat(),
            event_time_max=None if event_max is None else event_max.isoformat(),
            validation=validation,
            part_rows={name: self._stats[name][0] for name in self.parts},
            part_sha256={name: self._sha256[name] for name in self.parts},
            suite=suite,
            stored_check=stored_check or {},
        )
        # every part was flushed to disk by the thread that wrote it
        write_bytes_atomic(
            json.dumps(manifest.to_json(), indent=1, default=str).encode(), self.tmp / MANIFEST
        )
        os.rename(self.tmp, self.final)
        return manifest

    def abort(self) -> None:
        """Drop everything written; the store is as it was."""
        with contextlib.suppress(Exception):  # the write being aborted may have failed
            self._wait()
        self._pool.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


class FeatureStore(dg.ConfigurableResource):
    """Versioned observation batches, the quarantine and batch plans under one folder."""

    root: str

    @property
    def _batches(self) -> Path:
        return Path(self.root) / "batches"

    @property
    def _plans(self) -> Path:
        return Path(self.root) / "plans"

    # plans ---------------------------------------------------------------------------

    def save_plan(self, plan: BatchPlan) -> None:
        """Record how to read batch ``plan.key`` (idempotent for the same plan)."""
        target = self._plans / f"{plan.key}.json"
        write_bytes_atomic(json.dumps(plan.to_json(), indent=1).encode(), target)

    def load_plan(self, key: str) -> BatchPlan:
        """The saved plan of batch ``key``.

        Raises
        ------
        KeyError
            When no source ever planned this batch.
        """
        path = self._plans / f"{check_key(key)}.json"
        if not path.is_file():
            raise KeyError(f"unknown batch {key!r}: no plan in {self._plans}")
        return BatchPlan.from_json(json.loads(path.read_text()))

    def has_plan(self, key: str) -> bool:
        """Whether batch ``key`` was ever planned."""
        return (self._plans / f"{key}.json").is_file()

    def plans(self, source: str | None = None) -> list[BatchPlan]:
        """Every saved plan (of ``source``), by key."""
        if not self._plans.is_dir():
            return []
        found = [
            BatchPlan.from_json(json.loads(p.read_text()))
            for p in sorted(self._plans.glob("*.json"))
            if not p.name.startswith(TMP_PREFIX)
        ]
        return [p for p in found if source is None or p.source == source]

    # writing -------------------------------------------------------------------------

    @contextmanager
    def writer(self, plan: BatchPlan, ingested_at: pd.Timestamp) -> Iterator[BatchWriter]:
        """A writer for a new version of ``plan.key``; aborted if the block raises."""
        folder = self._batches / check_key(plan.key)
        folder.mkdir(parents=True, exist_ok=True)
        self._sweep(folder)
        w = BatchWriter(folder, plan, parse_time(ingested_at))
        try:
            yield w
        except BaseException:
            w.abort()
            raise
        if w.tmp.exists():  # never committed
            w.abort()

    @staticmethod
    def _sweep(folder: Path) -> None:
        """Remove temporary versions a crashed writer left more than an hour ago."""
        now = time.time()
        for p in folder.glob(f"{TMP_PREFIX}*"):
            if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)

    # reading -------------------------------------------------------------------------

    def manifests(self, key: str | None = None) -> list[BatchManifest]:
        """Every committed version (of batch ``key``), oldest first."""
        if not self._batches.is_dir():
            return []
        folders = [self._batches / key] if key is not None else sorted(self._batches.iterdir())
        out = []
        for folder in folders:
            if not folder.is_dir() or folder.name.startswith((".", TMP_PREFIX)):
                continue
            for version in sorted(folder.iterdir()):
                manifest = version / MANIFEST
                if version.name.startswith(TMP_PREFIX) or not manifest.is_file():
                    continue
                out.append(BatchManifest.from_json(json.loads(manifest.read_text())))
        return sorted(out, key=lambda m: (m.ingested, m.key))

    def is_committed(self, key: str) -> bool:
        """Whether batch ``key`` has at least one committed version."""
        return bool(self.manifests(key))

    def latest(self, as_of: str | pd.Timestamp | None = None) -> list[BatchManifest]:
        """The version of every batch the store served at ``as_of`` (default: now)."""
        when = None if as_of is None else parse_time(as_of)
        return select_versions(self.manifests(), when)

    def _paths(self, manifests: list[BatchManifest], quarantine: bool = False) -> list[Path]:
        return [
            self._batches / m.key / m.version / part
            for m in manifests
            for part in (m.quarantine_parts if quarantine else m.parts)
        ]

    def read_batch(self, key: str, version: str | None = None) -> pd.DataFrame:
        """The stored rows of one batch (its newest version, or ``version``)."""
        versions = self.manifests(key)
        if version is not None:
            versions = [m for m in versions if m.version == version]
        if not versions:
            raise KeyError(f"batch {key!r} has no committed version {version or ''}".strip())
        return _read_parquet(self._paths(versions[-1:]))

    def batch_paths(self, key: str, version: str | None = None) -> list[Path]:
        """The Parquet parts of one batch's newest version (or ``version``), for streaming."""
        versions = self.manifests(key)
        if version is not None:
            versions = [m for m in versions if m.version == version]
        if not versions:
            raise KeyError(f"batch {key!r} has no committed version {version or ''}".strip())
        return self._paths(versions[-1:])

    def validate_stored(self, spec: DatasetSpec, key: str, version: str) -> ValidationSummary:
        """Great Expectations' table suite on a batch version as stored (read back).

        One part at a time, so that a large batch is never in memory whole (ids unique
        across parts is enforced while ingesting, by the rows seen so far).
        """
        check = ValidationSummary()
        for part in self.batch_paths(key, version):
            stored = pd.read_parquet(part)
            suite = table_expectations(spec, list(stored.columns))
            check = check.merge(validate(stored, suite, name=f"{spec.name}-stored"))
        return check

    # feature table snapshots -------------------------------------------------------------

    def snapshot(
        self,
        spec: DatasetSpec,
        as_of: str | pd.Timestamp | None = None,
        *,
        created_at: pd.Timestamp | None = None,
        manifests: Sequence[BatchManifest] | None = None,
    ) -> FeatureSnapshot:
        """The feature table as of ``as_of`` (default: now), as the stored parts it reads.

        Every batch's newest version ingested at or before ``as_of``, each part named
        by its path and sha256, and the rows a later reading of the same entity
        superseded (the entity ids are read to find them; no other value is). The
        same rows, in the same order, as :meth:`as_of` gives; read with
        :func:`~mlplatform.resources.feature_tables.read_features`, the same frame as
        ``build_feature_table(as_of(...))``.

        ``manifests``: the store's, already read (default: read them).

        Raises
        ------
        SnapshotChanged
            Naming the part and its batch, when a stored part cannot be read.
        """
        when = parse_time(as_of) if as_of is not None else parse_time(pd.Timestamp.now("UTC"))
        versions = select_versions(self.manifests() if manifests is None else manifests, when)
        located = [
            (m, name, self._batches / m.key / m.version / name)
            for m in versions
            for name in m.parts
        ]

        def read(item: tuple[BatchManifest, str, Path]) -> tuple[pa.Schema, str, np.ndarray]:
            manifest, name, path = item
            try:
                schema = pq.read_schema(path)
                ids = pq.read_table(path, columns=[spec.entity_id]).column(0).to_numpy()
                # versions written before part digests were recorded are hashed now
                digest = manifest.part_sha256.get(name) or file_sha256(path)
            except (pa.ArrowException, OSError) as exc:
                raise SnapshotChanged(
                    f"part {path.relative_to(self.root)} of batch {manifest.key} cannot be "
                    f"read, so it is not the file that was stored: {str(exc)[:200]}"
                ) from exc
            return schema, digest, ids

        with ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="snapshot") as pool:
            found_parts = list(pool.map(read, located))
        schemas = [schema for schema, _, _ in found_parts]
        digests = [digest for _, digest, _ in found_parts]
        ids = [part_ids for _, _, part_ids in found_parts]
        available = set.intersection(*(set(s.names) for s in schemas)) if schemas else set()
        columns = stored_columns(spec, sorted(available))
        dropped = superseded_rows(ids)
        root = Path(self.root)
        parts = tuple(
            SnapshotPart(
                path=path.relative_to(root).as_posix(),
                batch=m.key,
                version=m.version,
                rows=len(found),
                sha256=digest,
                superseded=mask_to_ranges(mask),
            )
            for (m, _, path), digest, found, mask in zip(
                located, digests, ids, dropped, strict=True
            )
        )
        stamp = created_at if created_at is not None else pd.Timestamp.now("UTC")
        return FeatureSnapshot(
            dataset=spec.name,
            as_of=when.isoformat(),
            columns=tuple(columns),
            parts=parts,
            features=derived_fingerprint(spec),
            created_at=parse_time(stamp).isoformat(),
        )

    def labels(
        self, keys: Sequence[str], manifests: Sequence[BatchManifest] | None = None
    ) -> dict[str, str]:
        """What an operator calls each batch of ``keys`` (its file's name, its SQL range).

        ``manifests``: the store's, already read (default: read them).
        """
        wanted = set(keys)
        found = self.manifests() if manifests is None else manifests
        return {m.key: m.label for m in found if m.key in wanted}

    def table(self, snapshot: FeatureSnapshot) -> SnapshotTable:
        """``snapshot`` read from this store's parts (unread until asked)."""
        return SnapshotTable(snapshot, Path(self.root))

    def check_snapshot(
        self,
        spec: DatasetSpec,
        table: SnapshotTable,
        manifests: Sequence[BatchManifest] | None = None,
    ) -> SnapshotCheck:
        """Whether ``snapshot`` may train a model: its parts intact, typed and validated.

        * every part's bytes are those recorded (sha256), read whole;
        * every part's footer holds the table's columns in their declared storage types;
        * every batch version's rows passed Great Expectations' full suite as stored,
          under the suite the schema derives now: the verdict recorded when the version
          was committed (:attr:`BatchManifest.stored_check`) when its suite fingerprint
          is the current one, else GX validates the stored rows now
          (:meth:`validate_stored`: versions stored before a range or column changed,
          or before verdicts were recorded).

        Entity ids are unique by construction: the snapshot keeps one row per entity.
        ``table`` remembers the parts verified (reading it later hashes none again).
        ``manifests``: the store's, already read (default: read them).
        """
        snapshot = table.snapshot
        problems: list[str] = []
        found = self.manifests() if manifests is None else manifests
        by_key = {(m.key, m.version): m for m in found}

        def verify(part: SnapshotPart) -> str | None:
            try:
                table.verify(part)
            except SnapshotChanged as exc:
                return str(exc)
            return None

        with ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="verify") as pool:
            problems += [p for p in pool.map(verify, snapshot.parts) if p is not None]
        for part in snapshot.parts:
            path = table.path_of(part)
            if not path.is_file():
                continue
            problems += _schema_problems(spec, snapshot.columns, pq.read_schema(path), part)
        current = suite_fingerprint(spec)
        summary = ValidationSummary()
        revalidated: list[str] = []
        for key, version in dict.fromkeys((p.batch, p.version) for p in snapshot.parts):
            manifest = by_key.get((key, version))
            if manifest is None:
                problems.append(f"batch {key} version {version}: no committed manifest")
                continue
            recorded = manifest.stored_check
            if manifest.suite == current and recorded:
                summary = summary.merge(_recorded_summary(recorded))
                problems += [
                    f"batch {key} version {version}: {failure}"
                    for failure in recorded.get("failures", [])
                ]
                continue
            revalidated.append(key)
            summary = summary.merge(self.validate_stored(spec, key, version))
        return SnapshotCheck(
            summary=summary,
            problems=problems,
            parts_verified=len(snapshot.parts),
            revalidated=revalidated,
        )

    def as_of(
        self,
        spec: DatasetSpec,
        as_of: str | pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Exactly the rows known at ``as_of`` (default: now), one per entity id.

        For each batch its newest version ingested at or before ``as_of``; for each
        entity the newest of its rows among those versions. Rows come in ingestion
        order, so the same ``as_of`` always gives the same frame, bit for bit.

        ``columns`` limits what is read (and kept in memory) to those stored
        columns, plus the ones choosing the newest row needs (:data:`AS_OF_KEYS`);
        the rows are the same as without it.
        """
        wanted = None
        if columns is not None:
            wanted = list(dict.fromkeys([*columns, spec.entity_id, *AS_OF_KEYS]))
        rows = _read_parquet(self._paths(self.latest(as_of)), wanted)
        return resolve_as_of(rows, spec)

    def read_event_day(self, spec: DatasetSpec, day: str) -> pd.DataFrame:
        """Current rows whose event time falls on the UTC calendar ``day`` (YYYY-MM-DD)."""
        if spec.event_time is None:
            raise ValueError(f"dataset {spec.name!r} declares no event time")
        start = parse_time(day).normalize()
        end = start + pd.Timedelta(days=1)
        chosen = [
            m
            for m in self.latest()
            if m.event_time_min is not None
            and m.event_time_max is not None
            and parse_time(m.event_time_min) < end
            and parse_time(m.event_time_max) >= start
        ]
        rows = resolve_as_of(_read_parquet(self._paths(chosen)), spec)
        if rows.empty:
            return rows
        stamps = rows[spec.event_time]
        return rows.loc[(stamps >= start) & (stamps < end)].reset_index(drop=True)

    def read_quarantine(self, key: str | None = None) -> pd.DataFrame:
        """Quarantined rows of the current version of every batch (or of batch ``key``)."""
        chosen = self.latest() if key is None else self.manifests(key)[-1:]
        frame = _read_parquet(self._paths(chosen, quarantine=True))
        if frame.empty:
            return empty_quarantine().assign(batch_id=pd.Series(dtype="object"))
        return frame[[*QUARANTINE_COLUMNS, "batch_id", "ingested_at"]]
