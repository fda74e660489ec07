"""What ``mlplatform ingest`` says when the disk refuses our write, not the input.

The fault harness of ``test_registry_faults.py``: a child process runs the command's
ingestion (``mlplatform.cli._ingest``: discovery, one real Dagster run per batch, the
report it prints) while the feature store refuses writes: as ``nobody`` (as root) or
into a write-protected folder (as any other user), permission denied; or under
``RLIMIT_FSIZE``, EFBIG, as on a full disk. Its Dagster instance is in memory, so
that the only files it writes are the platform's own.

A refused write is not a bad input: the command must say FAILED with the error
naming the path, never "REJECTED ... moved to rejected/", leave the file in the
landing folder and exit 1; once writes succeed again, the same file is ingested.
"""

from __future__ import annotations

import sys
import textwrap
from errno import EACCES, EFBIG
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlplatform.cli import EXIT_RUN_FAILED, _ingest
from mlplatform.definitions import build_definitions
from mlplatform.defs.resources import build_resources
from mlplatform.paths import StatePaths
from mlplatform.resources.files import TMP_PREFIX
from mlplatform.resources.ingestion import discover
from mlplatform_tests.defs.helpers import land_sample
from mlplatform_tests.test_registry_faults import fault_root, run_refused

# ~55 s (child processes): the GitHub workflow's heavy step runs it; .ci/run leaves it out
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

__all__ = ["fault_root"]  # the harness's fixture: where nobody can reach the state

_CHILD = textwrap.dedent(
    """
    import contextlib, io, json, signal, sys
    from pathlib import Path
    import dagster as dg
    from mlplatform.cli import _ingest, _ingest_exit_code
    from mlplatform.definitions import build_definitions
    from mlplatform.paths import StatePaths
    from mlplatform_tests.registry_faults_child import _file_size_limit

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
    state, out = StatePaths(Path(sys.argv[1])), Path(sys.argv[2])
    limit = int(sys.argv[4]) if sys.argv[3:4] == ["--file-size-limit"] else None
    defs = build_definitions(state)
    printed = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance, contextlib.redirect_stdout(printed):
        with _file_size_limit(limit):
            _, rejected, failed = _ingest(state, defs, instance)
    code = _ingest_exit_code(rejected, failed)
    out.write_text(json.dumps({"stdout": printed.getvalue(), "exit_code": code}))
    """
)


def _ingest_refused(state: StatePaths, fault: str, refused: Path) -> dict[str, Any]:
    """``mlplatform ingest``'s ingestion in a child whose writes into ``refused`` fail."""
    home = state.root.parent / f"home-{fault}"
    home.mkdir()
    argv = [sys.executable, "-c", _CHILD, str(state.root), str(home / "report.json")]
    return run_refused(
        argv, state, home, fault=fault, refused=[refused], MLPLATFORM_HOME=str(state.root)
    )


def test_a_refused_write_is_reported_as_failed_and_the_file_waits(
    fault_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = StatePaths(fault_root / "state")
    state.ensure()
    resources = build_resources(state)
    name = land_sample(resources, 500, seed=5)
    landed = (state.landing / name).read_bytes()
    [plan] = discover(resources["sources"], resources["feature_store"]).new
    batches = state.feature_store / "batches"
    batches.mkdir(parents=True, exist_ok=True)

    for fault, errno, words in (
        ("permission_denied", EACCES, "Permission denied"),
        ("disk_full", EFBIG, "File too large"),
    ):
        report = _ingest_refused(state, fault, batches)

        lines = report["stdout"].splitlines()
        [failed] = [line for line in lines if line.startswith("FAILED ")]
        assert failed.startswith(f"FAILED {name} ({plan.key}): "), failed
        assert f"[Errno {errno}]" in failed and words in failed, failed
        assert str(batches) in failed, failed  # the error names the path refused
        assert failed.endswith("; the file stays in landing and will be retried"), failed
        assert not [line for line in lines if line.startswith("REJECTED")], lines
        assert "rejected" not in report["stdout"].lower(), lines
        assert report["exit_code"] == EXIT_RUN_FAILED
        # and so it is: the file waits in the landing folder, byte for byte; nothing was
        # moved to the rejected area, nothing stored, nothing half-written left behind
        assert (state.landing / name).read_bytes() == landed, fault
        assert list(state.rejected.iterdir()) == [], fault
        assert resources["feature_store"].manifests() == [], fault
        assert not list(state.root.rglob(f"{TMP_PREFIX}*")), fault

    # once writes succeed, the next ingestion retries the same file and stores it
    with dg.DagsterInstance.ephemeral() as instance:
        ingested, rejected, failed = _ingest(state, build_definitions(state), instance)
    printed = capsys.readouterr().out
    assert (ingested, rejected, failed) == ([plan.key], [], []), printed
    assert f"retrying {name} ({plan.key}): planned earlier, never stored" in printed
    assert f"ingested {name} ({plan.key}): 500 landed, 500 stored, 0 quarantined" in printed
    assert not (state.landing / name).exists()
    assert [m.key for m in resources["feature_store"].manifests()] == [plan.key]
