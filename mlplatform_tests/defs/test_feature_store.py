"""The feature store end to end: both sources into one table, point-in-time rebuilds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from mlplatform.cli import main as cli_main
from mlplatform.core.batches import BatchManifest
from mlplatform.core.digest import frame_digest
from mlplatform.core.features import AS_OF_ATTR, DIGEST_ATTR, build_feature_table
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.split import SPLIT_COLUMN, stratified_split
from mlplatform.defs.common import DATASET
from mlplatform.defs.resources import SQL_EVENT_TIME, SQL_TABLE, SQL_WATERMARK
from mlplatform.defs.training import training_columns
from mlplatform.paths import HOME_ENV, StatePaths
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.ingestion import discover, ingest_batch
from mlplatform.resources.landing import LandingArea
from mlplatform.resources.mlflow_registry import DATASET_DIGEST_TAG, MlflowRegistry
from mlplatform.resources.sample_data import write_sql_readings
from mlplatform_tests.defs.helpers import LENIENT, land_sample, materialize_all


def _landed_files(state: StatePaths) -> list[Path]:
    """Files waiting in the landing folder (its labels inbox is a folder, not a landed file)."""
    return [p for p in state.landing.iterdir() if p.is_file()]


def _sql(resources: dict[str, Any], frame: pd.DataFrame, start: datetime | None = None) -> None:
    write_sql_readings(
        resources["sql_source"].url,
        DATASET,
        frame,
        table=SQL_TABLE,
        watermark=SQL_WATERMARK,
        event_time=SQL_EVENT_TIME,
        start=start,
    )


def test_files_and_sql_rows_land_in_one_feature_table(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 1500, seed=21)
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    _sql(resources, generate_ai4i(500, seed=22, start_udi=1501), start=start)
    result = materialize_all(resources, LENIENT)
    assert result.success
    assert len(result.ingest) == 2  # one run per batch: the file and the SQL pull

    table = pd.read_parquet(state.feature_store / "feature_table.parquet")
    assert len(table) == 2000
    assert table[DATASET.entity_id].is_unique
    by_source = table.groupby(table["batch_id"].str.split("-").str[0]).size().to_dict()
    assert by_source == {"file": 1500, "sql": 500}
    # SQL rows keep their reading time as event time; file rows get their ingestion time
    sql_rows = table[table["batch_id"].str.startswith("sql-machines-")]
    assert sql_rows["event_time"].min() == pd.Timestamp(start)
    assert sql_rows["event_time"].max() == pd.Timestamp(start + timedelta(minutes=499))
    file_rows = table[table["batch_id"].str.startswith("file-")]
    assert (file_rows["event_time"] == file_rows["ingested_at"]).all()

    # incremental: new SQL rows are one new batch holding only them
    _sql(resources, generate_ai4i(40, seed=23, start_udi=2001))
    again = materialize_all(resources, LENIENT, selection=["raw_observations"])
    assert again.success and len(again.ingest) == 1
    store: FeatureStore = resources["feature_store"]
    sql_batches = [m for m in store.latest() if m.source == "machines"]
    assert [m.rows_landed for m in sql_batches] == [500, 40]
    assert len(store.as_of(DATASET)) == 2040
    # nothing new: no batch, no run
    assert materialize_all(resources, LENIENT, selection=["raw_observations"]).ingest == []


def test_a_day_of_events_can_be_read_on_its_own(resources: dict[str, Any]) -> None:
    day = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    _sql(resources, generate_ai4i(180, seed=24), start=day)  # 23:00 to 01:59 next day
    assert materialize_all(resources, selection=["raw_observations"]).success
    store: FeatureStore = resources["feature_store"]
    first = store.read_event_day(DATASET, "2026-03-02")
    second = store.read_event_day(DATASET, "2026-03-03")
    assert len(first) == 60 and len(second) == 120
    assert first["event_time"].dt.strftime("%Y-%m-%d").eq("2026-03-02").all()


def _run_of(registry: MlflowRegistry, version: str) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(registry.tracking_uri, registry.tracking_uri)
    model_version = client.get_model_version(registry.model_name, version)
    assert model_version.run_id is not None
    return client.get_run(model_version.run_id)


@pytest.mark.slow
def test_a_past_models_training_set_is_rebuilt_bit_for_bit(
    resources: dict[str, Any], state: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry: MlflowRegistry = resources["mlflow_registry"]
    store: FeatureStore = resources["feature_store"]
    land_sample(resources, 2500, seed=31)
    assert materialize_all(resources, LENIENT).success
    v1 = registry.champion()
    assert v1 is not None
    run1 = _run_of(registry, v1.version)
    as_of_1 = run1.data.params[AS_OF_ATTR]
    table_digest_1 = run1.data.params[DIGEST_ATTR]
    train_digest_1 = run1.data.tags[DATASET_DIGEST_TAG]

    # later: new rows, and corrected readings of 50 entities already stored
    later = generate_ai4i(1000, seed=32, start_udi=2501)
    corrections = generate_ai4i(50, seed=33, start_udi=1)
    corrections["Torque [Nm]"] = 42.0
    landing = resources["landing"]
    landing.drop(later, "later.csv")
    landing.drop(corrections, "corrections.csv")
    assert materialize_all(resources, LENIENT).success
    now = store.as_of(DATASET)
    assert len(now) == 3500
    corrected = now[now["udi"] <= 50]
    assert len(corrected) == 50 and (corrected["torque_nm"] == 42.0).all()

    # the store as of model 1's training time gives the same table and training rows
    past = build_feature_table(store.as_of(DATASET, as_of_1), DATASET)
    assert len(past) == 2500
    assert frame_digest(past) == table_digest_1
    # training reads the table's training columns (no lineage), then splits them
    split, _ = stratified_split(
        past[training_columns(DATASET)], DATASET.target, test_size=0.3, seed=42
    )
    train = split[split[SPLIT_COLUMN] == "train"]
    # the pipeline's frames went through Parquet between steps; so does the rebuild
    path = state.root / "rebuilt_train.parquet"
    train.to_parquet(path, index=False)
    assert frame_digest(pd.read_parquet(path)) == train_digest_1

    # the same through the command line
    monkeypatch.setenv(HOME_ENV, str(state.root))
    out = state.root / "as_of.parquet"
    assert cli_main(["features", "--as-of", as_of_1, "--out", str(out)]) == 0
    assert frame_digest(pd.read_parquet(out)) == table_digest_1


def test_feature_table_as_of_config_rebuilds_the_past(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 800, seed=41)
    assert materialize_all(resources, selection=["raw_observations"]).success
    between = datetime.now(UTC)
    land_sample(resources, 300, seed=42, start_udi=801)
    assert materialize_all(resources, selection=["raw_observations"]).success
    result = materialize_all(
        resources,
        {"ops": {"feature_table": {"config": {"as_of": between.isoformat()}}}},
        selection=["feature_table"],
    )
    assert result.success
    table = pd.read_parquet(state.feature_store / "feature_table.parquet")
    assert len(table) == 800
    assert table.attrs[AS_OF_ATTR] == pd.Timestamp(between).as_unit("us").isoformat()
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["rows"].value == 800
    assert metadata["dataset_digest"].value == table.attrs[DIGEST_ATTR]


def test_a_crash_mid_write_leaves_the_previous_state_readable(
    resources: dict[str, Any], state: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    land_sample(resources, 400, seed=51)
    assert materialize_all(resources, selection=["raw_observations"]).success
    store: FeatureStore = resources["feature_store"]
    before = store.as_of(DATASET)

    import mlplatform.resources.feature_store as fs

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full (simulated)")

    land_sample(resources, 300, seed=52, start_udi=401)
    monkeypatch.setattr(fs.BatchWriter, "commit", crash)
    result = materialize_all(resources, selection=["raw_observations"])
    assert not result.success
    monkeypatch.undo()
    pd.testing.assert_frame_equal(store.as_of(DATASET), before)
    leftovers = [p for p in Path(store.root).rglob(".tmp-*")]
    assert leftovers == []
    # the file was not lost: still in landing, and the next run retries its batch
    assert len(_landed_files(state)) == 1
    retried = materialize_all(resources, selection=["raw_observations"])
    assert retried.success and len(retried.ingest) == 1
    assert len(store.as_of(DATASET)) == 700
    assert not _landed_files(state)


# --- the store's own mechanics, without Dagster ---------------------------------------------


def _landing_and_store(root: Path) -> tuple[LandingArea, FeatureStore]:
    landing = LandingArea(
        landing_dir=str(root / "landing"),
        archive_dir=str(root / "archive"),
        rejected_dir=str(root / "rejected"),
    )
    (root / "landing").mkdir(parents=True)
    return landing, FeatureStore(root=str(root / "store"))


def _ingest(landing: LandingArea, store: FeatureStore, chunk_rows: int) -> BatchManifest:
    [plan] = discover([landing], store).new
    return ingest_batch(plan, landing, store, DATASET, chunk_rows=chunk_rows).manifest


def test_as_of_with_columns_reads_only_those_and_resolves_the_same_rows(tmp_path: Path) -> None:
    landing, store = _landing_and_store(tmp_path)
    generate_ai4i(50, seed=41).to_csv(Path(landing.landing_dir) / "first.csv", index=False)
    _ingest(landing, store, chunk_rows=1_000)
    # a later file corrects ids 31..50 and adds 51..70
    later = generate_ai4i(40, seed=42, start_udi=31)
    later.to_csv(Path(landing.landing_dir) / "second.csv", index=False)
    _ingest(landing, store, chunk_rows=1_000)

    everything = store.as_of(DATASET)
    wanted = ["udi", "torque_nm", "type", "source_file"]
    some = store.as_of(DATASET, columns=wanted)

    assert list(some.columns) == [*wanted, "ingested_at", "batch_id", "source_row"]
    pd.testing.assert_frame_equal(some, everything[list(some.columns)])
    assert len(some) == 70 and (some.loc[some["udi"] > 30, "source_file"] == "second.csv").all()
