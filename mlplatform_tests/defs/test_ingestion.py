"""Ingestion and inference edge cases, through real materializations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from mlplatform.core.generator import generate_ai4i
from mlplatform.paths import StatePaths
from mlplatform.resources.feature_store import FeatureStore
from mlplatform_tests.defs.helpers import (
    ASSETS,
    LENIENT,
    land_sample,
    log_messages,
    materialize_all,
)


def _ingest(resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    return materialize_all(resources, selection=["raw_observations"])


def test_valid_file_is_stored_typed_and_archived(
    resources: dict[str, Any], state: StatePaths
) -> None:
    name = land_sample(resources, 500, seed=1)
    original = (state.landing / name).read_bytes()
    assert _ingest(resources).success
    store: FeatureStore = resources["feature_store"]
    rows = store.read_observations()
    assert len(rows) == 500
    assert rows["torque_nm"].dtype == "float64"
    assert rows["udi"].dtype == "int64"
    assert (rows["source_file"] == name).all()
    assert rows["content_sha256"].str.len().eq(64).all()
    # the landed file is kept byte for byte in the archive and the inbox is empty
    [archived] = list(state.archive.iterdir())
    assert archived.read_bytes() == original
    assert not list(state.landing.iterdir())


def test_same_file_dropped_twice_adds_no_rows(resources: dict[str, Any], state: StatePaths) -> None:
    frame = generate_ai4i(300, seed=2)
    frame.to_csv(state.landing / "a.csv", index=False)
    assert _ingest(resources).success
    frame.to_csv(state.landing / "a_again.csv", index=False)
    result = _ingest(resources)
    assert result.success
    assert len(resources["feature_store"].read_observations()) == 300
    assert len(list(state.archive.iterdir())) == 2


def test_invalid_rows_are_quarantined_and_valid_rows_continue(
    resources: dict[str, Any], state: StatePaths
) -> None:
    frame = generate_ai4i(200, seed=3).astype(str)
    frame.loc[4, "Torque [Nm]"] = "-5"
    frame.loc[9, "Type"] = "X"
    frame.loc[20, "Rotational speed [rpm]"] = "fast"
    frame.to_csv(state.landing / "mixed.csv", index=False)
    result = _ingest(resources)
    assert result.success
    store: FeatureStore = resources["feature_store"]
    assert len(store.read_observations()) == 197
    quarantine = store.read_quarantine().sort_values("row_number")
    assert quarantine["row_number"].tolist() == [5, 10, 21]
    assert quarantine["column"].tolist() == ["Torque [Nm]", "Type", "Rotational speed [rpm]"]
    assert quarantine["source_file"].eq("mixed.csv").all()
    assert "below the minimum" in quarantine["reason"].iloc[0]
    # count invariant: landed = stored + quarantined
    [event] = result.get_asset_materialization_events()
    md = event.materialization.metadata
    assert md["rows_stored_this_run"].value + md["rows_quarantined_this_run"].value == 200


def test_file_missing_a_column_is_rejected_with_a_clear_error(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 1000, seed=4)
    assert materialize_all(resources, LENIENT).success  # a first, good feature table
    table_before = pd.read_parquet(state.feature_store / "feature_table.parquet")

    generate_ai4i(100, seed=5, start_udi=1000).drop(columns=["Torque [Nm]"]).to_csv(
        state.landing / "no_torque.csv", index=False
    )
    result = materialize_all(resources, LENIENT)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "no_torque.csv" in message and "Torque [Nm]" in message
    rejected = sorted(p.name for p in state.rejected.iterdir())
    assert len(rejected) == 2 and rejected[1].endswith("no_torque.csv.reason.txt")
    assert "missing required column" in (state.rejected / rejected[1]).read_text()
    # nothing downstream ran: the feature table is unchanged
    table_after = pd.read_parquet(state.feature_store / "feature_table.parquet")
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
    reasons = {p.name.split("__", 1)[1]: p.read_text() for p in state.rejected.glob("*.reason.txt")}
    assert "not UTF-8" in reasons["latin1.csv.reason.txt"]
    assert "empty" in reasons["empty.csv.reason.txt"]
    assert "wrong delimiter" in reasons["semicolons.csv.reason.txt"]
    assert "unsupported file type" in reasons["notes.txt.reason.txt"]
    assert not list(state.landing.iterdir())


def test_no_data_at_all_fails_with_instructions(resources: dict[str, Any]) -> None:
    result = _ingest(resources)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "drop CSV or Parquet files into" in failure.step_failure_data.error.message


def test_parquet_files_are_ingested(resources: dict[str, Any], state: StatePaths) -> None:
    generate_ai4i(150, seed=6).to_parquet(state.landing / "batch.parquet", index=False)
    assert _ingest(resources).success
    assert len(resources["feature_store"].read_observations()) == 150


def test_batch_predictions_without_champion_is_quiet(
    resources: dict[str, Any], state: StatePaths
) -> None:
    land_sample(resources, 300, seed=7)
    assert materialize_all(resources, selection=["raw_observations", "feature_table"]).success
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_all(resources, selection=["batch_predictions"], instance=instance)
    assert result.success
    assert not result.get_asset_materialization_events()
    assert not list(Path(state.predictions).iterdir())
    assert any("no champion yet" in m for m in log_messages(instance, result.run_id))


def test_assets_list_is_complete() -> None:
    keys = {k.to_user_string() for a in ASSETS for k in getattr(a, "keys", [])}
    assert "batch_predictions" in keys and "raw_observations" in keys
