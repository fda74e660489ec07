"""The feature store end to end: both sources into one table, point-in-time rebuilds."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlplatform.cli import main as cli_main
from mlplatform.core.batches import BatchManifest
from mlplatform.core.digest import frame_digest
from mlplatform.core.features import (
    AS_OF_ATTR,
    DIGEST_ATTR,
    build_feature_table,
    table_columns,
)
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.schema import ColumnSpec, DerivedFeature, Role
from mlplatform.core.snapshots import FeatureSnapshot
from mlplatform.core.split import SPLIT_COLUMN, stratified_split
from mlplatform.defs.common import DATASET
from mlplatform.defs.resources import SQL_EVENT_TIME, SQL_TABLE, SQL_WATERMARK
from mlplatform.defs.training import training_columns
from mlplatform.paths import HOME_ENV, StatePaths
from mlplatform.resources import feature_tables
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.feature_tables import SnapshotChanged, read_features
from mlplatform.resources.files import file_sha256
from mlplatform.resources.ingestion import discover, ingest_batch
from mlplatform.resources.landing import LandingArea
from mlplatform.resources.mlflow_registry import DATASET_DIGEST_TAG, MlflowRegistry
from mlplatform.resources.sample_data import write_sql_readings
from mlplatform_tests.defs.helpers import (
    LENIENT,
    land_sample,
    materialize_all,
    read_feature_table,
)


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

    table = read_feature_table(state)
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
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry: MlflowRegistry = resources["mlflow_registry"]
    store: FeatureStore = resources["feature_store"]
    land_sample(resources, 2500, seed=31)
    assert materialize_all(resources, LENIENT).success
    table_1 = read_feature_table(state)  # the table model 1 was trained from
    v1 = registry.champion()
    assert v1 is not None
    run1 = _run_of(registry, v1.version)
    as_of_1 = run1.data.params[AS_OF_ATTR]
    table_digest_1 = run1.data.params[DIGEST_ATTR]
    train_digest_1 = run1.data.tags[DATASET_DIGEST_TAG]
    assert table_1.attrs == {AS_OF_ATTR: as_of_1, DIGEST_ATTR: table_digest_1}

    # later: new rows, and corrected readings of 50 entities already stored
    later = generate_ai4i(1000, seed=32, start_udi=2501)
    corrections = generate_ai4i(50, seed=33, start_udi=1)
    corrections["Torque [Nm]"] = 42.0
    landing = resources["landing"]
    landing.drop(later, "later.csv")
    landing.drop(corrections, "corrections.csv")
    assert materialize_all(resources, LENIENT).success
    now = read_feature_table(state)
    assert len(now) == 3500 and now.attrs[DIGEST_ATTR] != table_digest_1
    corrected = now[now["udi"] <= 50]
    assert len(corrected) == 50 and (corrected["torque_nm"] == 42.0).all()

    # the store as of model 1's training time gives the same table and training rows
    past_snapshot = store.snapshot(DATASET, as_of_1)
    assert past_snapshot.digest == table_digest_1
    past_table = store.table(past_snapshot)
    past = read_features(past_table, DATASET, table_columns(DATASET, past_table.columns))
    pd.testing.assert_frame_equal(past, table_1)
    assert past.attrs == table_1.attrs
    # and the same rows as the frame route: stored rows resolved as of then, features
    # computed from them
    pd.testing.assert_frame_equal(
        past, build_feature_table(store.as_of(DATASET, as_of_1), DATASET), check_like=False
    )
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
    capsys.readouterr()
    assert cli_main(["features", "--as-of", as_of_1, "--out", str(out)]) == 0
    assert f"dataset digest: {table_digest_1}" in capsys.readouterr().out
    written = pd.read_parquet(out)
    written.attrs = {}
    table_1.attrs = {}
    pd.testing.assert_frame_equal(written, table_1)


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
    table = read_feature_table(state)
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


def _two_batches(tmp_path: Path) -> tuple[LandingArea, FeatureStore]:
    """50 rows, then a file correcting ids 31..50 and adding 51..70."""
    landing, store = _landing_and_store(tmp_path)
    generate_ai4i(50, seed=41).to_csv(Path(landing.landing_dir) / "first.csv", index=False)
    _ingest(landing, store, chunk_rows=1_000)
    generate_ai4i(40, seed=42, start_udi=31).to_csv(
        Path(landing.landing_dir) / "second.csv", index=False
    )
    _ingest(landing, store, chunk_rows=1_000)
    return landing, store


def test_a_snapshot_reads_the_rows_the_frame_route_builds(tmp_path: Path) -> None:
    _, store = _two_batches(tmp_path)
    snapshot = store.snapshot(DATASET)
    table = store.table(snapshot)
    expected = build_feature_table(store.as_of(DATASET), DATASET)
    assert snapshot.num_rows == table.num_rows == 70
    # the first file's rows of ids 31..50 are superseded by the second file's
    assert [p.superseded for p in snapshot.parts] == [((30, 50),), ()]
    derived = {d.name for d in DATASET.derived}
    assert table.columns == [c for c in expected.columns if c not in derived]
    whole = read_features(table, DATASET, list(expected.columns))
    pd.testing.assert_frame_equal(whole, expected)
    assert whole.attrs == {AS_OF_ATTR: snapshot.as_of, DIGEST_ATTR: snapshot.digest}
    # some columns of some rows, across the superseded stretch and both parts
    rows = np.array([0, 29, 30, 31, 45, 69])
    columns = ["torque_nm", "udi", "source_file"]
    pd.testing.assert_frame_equal(
        table.read(columns, rows), expected[columns].take(rows).reset_index(drop=True)
    )
    assert np.array_equal(table.read_column("udi"), expected["udi"].to_numpy())
    # nothing new stored: the same content, the same digest
    assert store.snapshot(DATASET).digest == snapshot.digest
    check = store.check_snapshot(DATASET, store.table(snapshot))
    assert check.success and check.parts_verified == 2 and check.revalidated == []
    assert check.summary.rows_checked == 90  # every stored row of both versions


def _part_path(store: FeatureStore, snapshot: FeatureSnapshot, index: int) -> Path:
    return Path(store.root) / snapshot.parts[index].path


def test_a_changed_part_fails_the_check_and_is_never_read(tmp_path: Path) -> None:
    _, store = _two_batches(tmp_path)
    snapshot = store.snapshot(DATASET)
    path = _part_path(store, snapshot, 1)
    stored = pd.read_parquet(path)
    stored.loc[0, "torque_nm"] = 77.0  # a value changed behind the store's back
    stored.to_parquet(path, index=False)

    check = store.check_snapshot(DATASET, store.table(snapshot))
    assert not check.success
    [problem] = check.problems
    assert snapshot.parts[1].path in problem and "changed since the snapshot was made" in problem
    with pytest.raises(SnapshotChanged, match="changed since the snapshot was made"):
        store.table(snapshot).read(["torque_nm"])
    # rows of the intact part alone are still readable
    assert len(store.table(snapshot).read(["udi"], np.arange(5))) == 5
    path.unlink()
    with pytest.raises(SnapshotChanged, match="is missing"):
        store.table(snapshot).read(["udi"])


def _edit_manifest(store: FeatureStore, key: str, **changes: Any) -> None:
    [manifest] = store.manifests(key)
    path = Path(store.root) / "batches" / key / manifest.version / "_manifest.json"
    data = json.loads(path.read_text())
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    path.write_text(json.dumps(data))


def test_rows_validated_under_another_suite_are_validated_again(tmp_path: Path) -> None:
    _, store = _two_batches(tmp_path)
    first, second = (m.key for m in store.latest())
    # a version stored before verdicts and digests were recorded ...
    _edit_manifest(store, first, suite=None, stored_check=None, part_sha256=None, part_rows=None)
    snapshot = store.snapshot(DATASET)
    assert snapshot.parts[0].sha256 == file_sha256(_part_path(store, snapshot, 0))
    check = store.check_snapshot(DATASET, store.table(snapshot))
    # ... is validated again by Great Expectations, on its stored rows
    assert check.success and check.revalidated == [first]

    # a tighter range than the rows were validated with: both versions are validated
    # again, and the rows now outside it fail the check, named by GX
    torque = DATASET.column("torque_nm")
    tighter = replace(
        DATASET,
        columns=tuple(
            replace(c, max_value=40.0) if c.name == torque.name else c for c in DATASET.columns
        ),
    )
    check = store.check_snapshot(tighter, store.table(snapshot))
    assert not check.success and check.revalidated == [first, second]
    [failure] = check.summary.failed
    assert failure.expectation == "expect_column_values_to_be_between"
    assert failure.column == "torque_nm" and failure.unexpected_count > 0
    assert "torque_nm" in "\n".join(check.as_metadata()["failures"])


def test_a_failed_stored_verdict_fails_the_table_check(tmp_path: Path) -> None:
    _, store = _two_batches(tmp_path)
    second = store.latest()[1].key
    _edit_manifest(
        store,
        second,
        stored_check={
            "expectations_run": 39,
            "expectations_failed": 1,
            "rows_checked": 40,
            "failures": ["expect_column_values_to_be_of_type on 'udi': 40 unexpected"],
        },
    )
    check = store.check_snapshot(DATASET, store.table(store.snapshot(DATASET)))
    assert not check.success and check.revalidated == []
    assert any("to_be_of_type on 'udi'" in f for f in check.as_metadata()["failures"])


def test_a_new_derived_feature_needs_no_reingestion_and_changes_the_digest(
    tmp_path: Path,
) -> None:
    _, store = _two_batches(tmp_path)
    before = store.snapshot(DATASET)
    extra = DerivedFeature("torque_squared", "Nm²", "torque squared", _torque_squared)
    newer = replace(DATASET, derived=(*DATASET.derived, extra))
    snapshot = store.snapshot(newer)
    # the same stored rows, another table: its digest says so
    assert snapshot.columns == before.columns and snapshot.parts == before.parts
    assert snapshot.digest != before.digest
    check = store.check_snapshot(newer, store.table(snapshot))
    assert check.success, check.as_metadata()
    table = read_features(store.table(snapshot), newer, table_columns(newer))
    np.testing.assert_allclose(table["torque_squared"], table["torque_nm"] ** 2)


def _torque_squared(frame: pd.DataFrame) -> pd.Series:
    return frame["torque_nm"] ** 2


def test_a_part_without_a_column_the_schema_now_declares_fails_naming_it(
    tmp_path: Path,
) -> None:
    _, store = _two_batches(tmp_path)
    humidity = ColumnSpec("humidity_pct", "Humidity [%]", "float64", Role.FEATURE, "%", 0.0, 100.0)
    newer = replace(DATASET, columns=(*DATASET.columns, humidity))
    snapshot = store.snapshot(newer)
    assert "humidity_pct" in snapshot.columns
    check = store.check_snapshot(newer, store.table(snapshot))
    assert not check.success
    assert len([p for p in check.problems if "no column 'humidity_pct'" in p]) == 2
    assert "materialize this raw_observations partition again" in check.problems[0]


def test_a_snapshot_reads_chosen_rows_across_parts_batches_and_superseded_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing, store = _landing_and_store(tmp_path)
    inbox = Path(landing.landing_dir)
    generate_ai4i(300, seed=61).to_csv(inbox / "a.csv", index=False)
    _ingest(landing, store, chunk_rows=64)  # five parts
    generate_ai4i(100, seed=62, start_udi=151).to_csv(inbox / "b.csv", index=False)
    _ingest(landing, store, chunk_rows=64)  # supersedes 151..250, two parts
    generate_ai4i(30, seed=63, start_udi=281).to_csv(inbox / "c.csv", index=False)
    _ingest(landing, store, chunk_rows=1_000)  # supersedes 281..300, adds 301..310
    monkeypatch.setattr(feature_tables, "_READ_BATCH_ROWS", 7)
    snapshot = store.snapshot(DATASET)
    assert len(snapshot.parts) == 8 and snapshot.num_rows == 310
    table = store.table(snapshot)
    expected = build_feature_table(store.as_of(DATASET), DATASET)
    whole = read_features(table, DATASET, list(expected.columns))
    pd.testing.assert_frame_equal(whole, expected)

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(310, size=90, replace=False))
    rows = np.r_[0, rows[(rows > 0) & (rows < 309)], 309]
    columns = ["type", DATASET.target, DATASET.entity_id, "batch_id"]
    picked = table.read(columns, rows)
    pd.testing.assert_frame_equal(picked, expected[columns].take(rows).reset_index(drop=True))
    assert table.read(columns, np.array([], dtype="int64")).empty
    with pytest.raises(IndexError, match="beyond the table's 310 rows"):
        table.read(columns, np.array([310]))
    with pytest.raises(KeyError, match="no columns"):
        table.read(["air_temperature_k", "twf"])  # leakage never enters the table


def test_a_chunk_is_written_as_parts_side_by_side_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlplatform.resources.feature_store as feature_store_module

    monkeypatch.setattr(feature_store_module, "_PART_ROWS", 40)
    landing, store = _landing_and_store(tmp_path)
    frame = generate_ai4i(100, seed=71)
    frame.loc[[10, 90], "Torque [Nm]"] = -3.0  # two rows to quarantine: early parts dropped
    frame.to_csv(Path(landing.landing_dir) / "parts.csv", index=False)
    manifest = _ingest(landing, store, chunk_rows=1_000)
    # 98 valid rows of one chunk: two parts (of at least 40 rows), written side by side
    assert manifest.parts == ("part-00002.parquet", "part-00003.parquet")
    assert list(manifest.part_rows.values()) == [49, 49]
    rows = store.read_batch(manifest.key)
    assert rows["source_row"].tolist() == [r for r in range(1, 101) if r not in (11, 91)]
    # the version's lineage, written once a part, is in every row with its stored type
    assert rows["batch_id"].tolist() == [manifest.key] * 98
    assert rows["source"].tolist() == [manifest.source] * 98
    assert rows["source_file"].tolist() == [manifest.label] * 98
    assert rows["ingested_at"].tolist() == [pd.Timestamp(manifest.ingested_at)] * 98
    assert rows["batch_id"].dtype == pd.StringDtype("pyarrow")
    assert rows["ingested_at"].dtype == pd.DatetimeTZDtype("us", "UTC")
    assert sorted(p.name for p in (Path(store.root) / "batches").rglob("part-*")) == list(
        manifest.parts
    )
    for name, sha in manifest.part_sha256.items():
        [path] = (Path(store.root) / "batches").rglob(name)
        assert file_sha256(path) == sha
    assert store.read_quarantine()["row_number"].tolist() == [11, 91]


def test_the_features_command_names_a_part_changed_on_disk(
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    land_sample(resources, 200, seed=81)
    assert materialize_all(resources, selection=["raw_observations"]).success
    [part] = (state.feature_store / "batches").rglob("part-*.parquet")
    part.write_bytes(part.read_bytes()[:-8] + b"\0" * 8)  # its footer's last bytes changed
    monkeypatch.setenv(HOME_ENV, str(state.root))
    capsys.readouterr()
    out = state.root / "table.parquet"
    assert cli_main(["features", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "cannot be read, so it is not the file" in error
    assert part.name in error and not out.exists()
