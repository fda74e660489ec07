"""The child process of ``test_write_kills.py``: one real write, SIGKILLed inside it.

``python -m mlplatform_tests.write_kill_child WRITE STATE MARKER``

``WRITE`` is one of :data:`WRITES`:

- ``ingest``: ingest the batches waiting in STATE's landing folder (the
  ``raw_observations`` asset), stalled inside the feature store's new batch version;
- ``feature_table``: materialize the ``feature_table`` asset (the IO manager's atomic
  write of the snapshot file ``feature_store/feature_table.snapshot.json``), stalled
  inside its temporary file;
- ``predictions``: score every stored batch with the champion (``batch_predictions``),
  stalled inside a batch's temporary prediction folder.

The stall: the first Parquet row group written under the write's folder into a
temporary path (``.tmp-`` in its path) is written and flushed (for the snapshot: the
first half of its bytes), then the child writes ``MARKER`` (JSON: the half-written
file, its size, the pid) and sleeps until the parent's SIGKILL. The file is cut
short (a Parquet file without its footer, JSON without its end), never renamed.
Nothing else is changed: the write is the platform's own code.
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


def _in_temporary(folder: Path, where: Path) -> bool:
    return folder in where.parents and any(
        part.startswith(".tmp-") for part in where.relative_to(folder).parts
    )


def _stall(where: Path, marker: Path) -> None:
    facts = {"file": str(where), "bytes": where.stat().st_size, "pid": os.getpid()}
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(json.dumps(facts))
    os.replace(tmp, marker)
    time.sleep(STALL_SECONDS)
    sys.exit(f"not killed within {STALL_SECONDS} s")


def _install_json_stall(folder: Path, marker: Path) -> None:
    """Stall in the first temporary JSON file written under ``folder``, half written."""
    original = Path.write_bytes

    def stalling(self: Path, data: Any) -> int:
        if self.suffix == ".json" and _in_temporary(folder, self):
            with open(self, "wb") as fh:
                fh.write(bytes(data)[: len(data) // 2])
                fh.flush()
            _stall(self, marker)
        return original(self, data)

    Path.write_bytes = stalling  # type: ignore[method-assign]


def _install_stall(folder: Path, marker: Path) -> None:
    import pyarrow.parquet as pq

    original = pq.ParquetWriter.write_table

    def stalling(self: Any, table: Any, row_group_size: Any = None) -> None:
        original(self, table, row_group_size)
        where = Path(str(self.where))
        if _in_temporary(folder, where):
            if self.file_handle is not None:
                self.file_handle.flush()
            _stall(where, marker)

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
    if args.write == "feature_table":
        _install_json_stall(folder, Path(args.marker))
    else:
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
