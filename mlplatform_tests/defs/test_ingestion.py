"""Ingestion and inference edge cases, through real materializations.

Every landed file (and every SQL pull) is a partition of ``raw_observations``,
ingested in a run of its own; the feature table and everything after it run in
one further run on what the feature store holds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from mlplatform.core.batches import file_batch_key
from mlplatform.core.expectations import DUPLICATE_REASON
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import PARSE_EXPECTATION, TYPE_EXPECTATION
from mlplatform.defs.common import DATASET
from mlplatform.defs.features import FEATURE_TABLE_CHECK
from mlplatform.defs.ingestion import (
    COUNT_INVARIANT_CHECK,
    LANDED_ROWS_CHECK,
    SOURCE_BATCHES,
    STORED_ROWS_CHECK,
    new_source_batches,
)
from mlplatform.defs.resources import SQL_EVENT_TIME, SQL_TABLE, SQL_WATERMARK
from mlplatform.paths import StatePaths
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.sample_data import write_sql_readings
from mlplatform_tests.defs.helpers import (
    ASSETS,
    DOWNSTREAM,
    INGESTION_ASSET,
    LENIENT,
    LifecycleResult,
    ingest_pending,
    land_sample,
    log_messages,
    materialize_all,
    read_feature_table,
)

BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
NOT_NULL = "expect_column_values_to_not_be_null"


def _landed_files(state: StatePaths) -> list[Path]:
    """Files waiting in the landing folder (its labels inbox is a folder, not a landed file)."""
    return [p for p in state.landing.iterdir() if p.is_file()]


def _ingest(
    resources: dict[str, Any], instance: dg.DagsterInstance | None = None
) -> LifecycleResult:
    return materialize_all(resources, selection=[INGESTION_ASSET], instance=instance)


def _checks(result: Any) -> dict[str, dg.AssetCheckEvaluation]:
    """The check evaluations of one run, by check name."""
    evaluations = result.get_asset_check_evaluations()
    by_name = {c.check_name: c for c in evaluations}
    assert len(by_name) == len(evaluations), "a check was evaluated twice in one run"
    return by_name


def _metadata(result: Any, asset: str) -> dict[str, Any]:
    """The plain metadata values of ``asset``'s only materialization in ``result``."""
    [materialization] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in materialization.metadata.items()}


def _failure(result: dg.ExecuteInProcessResult) -> Any:
    """The step failure of a failed run (exactly one)."""
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data


def _partitions(instance: dg.DagsterInstance) -> list[str]:
    """The batch partitions registered with ``instance``."""
    return list(instance.get_dynamic_partitions(str(SOURCE_BATCHES.name)))


def _requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    assert result.run_requests is not None
    return list(result.run_requests)


def _quarantine(store: FeatureStore) -> list[tuple[int, str, str, str, str]]:
    q = store.read_quarantine().sort_values(["row_number", "column"])
    return list(
        zip(q["row_number"], q["column"], q["value"], q["expectation"], q["reason"], strict=True)
    )


def test_valid_file_is_stored_typed_archived_and_checked(
    resources: dict[str, Any], state: StatePaths
) -> None:
    name = land_sample(resources, 500, seed=1)
    original = (state.landing / name).read_bytes()
    key = file_batch_key(hashlib.sha256(original).hexdigest())
    instance = dg.DagsterInstance.ephemeral()
    result = _ingest(resources, instance)
    assert result.success and result.main is None
    # one run, for the file's partition, registered with the instance
    [run] = result.ingest
    assert _partitions(instance) == [key]
    [event] = run.get_asset_materialization_events()
    assert event.partition == key

    store: FeatureStore = resources["feature_store"]
    [manifest] = store.manifests(key)
    assert manifest.ref["sha256"] == hashlib.sha256(original).hexdigest()
    assert (manifest.rows_landed, manifest.rows_stored, manifest.rows_quarantined) == (500, 500, 0)
    metadata = _metadata(run, INGESTION_ASSET)
    assert metadata["file"] == name and metadata["source"] == "landing"
    assert metadata["version"] == manifest.version
    assert (metadata["rows_landed"], metadata["rows_stored"], metadata["rows_quarantined"]) == (
        500,
        500,
        0,
    )
    checks = _checks(run)
    assert set(checks) == {LANDED_ROWS_CHECK, STORED_ROWS_CHECK, COUNT_INVARIANT_CHECK}
    assert all(c.passed for c in checks.values())

    rows = store.as_of(DATASET)
    assert len(rows) == 500
    assert rows["torque_nm"].dtype == "float64"
    assert rows["udi"].dtype == "int64"
    assert rows["type"].dtype == "string"
    # lineage: batch, source, file and row of every stored row, and when it arrived
    assert (rows["batch_id"] == key).all() and (rows["source"] == "landing").all()
    assert (rows["source_file"] == name).all()
    assert rows["source_row"].tolist() == list(range(1, 501))
    assert (rows["ingested_at"] == manifest.ingested).all()
    assert (rows["event_time"] == manifest.ingested).all()  # a CSV without event times
    assert "content_sha256" not in rows.columns
    assert store.read_quarantine().empty
    # the landed file is kept byte for byte in the archive and the inbox is empty
    [archived] = list(state.archive.iterdir())
    assert archived.read_bytes() == original
    assert archived.name == f"{manifest.ref['sha256'][:16]}__{name}"
    assert not _landed_files(state)


def test_same_file_dropped_twice_adds_no_rows(resources: dict[str, Any], state: StatePaths) -> None:
    frame = generate_ai4i(300, seed=2)
    frame.to_csv(state.landing / "a.csv", index=False)
    instance = dg.DagsterInstance.ephemeral()
    assert _ingest(resources, instance).success
    frame.to_csv(state.landing / "a_again.csv", index=False)
    again = _ingest(resources, instance)
    # the same content is the same batch: archived at discovery, no run, no new version
    assert again.success and again.ingest == []
    store: FeatureStore = resources["feature_store"]
    assert len(store.as_of(DATASET)) == 300
    assert len(store.manifests()) == 1
    assert len(_partitions(instance)) == 1
    assert sorted(p.name.split("__", 1)[1] for p in state.archive.iterdir()) == [
        "a.csv",
        "a_again.csv",
    ]


def test_invalid_rows_are_quarantined_and_valid_rows_continue(
    resources: dict[str, Any], state: StatePaths
) -> None:
    frame = generate_ai4i(200, seed=3).astype(str)
    frame.loc[4, "Torque [Nm]"] = "-5"
    frame.loc[9, "Type"] = "X"
    frame.loc[20, "Rotational speed [rpm]"] = "fast"
    frame.loc[30, "Air temperature [K]"] = ""
    frame.to_csv(state.landing / "mixed.csv", index=False)
    result = _ingest(resources)
    # a warning, not a stop: the run succeeds with the valid rows
    assert result.success
    [run] = result.ingest
    store: FeatureStore = resources["feature_store"]
    rows = store.as_of(DATASET)
    assert len(rows) == 196
    assert not {5, 10, 21, 31} & set(rows["udi"])

    # one entry per failed (row, column, expectation): the file's row number and header,
    # the value as landed, the expectation GX ran and why it failed
    assert _quarantine(store) == [
        (5, "Torque [Nm]", "-5", BETWEEN, "outside [0, 200] Nm"),
        (10, "Type", "X", IN_SET, "not one of L, M, H"),
        (21, "Rotational speed [rpm]", "fast", TYPE_EXPECTATION, "not a number"),
        (31, "Air temperature [K]", "<missing>", NOT_NULL, "missing value"),
    ]
    quarantine = store.read_quarantine().sort_values("row_number")
    [key] = [m.key for m in store.manifests()]
    assert quarantine["source_file"].eq("mixed.csv").all()
    assert quarantine["batch_id"].eq(key).all()
    # the whole raw record, under the file's own headers
    record = json.loads(quarantine["record"].iloc[0])
    assert record["Torque [Nm]"] == "-5" and record["UDI"] == "5"
    assert list(record) == list(frame.columns)

    checks = _checks(run)
    landed = checks[LANDED_ROWS_CHECK]
    assert not landed.passed and landed.severity == dg.AssetCheckSeverity.WARN
    assert landed.metadata["quarantined_rows"].value == 4
    failures = str(landed.metadata["failures"].value)
    assert "expect_column_values_to_be_between on 'torque_nm'" in failures
    assert checks[STORED_ROWS_CHECK].passed
    assert checks[COUNT_INVARIANT_CHECK].passed
    metadata = _metadata(run, INGESTION_ASSET)
    assert (metadata["rows_landed"], metadata["rows_stored"], metadata["rows_quarantined"]) == (
        200,
        196,
        4,
    )
    assert "outside [0, 200] Nm" in metadata["quarantine_sample"]


def test_count_invariant_holds_across_chunks_and_unparseable_lines(
    resources: dict[str, Any], state: StatePaths
) -> None:
    frame = generate_ai4i(3000, seed=8).astype(str)
    frame.loc[2499, "Torque [Nm]"] = "999"
    frame.loc[2899, "UDI"] = "3"  # repeats an id of the first chunk
    lines = frame.to_csv(index=False).splitlines()
    lines[7] += ",extra"  # data row 7 has a field too many
    (state.landing / "ragged.csv").write_text("\n".join(lines) + "\n")
    instance = dg.DagsterInstance.ephemeral()
    chunked = {"ops": {INGESTION_ASSET: {"config": {"chunk_rows": 500}}}}
    [run] = ingest_pending(resources, instance, chunked)
    assert run.success

    # landed = stored + quarantined, summed over chunks; the unparseable line counts as landed
    invariant = _checks(run)[COUNT_INVARIANT_CHECK]
    assert invariant.passed
    assert {k: v.value for k, v in invariant.metadata.items()} == {
        "rows_landed": 3000,
        "rows_stored": 2997,
        "rows_quarantined": 3,
    }
    store: FeatureStore = resources["feature_store"]
    [manifest] = store.manifests()
    assert (manifest.rows_landed, manifest.rows_stored, manifest.rows_quarantined) == (
        3000,
        2997,
        3,
    )
    assert len(manifest.parts) > 1  # read and stored in chunks, never all at once
    rows = store.as_of(DATASET)
    assert len(rows) == 2997 and not {7, 2500, 2900} & set(rows["udi"])
    assert (rows["udi"] == 3).sum() == 1  # the first copy, from an earlier chunk, stays
    # every entry names the row as the file numbers it, also after the unparseable line
    assert (rows["source_row"] == rows["udi"]).all()  # UDI n is data row n of the file
    assert _quarantine(store) == [
        (7, "<row>", lines[7], PARSE_EXPECTATION, "expected 14 fields, found 15"),
        (2500, "Torque [Nm]", "999", BETWEEN, "outside [0, 200] Nm"),
        (2900, "UDI", "3", "expect_column_values_to_be_unique", DUPLICATE_REASON),
    ]
    assert store.read_quarantine().sort_values("row_number")["record"].iloc[0] == lines[7]


def test_rematerializing_a_partition_adds_a_version_and_keeps_the_old_one(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 300, seed=9)
    instance = dg.DagsterInstance.ephemeral()
    assert _ingest(resources, instance).success
    store: FeatureStore = resources["feature_store"]
    [first] = store.manifests()
    key = first.key
    old_rows = store.read_batch(key)

    # the file is in the archive now: the partition re-reads it from there
    again = dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        partition_key=key,
        selection=[INGESTION_ASSET],
    )
    assert again.success
    older, newer = store.manifests(key)
    assert older == first and newer.version != first.version
    assert newer.ingested > first.ingested
    assert _metadata(again, INGESTION_ASSET)["version"] == newer.version
    assert all(c.passed for c in _checks(again).values())
    assert len(list(state.archive.iterdir())) == 1

    # the current view serves the new version, one row per entity
    current = store.as_of(DATASET)
    assert len(current) == 300 and (current["ingested_at"] == newer.ingested).all()
    # the old version stays readable, by version and as of its time
    pd.testing.assert_frame_equal(store.read_batch(key, first.version), old_rows)
    past = store.as_of(DATASET, first.ingested)
    assert len(past) == 300 and (past["ingested_at"] == first.ingested).all()
    records = instance.fetch_materializations(dg.AssetKey(INGESTION_ASSET), limit=10).records
    assert [r.partition_key for r in records] == [key, key]


def test_sensor_requests_a_run_per_new_batch_then_nothing(
    resources: dict[str, Any], state: StatePaths
) -> None:
    landed = land_sample(resources, 100, seed=10)
    file_key = file_batch_key(hashlib.sha256((state.landing / landed).read_bytes()).hexdigest())
    write_sql_readings(
        resources["sql_source"].url,
        DATASET,
        generate_ai4i(40, seed=11, start_udi=101),
        table=SQL_TABLE,
        watermark=SQL_WATERMARK,
        event_time=SQL_EVENT_TIME,
    )
    instance = dg.DagsterInstance.ephemeral()

    def evaluate(cursor: str | None = None) -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=instance, resources=resources, cursor=cursor
        ) as context:
            result = new_source_batches(context)
        assert isinstance(result, dg.SensorResult)
        return result

    first = evaluate()
    keys = [file_key, "sql-machines-000001"]
    assert [(r.partition_key, r.run_key) for r in _requests(first)] == [(k, k) for k in keys]
    assert first.dynamic_partitions_requests == [SOURCE_BATCHES.build_add_request(keys)]

    # the next tick (the daemon passes the cursor on) requests nothing again
    second = evaluate(first.cursor)
    assert _requests(second) == [] and second.dynamic_partitions_requests == []

    # what the daemon does with the result: add the partitions, run each request
    instance.add_dynamic_partitions(str(SOURCE_BATCHES.name), keys)
    for request in _requests(first):
        run = dg.materialize(
            ASSETS,
            instance=instance,
            resources=resources,
            partition_key=request.partition_key,
            selection=[INGESTION_ASSET],
        )
        assert run.success
    rows = resources["feature_store"].as_of(DATASET)
    assert rows.groupby("batch_id").size().to_dict() == {file_key: 100, keys[1]: 40}
    assert set(rows.loc[rows["batch_id"] == keys[1], "source"]) == {"machines"}

    # a new file later is one new request
    land_sample(resources, 50, seed=12, start_udi=201)
    third = evaluate()
    [request] = _requests(third)
    new_key = str(request.partition_key)
    assert new_key.startswith("file-") and new_key not in keys
    assert third.dynamic_partitions_requests == [SOURCE_BATCHES.build_add_request([new_key])]


def test_file_missing_a_column_is_rejected_and_training_continues(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 1000, seed=4)
    first = materialize_all(resources, LENIENT)
    assert first.success  # a first, good feature table
    table_before = read_feature_table(state)
    before = _metadata(first.main, "feature_table")

    generate_ai4i(100, seed=5, start_udi=1001).drop(columns=["Torque [Nm]"]).to_csv(
        state.landing / "no_torque.csv", index=False
    )
    result = materialize_all(resources, LENIENT)
    assert not result.success
    # the file's own run fails, naming the file and the column ...
    [rejected_run] = result.ingest
    assert not rejected_run.success
    failure = _failure(rejected_run)
    assert "no_torque.csv" in failure.error.message and "Torque [Nm]" in failure.error.message
    failure_metadata = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert failure_metadata["file"] == "no_torque.csv"
    assert failure_metadata["column"] == "Torque [Nm]"
    assert failure_metadata["reason"].startswith("missing required column")
    rejected = sorted(p.name for p in state.rejected.iterdir())
    assert len(rejected) == 2 and rejected[1].endswith("no_torque.csv.reason.txt")
    assert "missing required column" in (state.rejected / rejected[1]).read_text()
    assert not _landed_files(state)
    assert len(resources["feature_store"].manifests()) == 1  # nothing of it was stored

    # ... and training still runs, on the stored data, unchanged by the bad file
    assert result.main is not None and result.main.success
    after = _metadata(result.main, "feature_table")
    assert after["dataset_digest"] == before["dataset_digest"]
    assert after["batches"] == before["batches"] == 1
    table_after = read_feature_table(state)
    pd.testing.assert_frame_equal(table_before, table_after)


def test_unreadable_files_are_rejected_not_lost(
    resources: dict[str, Any], state: StatePaths
) -> None:
    (state.landing / "latin1.csv").write_bytes("UDI,Type\n1,\xe9\n".encode("latin-1"))
    (state.landing / "empty.csv").write_bytes(b"")
    (state.landing / "semicolons.csv").write_text("UDI;Type;Torque\n1;L;4\n")
    (state.landing / "notes.txt").write_text("hello")
    result = _ingest(resources)
    assert not result.success
    # one failed run per file, each naming its file
    assert len(result.ingest) == 4 and not any(r.success for r in result.ingest)
    named = {_failure(r).user_failure_data.metadata["file"].value for r in result.ingest}
    assert named == {"latin1.csv", "empty.csv", "semicolons.csv", "notes.txt"}
    reasons = {p.name.split("__", 1)[1]: p.read_text() for p in state.rejected.glob("*.reason.txt")}
    assert "not UTF-8" in reasons["latin1.csv.reason.txt"]
    assert "empty" in reasons["empty.csv.reason.txt"]
    assert "wrong delimiter" in reasons["semicolons.csv.reason.txt"]
    assert "unsupported file type" in reasons["notes.txt.reason.txt"]
    assert len(list(state.rejected.iterdir())) == 8
    assert not _landed_files(state)
    assert resources["feature_store"].manifests() == []


def test_no_data_at_all_fails_in_the_feature_table_with_instructions(
    resources: dict[str, Any],
) -> None:
    result = materialize_all(resources)
    assert not result.success
    assert result.ingest == []  # nothing to ingest
    assert result.main is not None
    failure = _failure(result.main)
    message = failure.error.message
    assert "the feature store has no rows as of" in message
    assert "drop CSV or Parquet files into the landing folder" in message
    assert result.main.get_asset_materialization_events() == []


def test_feature_table_check_passes_on_stored_rows(resources: dict[str, Any]) -> None:
    land_sample(resources, 300, seed=13)
    result = materialize_all(resources, selection=[INGESTION_ASSET, "feature_table"])
    assert result.success
    assert result.main is not None
    [check] = result.main.get_asset_check_evaluations()
    assert check.check_name == FEATURE_TABLE_CHECK and check.passed
    values = {k: v.value for k, v in check.metadata.items()}
    # Great Expectations' summary of the rows the table reads, and the parts verified
    assert values["expectations_run"] > 20 and values["expectations_failed"] == 0
    assert values["rows_checked"] == 300 and values["parts_verified"] == 1
    assert values["failures"] == "none" and values["revalidated_batches"] == "none"
    metadata = _metadata(result.main, "feature_table")
    assert metadata["rows"] == 300 and metadata["batches"] == 1
    assert len(metadata["dataset_digest"]) == 64


def test_a_part_changed_on_disk_fails_the_blocking_check_and_trains_nothing(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 400, seed=14)
    assert materialize_all(resources, selection=[INGESTION_ASSET]).success
    [part] = (state.feature_store / "batches").rglob("part-*.parquet")
    stored = pd.read_parquet(part)
    stored.loc[3, "torque_nm"] = 500.0  # a value no validation ever saw, out of range
    stored.to_parquet(part, index=False)

    result = materialize_all(resources, LENIENT, selection=DOWNSTREAM)
    assert result.main is not None
    [check] = [
        c for c in result.main.get_asset_check_evaluations() if c.check_name == FEATURE_TABLE_CHECK
    ]
    assert not check.passed
    assert "changed since the snapshot was made" in str(check.metadata["failures"].value)
    # blocking: nothing downstream of the table ran, no model was trained or registered
    materialized = {
        e.asset_key.to_user_string() for e in result.main.get_asset_materialization_events()
    }
    assert materialized == {"feature_table"}
    assert resources["mlflow_registry"].champion() is None


def test_parquet_files_are_ingested(resources: dict[str, Any], state: StatePaths) -> None:
    generate_ai4i(150, seed=6).to_parquet(state.landing / "batch.parquet", index=False)
    result = _ingest(resources)
    assert result.success
    rows = resources["feature_store"].as_of(DATASET)
    assert len(rows) == 150
    assert (rows["source_file"] == "batch.parquet").all()
    assert rows["udi"].dtype == "int64" and rows["torque_nm"].dtype == "float64"
    assert all(c.passed for c in _checks(result.ingest[0]).values())


def test_batch_predictions_without_champion_is_quiet(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 300, seed=7)
    assert materialize_all(resources, selection=[INGESTION_ASSET, "feature_table"]).success
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_all(resources, selection=["batch_predictions"], instance=instance)
    assert result.success
    assert not result.get_asset_materialization_events()
    assert not list(Path(state.predictions).iterdir())
    assert any("no champion yet" in m for m in log_messages(instance, result.run_id))


def test_assets_list_is_complete() -> None:
    keys = {k.to_user_string() for a in ASSETS for k in getattr(a, "keys", [])}
    assert "batch_predictions" in keys and "raw_observations" in keys
