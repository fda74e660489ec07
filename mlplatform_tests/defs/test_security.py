"""Security defaults: a configured password never leaks; no landed pickle is ever loaded.

The password: the SQL source is configured the way a deployment does it, with a
password in ``MLPLATFORM_SQL_URL``, against a real PostgreSQL database on this machine
(trust authentication accepts any password). A whole cycle runs (the file and the SQL
pull ingested, training, gate, registration, promotion, scoring), then an ingestion run
fails because the server is gone. Every event of every run, serialized with its
metadata, every captured log line and every file left in the state folder are
searched for the password.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._serdes import serialize_value

from mlplatform.core.generator import generate_ai4i
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import register_new_batches
from mlplatform.defs.resources import (
    SQL_EVENT_TIME,
    SQL_TABLE,
    SQL_URL_ENV,
    SQL_WATERMARK,
    build_resources,
)
from mlplatform.paths import StatePaths
from mlplatform.resources.sample_data import write_sql_readings
from mlplatform_tests.defs.helpers import (
    ASSETS,
    INGESTION_ASSET,
    LENIENT,
    land_sample,
    materialize_all,
)
from mlplatform_tests.pg import fresh_database

pytestmark = pytest.mark.slow


def test_a_configured_password_never_reaches_logs_metadata_or_files(
    state: StatePaths, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    with fresh_database() as url:
        secret_url = sa.make_url(url).set(password=password).render_as_string(hide_password=False)
        assert password in secret_url
        monkeypatch.setenv(SQL_URL_ENV, secret_url)
        resources = build_resources(state)
        assert resources["sql_source"].url == secret_url
        write_sql_readings(
            secret_url,
            DATASET,
            generate_ai4i(600, seed=5, start_udi=5001),
            table=SQL_TABLE,
            watermark=SQL_WATERMARK,
            event_time=SQL_EVENT_TIME,
        )
        land_sample(resources, 1500, seed=6)
        instance = dg.DagsterInstance.ephemeral()
        with caplog.at_level("DEBUG"):
            result = materialize_all(resources, LENIENT, instance=instance)
        assert result.success
        assert len(result.ingest) == 2  # the landed file and the SQL pull

        # the server goes away after new rows were planned: the ingestion run fails, and
        # its error names the server, never the password
        write_sql_readings(
            secret_url,
            DATASET,
            generate_ai4i(100, seed=7, start_udi=9001),
            table=SQL_TABLE,
            watermark=SQL_WATERMARK,
            event_time=SQL_EVENT_TIME,
        )
        [plan] = register_new_batches(
            instance, resources["sources"], resources["feature_store"]
        ).to_ingest
        gone = sa.make_url(secret_url).set(host="127.0.0.1", port=1)
        monkeypatch.setenv(SQL_URL_ENV, gone.render_as_string(hide_password=False))
        with caplog.at_level("DEBUG"):
            failed = dg.materialize(
                ASSETS,
                instance=instance,
                resources=build_resources(state),
                partition_key=plan.key,
                selection=[INGESTION_ASSET],
                raise_on_error=False,
            )
        assert not failed.success

    runs = instance.get_runs()
    assert len(runs) >= 4  # two ingestions, training, scoring
    events = [serialize_value(r) for run in runs for r in instance.all_logs(run.run_id)]
    assert any("sql-" in e for e in events)  # the SQL batch is in the logs, by its key
    assert any("127.0.0.1:1" in e for e in events)  # the failed pull names the server
    leaked = [e[:200] for e in events if password in e]
    assert not leaked, f"the password is in {len(leaked)} run events: {leaked[:3]}"
    assert password not in caplog.text

    files = [p for p in Path(state.root).rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    holding = [str(p) for p in files if password.encode() in p.read_bytes()]
    assert not holding, f"the password is stored in {holding}"


class _Booby:
    """Unpickling this creates a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.marker), "unpickled"))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "features.parquet"])
def test_a_pickle_in_the_landing_area_is_never_loaded(
    state: StatePaths, tmp_path: Path, name: str
) -> None:
    import pickle

    marker = tmp_path / "marker.txt"
    payload = pickle.dumps(_Booby(marker))
    (state.landing / name).write_bytes(payload)
    resources = build_resources(state)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_all(resources, LENIENT, selection=[INGESTION_ASSET], instance=instance)
    assert not marker.exists(), "a pickle from the landing area was unpickled"
    # the file is rejected with its reason, byte for byte, and nothing was stored
    [rejected] = [p for p in state.rejected.iterdir() if p.name.endswith(name)]
    assert rejected.read_bytes() == payload
    reason = rejected.with_name(rejected.name + ".reason.txt").read_text()
    expected = "unreadable parquet file" if name.endswith(".parquet") else "unsupported file type"
    assert reason.startswith(f"{name}: {expected}"), reason
    assert resources["feature_store"].latest() == []
    assert result.ingest == [] or not any(r.success for r in result.ingest)
