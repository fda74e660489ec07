"""The child process of ``test_write_kills.py``: one real write, SIGKILLed inside it.

``python -m mlplatform_tests.write_kill_child WRITE STATE MARKER``

``WRITE`` is one of :data:`WRITES`:

- ``ingest``: ingest the batches waiting in STATE's landing folder (the
  ``raw_observations`` asset), stalled inside the feature store's new batch version;
- ``feature_table``: materialize the ``feature_table`` asset (the IO manager's atomic
  write of ``feature_store/feature_table.parquet``), stalled inside its temporary file;
- ``predictions``: score every stored batch with the champion (``batch_predictions``),
  stalled inside a batch's temporary prediction folder.

The stall: the first Parquet row group written under the write's folder into a
temporary path (``.tmp-`` in its path) is written and flushed, then the child writes
``MARKER`` (JSON: the half-written file, its size, the pid) and sleeps until the
parent's SIGKILL. The file has no footer: it is a half-written Parquet file, never
renamed. Nothing else is changed: the write is the platform's own code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

WRITES = ("ingest", "feature_table", "predictions")
STALL_SECONDS = 600


def _install_stall(folder: Path, marker: Path) -> None:
    import pyarrow.parquet as pq

    original = pq.ParquetWriter.write_table

    def stalling(self: Any, table: Any, row_group_size: Any = None) -> None:
        original(self, table, row_group_size)
        where = Path(str(self.where))
        if folder in where.parents and any(
            part.startswith(".tmp-") for part in where.relative_to(folder).parts
        ):
            if self.file_handle is not None:
                self.file_handle.flush()
            facts = {"file": str(where), "bytes": where.stat().st_size, "pid": os.getpid()}
            tmp = marker.with_name(f".{marker.name}.tmp")
            tmp.write_text(json.dumps(facts))
            os.replace(tmp, marker)
            time.sleep(STALL_SECONDS)
            sys.exit(f"not killed within {STALL_SECONDS} s")

    pq.ParquetWriter.write_table = stalling  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="write_kill_child")
    parser.add_argument("write", choices=WRITES)
    parser.add_argument("state")
    parser.add_argument("marker")
    args = parser.parse_args(argv)

    import dagster as dg

    from mlplatform.defs.resources import build_resources
    from mlplatform.paths import StatePaths
    from mlplatform_tests.defs.helpers import materialize_all

    state = StatePaths(Path(args.state).resolve())
    folder = {
        "ingest": state.feature_store / "batches",
        "feature_table": state.feature_store,
        "predictions": state.predictions,
    }[args.write]
    _install_stall(folder, Path(args.marker))
    resources = build_resources(state)
    instance = dg.DagsterInstance.ephemeral()
    selection = {
        "ingest": ["raw_observations"],
        "feature_table": ["feature_table"],
        "predictions": ["batch_predictions"],
    }[args.write]
    result = materialize_all(resources, selection=selection, instance=instance)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
