"""Monitoring state on disk: drift windows, true outcomes, live metrics, alerts.

Layout under ``root``::

    drift/<evaluated-at>__<window>.parquet    one drift report per evaluated window
    outcomes/<sha16>__<name>                  every labels file received, byte for byte
    outcomes/_refused/<sha16>__<name>.parquet rows of a labels file that were refused
    outcomes/_rejected/<sha16>__<name>        a labels file that could not be read (+ .reason.txt)
    live_metrics.parquet                      live recall and precision per window
    alerts/<time>__<run-id>.json              one record per failed run

Every write is atomic (temp file, then rename).

The labels inbox has the landing area's guarantees, by the same code
(:mod:`mlplatform.resources.landing`): nothing in it is followed (a symbolic link is
rejected and moved aside as a link; folders and FIFOs are left alone, unopened), a
name that is not UTF-8 is rejected and kept byte for byte, long names are shortened
to fit, no name can overwrite a reason file, and files are read in chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mlplatform.core.batches import BatchManifest
from mlplatform.core.features import add_derived
from mlplatform.core.ingest import FileRejected
from mlplatform.core.monitoring import LIVE_METRIC_COLUMNS, OutcomeParser, ParsedOutcomes
from mlplatform.core.retry import call_with_retry
from mlplatform.core.schema import DatasetSpec
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.files import TMP_PREFIX, write_bytes_atomic, write_parquet_atomic
from mlplatform.resources.landing import (
    LandedFile,
    file_label,
    inbox_entries,
    move_aside,
    read_landed_file,
)
from mlplatform.resources.predictions import PredictionStore

__all__ = [
    "LABELS_CHUNK_ROWS",
    "MonitoringStore",
    "read_champion_predictions",
    "read_recent_rows",
]

log = logging.getLogger(__name__)

# rows of a labels file read at once: 20,000 rows of even 1 KB each are 20 MB
LABELS_CHUNK_ROWS = 20_000
_PREDICTION_COLUMNS = [
    "entity_id",
    "event_time",
    "failure_probability",
    "predicted_failure",
    "model_version",
    "alias",
    "scored_at",
]


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class MonitoringStore(dg.ConfigurableResource):
    """Reads and writes the monitoring state; ``labels_inbox`` is where outcomes land."""

    root: str
    labels_inbox: str

    @property
    def _root(self) -> Path:
        return Path(self.root)

    # -- drift ----------------------------------------------------------------------------

    def write_drift(
        self, report: pd.DataFrame, *, window: str, evaluated_at: datetime, info: dict[str, Any]
    ) -> Path:
        """Store one window's drift report, with the window's facts on every row."""
        frame = report.assign(
            window=window,
            evaluated_at=pd.Timestamp(evaluated_at).tz_convert(UTC),
            **{k: str(v) for k, v in info.items()},
        )
        name = f"{_stamp(evaluated_at)}__{_safe(window)}.parquet"
        return write_parquet_atomic(frame, self._root / "drift" / name)

    def drift_history(self) -> pd.DataFrame:
        """Every stored drift report, oldest window first."""
        folder = self._root / "drift"
        paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        frames = [pd.read_parquet(p) for p in paths if not p.name.startswith(TMP_PREFIX)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- outcomes -------------------------------------------------------------------------

    @property
    def _outcomes(self) -> Path:
        return self._root / "outcomes"

    def pending_labels(self) -> list[Path]:
        """Labels files waiting in the inbox, by name: regular files and symbolic links.

        Nothing is followed: a link is listed so that it is rejected (moved aside as a
        link, its target never read). Hidden and partial files are skipped; folders,
        FIFOs and other special files are :meth:`left_alone_labels`.
        """
        return inbox_entries(Path(self.labels_inbox)).files

    def left_alone_labels(self) -> list[tuple[str, str]]:
        """Inbox entries that are not files (folders, FIFOs, ...): (name, why); never opened."""
        return [
            (file_label(p.name), why)
            for p, why in inbox_entries(Path(self.labels_inbox)).left_alone
        ]

    def pending_fingerprint(self) -> str:
        """A digest of the inbox's file names and sizes: changes when a file lands."""
        parts = []
        for path in self.pending_labels():
            try:
                parts.append(f"{file_label(path.name)}:{path.lstat().st_size}")
            except FileNotFoundError:  # taken since the listing
                continue
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def read_outcomes(
        self,
        path: Path,
        spec: DatasetSpec,
        *,
        label: str | None = None,
        chunk_rows: int = LABELS_CHUNK_ROWS,
    ) -> ParsedOutcomes:
        """The outcomes of a labels file (CSV or Parquet), read in chunks of ``chunk_rows``.

        The landing area's reader: a link is never followed, a name that is not UTF-8,
        another file type, an empty file, text that is not UTF-8, an unterminated
        quote or a decompression bomb reject the file. Only the id and outcome columns
        are converted. Memory: the reader's chunk, 13 bytes per valid row (21 while the
        chunks are joined at the end) and at most ``MAX_REFUSED_KEPT`` refused rows;
        never the file's text (measured: a 578 MB file of 1 KB lines grows the process
        by 167 MB, mostly the reader's buffers; one of 193 MB by 172 MB).

        Raises
        ------
        FileRejected
            Naming the file (``label``, default its name) and, where one is at fault,
            the column: unreadable, no data rows, or the id or outcome column missing,
            given twice or of another kind.
        """
        label = label if label is not None else file_label(path.name)
        parser = OutcomeParser(spec, label)
        for chunk in read_landed_file(path, label, chunk_rows):
            for row in chunk.rejected:
                parser.add_unparsed(row.row_number, row.reason, row.text)
            parser.add(chunk.table, chunk.row_numbers)
        parsed = parser.result()
        if parsed.rows == 0:
            raise FileRejected(label, "no data rows (a header only)")
        return parsed

    def receive_labels(self, path: Path) -> Path:
        """Move a read labels file from the inbox into the kept outcomes (named by hash)."""
        landed = LandedFile.at(path)
        target = self._outcomes / landed.stored_name
        if target.is_file() and not target.is_symlink():  # the same content again: kept once
            path.unlink()
            return target
        return move_aside(landed, self._outcomes)

    def reject_labels(self, path: Path, reason: str) -> Path:
        """Move a labels file that cannot be read aside (a link as a link), with the reason."""
        return move_aside(LandedFile.at(path), self._outcomes / "_rejected", reason)

    def write_refused(self, kept: Path, refused: pd.DataFrame) -> Path:
        """Store the rows of a labels file that were refused, with their reasons."""
        target = self._outcomes / "_refused" / f"{kept.name}.parquet"
        return write_parquet_atomic(refused, target)

    def received_labels(self) -> list[Path]:
        """Every labels file received so far, oldest first."""
        folder = self._outcomes
        if not folder.is_dir():
            return []
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    # -- live metrics ---------------------------------------------------------------------

    def write_live_metrics(self, metrics: pd.DataFrame) -> Path:
        """Replace the live metrics table (recomputed from every outcome received)."""
        return write_parquet_atomic(metrics, self._root / "live_metrics.parquet")

    def live_metrics(self) -> pd.DataFrame:
        """Live recall and precision per window (empty before any outcome arrived)."""
        path = self._root / "live_metrics.parquet"
        if not path.exists():
            return pd.DataFrame(columns=LIVE_METRIC_COLUMNS)
        return pd.read_parquet(path)

    # -- alerts ---------------------------------------------------------------------------

    def write_alert(self, record: dict[str, Any]) -> Path:
        """Store one alert record as JSON."""
        moment = datetime.now(UTC)
        name = f"{_stamp(moment)}__{_safe(str(record.get('run_id', 'run')))}.json"
        body = json.dumps({"recorded_at": moment.isoformat(), **record}, indent=2, default=str)
        return write_bytes_atomic(body.encode(), self._root / "alerts" / name)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert record, oldest first."""
        folder = self._root / "alerts"
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return [json.loads(p.read_text()) for p in paths if not p.name.startswith(TMP_PREFIX)]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:100]


def post_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = 4,
    base_delay: float = 1.0,
    timeout: float = 10.0,
) -> int:
    """POST ``payload`` as JSON to ``url``, retried with backoff; returns the HTTP status.

    Connection errors, timeouts and 5xx answers are retried; a 4xx answer is not
    (the request itself is wrong).
    """
    body = json.dumps(payload, default=str).encode()

    def send() -> int:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)

    def transient(exc: BaseException) -> bool:
        if isinstance(exc, urllib.error.HTTPError):
            return exc.code >= 500
        return isinstance(exc, OSError)

    return call_with_retry(
        send,
        what=f"alert webhook {url}",
        attempts=attempts,
        base_delay=base_delay,
        transient=transient,
        log=log,
    )


def read_recent_rows(
    store: FeatureStore,
    manifests: Sequence[BatchManifest],
    columns: Sequence[str],
    spec: DatasetSpec,
    *,
    max_rows: int,
    seed: int = 0,
) -> pd.DataFrame:
    """The stored rows of ``manifests``' batches, only ``columns``, at most ``max_rows``.

    Reads file by file with column projection; when the batches hold more than
    ``max_rows`` rows, a uniform random sample of that size is kept (a drift test
    needs a sample, not every row), so memory is bounded whatever the batch sizes.
    Derived features among ``columns`` are computed from the raw model features of
    the rows read, as training and scoring compute them.
    """
    paths = [p for m in manifests for p in store.batch_paths(m.key, m.version)]
    if not paths:
        return pd.DataFrame(columns=list(columns))
    derived = {d.name for d in spec.derived}
    wanted = list(columns)
    if derived & set(columns):
        raw = [f for f in spec.model_features if f not in derived]
        columns = list(dict.fromkeys([*(c for c in columns if c not in derived), *raw]))
    counts = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    total = sum(counts)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(total, size=max_rows, replace=False)) if total > max_rows else None
    tables = []
    offset = 0
    for path, n in zip(paths, counts, strict=True):
        present = [c for c in columns if c in pq.ParquetFile(path).schema_arrow.names]
        if keep is None:
            tables.append(pq.read_table(path, columns=present))
        else:
            local = keep[(keep >= offset) & (keep < offset + n)] - offset
            if local.size:
                tables.append(pq.read_table(path, columns=present).take(pa.array(local)))
        offset += n
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    if derived & set(wanted):
        frame = add_derived(frame, spec)
    return frame[[c for c in wanted if c in frame.columns]]


def read_champion_predictions(
    store: PredictionStore, entity_ids: Sequence[int], alias: str
) -> pd.DataFrame:
    """Predictions the champion (rows tagged ``alias``) made for ``entity_ids``.

    Every published prediction part is scanned with a filter, reading only the
    columns the join needs.
    """
    files = store.files()
    if not files or not len(entity_ids):
        return pd.DataFrame(columns=_PREDICTION_COLUMNS)
    dataset = ds.dataset([str(p) for p in files], format="parquet")
    wanted = pa.array(np.asarray(entity_ids, dtype="int64"))
    condition = (pc.field("alias") == alias) & pc.field("entity_id").isin(wanted)
    table = dataset.to_table(columns=_PREDICTION_COLUMNS, filter=condition)
    return table.to_pandas()
