"""Unit tests of source batches and point-in-time resolution (mlplatform.core.batches)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.batches import (
    CONSTANT_LINEAGE,
    LINEAGE_COLUMNS,
    BatchManifest,
    BatchPlan,
    add_lineage,
    check_key,
    file_batch_key,
    lineage_constants,
    parse_time,
    resolve_as_of,
    select_versions,
    version_name,
)
from mlplatform.core.features import add_derived
from mlplatform.core.ingest import type_and_validate
from mlplatform.core.schema import AI4I

from ._frames import hand_observations, raw_text

STRING = pd.StringDtype("pyarrow")
UTC_US = pd.DatetimeTZDtype("us", "UTC")
T0 = pd.Timestamp("2024-05-01T08:00:00Z")


def _plan(key: str = "file-0123456789abcdef") -> BatchPlan:
    return BatchPlan(key, "landing", "ai4i_2024-05-01.csv", {"sha256": "0123456789abcdef" * 4})


def _manifest(key: str, hours: float, **changes: Any) -> BatchManifest:
    ingested = T0 + pd.Timedelta(hours=hours)
    values: dict[str, Any] = {
        "key": key,
        "version": version_name(ingested.to_pydatetime()),
        "source": "landing",
        "label": f"{key}.csv",
        "ingested_at": ingested.isoformat(),
        "rows_landed": 10,
        "rows_stored": 8,
        "rows_quarantined": 2,
        "parts": ("part-0.parquet",),
        "quarantine_parts": ("quarantine-0.parquet",),
    }
    values.update(changes)
    return BatchManifest(**values)


# --- keys and plans ---------------------------------------------------------------------------


def test_file_batch_key_is_the_content_hash_prefix() -> None:
    sha = "ABCDEF0123456789" * 4
    assert file_batch_key(sha.lower()) == "file-abcdef0123456789"
    assert check_key(file_batch_key(sha.lower())) == "file-abcdef0123456789"


@pytest.mark.parametrize(
    "key", ["file-0123", "sql-machines-000042", "a", "v1.2_3-x", "a" + "b" * 127]
)
def test_valid_batch_keys(key: str) -> None:
    assert check_key(key) == key
    assert BatchPlan(key, "s", "l").key == key


@pytest.mark.parametrize(
    "key", ["", "File-01", "-leading-dash", ".hidden", "has space", "a/b", "ü", "a" * 129]
)
def test_invalid_batch_keys_are_rejected_by_name(key: str) -> None:
    with pytest.raises(ValueError, match="invalid batch key") as info:
        BatchPlan(key, "landing", "x.csv")
    assert repr(key) in str(info.value)


def test_batch_plan_json_round_trip() -> None:
    plan = _plan()
    text = json.dumps(plan.to_json())
    back = BatchPlan.from_json(json.loads(text))
    assert back == plan
    assert back.to_json() == {
        "key": "file-0123456789abcdef",
        "source": "landing",
        "label": "ai4i_2024-05-01.csv",
        "ref": {"sha256": "0123456789abcdef" * 4},
    }
    assert BatchPlan.from_json({"key": "k", "source": "s", "label": "l", "ref": {}}).ref == {}


def test_batch_plan_from_json_checks_the_key() -> None:
    with pytest.raises(ValueError, match="invalid batch key 'BAD'"):
        BatchPlan.from_json({"key": "BAD", "source": "s", "label": "l", "ref": {}})


# --- manifests --------------------------------------------------------------------------------


def test_manifest_rejects_a_broken_count_invariant() -> None:
    with pytest.raises(ValueError, match=r"count invariant broken: landed 10 != stored 8 \+ "):
        _manifest("file-a", 0, rows_quarantined=1)
    with pytest.raises(ValueError, match="batch file-a"):
        _manifest("file-a", 0, rows_stored=9, rows_quarantined=2)


def test_manifest_json_round_trip_and_ingestion_time() -> None:
    manifest = _manifest(
        "file-a",
        1.5,
        ref={"sha256": "ab" * 32},
        event_time_min="2024-04-30T00:00:00+00:00",
        event_time_max="2024-05-01T00:00:00+00:00",
        validation={"expectations_run": 23, "failures": []},
    )
    data = json.loads(json.dumps(manifest.to_json()))
    assert data["parts"] == ["part-0.parquet"]
    back = BatchManifest.from_json(data)
    assert back == manifest
    assert back.ingested == T0 + pd.Timedelta(hours=1.5)
    assert back.ingested.tz is not None


def test_version_names_sort_as_ingestion_times() -> None:
    later_elsewhere = datetime(2024, 5, 1, 10, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    assert version_name(later_elsewhere) == "v20240501T080000000001Z"
    times = [datetime(2024, 5, d, h, tzinfo=UTC) for d in (1, 2, 11) for h in (0, 9, 23)]
    names = [version_name(t) for t in times]
    assert sorted(names) == names


# --- versions at a point in time ------------------------------------------------------------------


def test_select_versions_picks_the_newest_version_at_or_before_as_of() -> None:
    a1, a2, a3 = _manifest("file-a", 0), _manifest("file-a", 2), _manifest("file-a", 5)
    b1, b2 = _manifest("file-b", 1), _manifest("file-b", 4)
    c1 = _manifest("file-c", 6)
    manifests = [a3, b2, c1, a1, b1, a2]

    as_of = T0 + pd.Timedelta(hours=2)  # exactly a2's ingestion: a2 is known then
    assert select_versions(manifests, as_of) == [b1, a2]
    assert select_versions(manifests, T0 + pd.Timedelta(hours=4, minutes=30)) == [a2, b2]
    assert select_versions(manifests, T0 - pd.Timedelta(seconds=1)) == []
    assert select_versions(manifests) == [b2, a3, c1]
    assert select_versions(manifests, T0 + pd.Timedelta(days=1)) == [b2, a3, c1]


def test_select_versions_ignores_input_order() -> None:
    manifests = [_manifest(k, h) for k, h in [("file-a", 0), ("file-b", 0), ("file-a", 3),
                                               ("file-c", 1), ("file-b", 2)]]  # fmt: skip
    as_of = T0 + pd.Timedelta(hours=2)
    expected = select_versions(manifests, as_of)
    # same ingestion time: ordered by key
    assert [(m.key, m.ingested) for m in expected] == [
        ("file-a", T0),
        ("file-c", T0 + pd.Timedelta(hours=1)),
        ("file-b", T0 + pd.Timedelta(hours=2)),
    ]
    rng = np.random.default_rng(0)
    for _ in range(5):
        shuffled = [manifests[i] for i in rng.permutation(len(manifests))]
        assert select_versions(shuffled, as_of) == expected


# --- entity resolution ----------------------------------------------------------------------------


def _rows(records: list[tuple[int, str, float, int, float]]) -> pd.DataFrame:
    """Stored rows: (udi, batch_id, hours after T0 ingested, source_row, torque)."""
    udi, batch, hours, source_row, torque = zip(*records, strict=True)
    return pd.DataFrame(
        {
            "udi": np.array(udi, dtype="int64"),
            "torque_nm": np.array(torque, dtype="float64"),
            "batch_id": pd.array(batch, dtype=STRING),
            "source_row": np.array(source_row, dtype="int64"),
            "ingested_at": pd.Series([T0 + pd.Timedelta(hours=h) for h in hours]).astype(UTC_US),
        }
    )


ROWS = [
    (1, "file-a", 0, 1, 10.0),
    (2, "file-a", 0, 2, 20.0),
    (3, "file-a", 0, 3, 30.0),
    (1, "file-b", 1, 1, 11.0),  # a later batch corrects entity 1
    (2, "file-c", 0, 7, 21.0),  # same ingestion time as file-a: the later batch id wins
    (4, "file-d", 2, 5, 40.0),
    (4, "file-d", 2, 9, 41.0),  # same batch: the later row wins
    (3, "file-e", 0.5, 1, 31.0),
    (3, "file-a", 0, 8, 32.0),  # superseded by file-e whatever its row number
]


def test_resolve_as_of_keeps_the_newest_row_per_entity() -> None:
    resolved = resolve_as_of(_rows(ROWS), AI4I)
    by_udi = dict(zip(resolved["udi"], resolved["torque_nm"], strict=True))
    assert by_udi == {1: 11.0, 2: 21.0, 3: 31.0, 4: 41.0}
    assert resolved["udi"].is_unique
    assert list(resolved.columns) == list(_rows(ROWS).columns)
    assert list(resolved.index) == list(range(len(resolved)))
    # rows come out in (ingested_at, batch_id, source_row) order
    order = resolved[["ingested_at", "batch_id", "source_row"]]
    pd.testing.assert_frame_equal(
        order, order.sort_values(list(order.columns)).reset_index(drop=True)
    )


def test_resolve_as_of_is_deterministic_under_shuffling() -> None:
    rows = _rows(ROWS)
    expected = resolve_as_of(rows, AI4I)
    rng = np.random.default_rng(1)
    for _ in range(10):
        shuffled = rows.iloc[rng.permutation(len(rows))]
        pd.testing.assert_frame_equal(resolve_as_of(shuffled, AI4I), expected)


def _sorted_then_latest(rows: pd.DataFrame) -> pd.DataFrame:
    """The definition: a stable sort by (ingested_at, batch_id, source_row), last copy kept."""
    ordered = rows.sort_values(["ingested_at", "batch_id", "source_row"], kind="stable")
    return ordered.loc[~ordered["udi"].duplicated(keep="last").to_numpy()].reset_index(drop=True)


@pytest.mark.parametrize("presorted", [True, False])
@pytest.mark.parametrize("repeats", [True, False])
def test_resolve_as_of_skips_the_sort_only_when_it_would_change_nothing(
    presorted: bool, repeats: bool
) -> None:
    rng = np.random.default_rng(11)
    n = 400
    records = [
        (
            int(rng.integers(1, 150)) if repeats else i,
            f"file-{'abc'[int(rng.integers(3))]}",
            float(rng.integers(3)),  # many rows tie on the ingestion time
            int(rng.integers(1, 60)),  # and on the row number
            float(i),
        )
        for i in range(n)
    ]
    rows = _rows(records)
    if presorted:  # as the store stacks them: already in order, ties kept in place
        rows = rows.sort_values(["ingested_at", "batch_id", "source_row"], kind="stable")
        rows = rows.reset_index(drop=True)
    pd.testing.assert_frame_equal(resolve_as_of(rows, AI4I), _sorted_then_latest(rows))


def test_resolve_as_of_keeps_rows_out_of_order_by_a_single_key_sorted() -> None:
    # in order by time and batch, not by row number within one batch: must be sorted
    rows = _rows([(1, "file-a", 0, 2, 1.0), (2, "file-a", 0, 1, 2.0), (1, "file-b", 1, 1, 3.0)])
    resolved = resolve_as_of(rows, AI4I)
    assert resolved["udi"].tolist() == [2, 1] and resolved["torque_nm"].tolist() == [2.0, 3.0]
    pd.testing.assert_frame_equal(resolved, _sorted_then_latest(rows))


def test_resolve_as_of_of_nothing_is_empty() -> None:
    empty = _rows(ROWS).iloc[:0]
    resolved = resolve_as_of(empty, AI4I)
    assert resolved.empty
    assert list(resolved.columns) == list(empty.columns)


# --- lineage ------------------------------------------------------------------------------------


def _valid(with_timestamp: bool) -> pd.DataFrame:
    raw = raw_text(5, seed=3)
    if with_timestamp:
        raw.insert(1, "Timestamp", ["2024-04-30T12:00:00Z", "", "2024-04-30T14:00:00+02:00",
                                    "2024-04-30 13:00:00", ""])  # fmt: skip
    batch = type_and_validate(raw, AI4I, "landing/x.csv")
    assert batch.rows_quarantined == 0
    return batch.valid


def test_add_lineage_adds_lineage_columns() -> None:
    valid = _valid(with_timestamp=False)
    before = valid.copy()
    plan = _plan()
    stamp = pd.Timestamp("2024-05-02T09:30:00.123456789Z")

    out = add_lineage(valid, AI4I, plan=plan, ingested_at=stamp)

    pd.testing.assert_frame_equal(valid, before)  # the input is left alone
    pd.testing.assert_frame_equal(out[list(valid.columns)], valid)
    assert list(out.columns) == [
        *valid.columns, "event_time", "batch_id", "source", "source_file", "ingested_at"
    ]  # fmt: skip
    assert set(LINEAGE_COLUMNS) <= set(out.columns)
    assert out["batch_id"].dtype == STRING
    assert out["source"].dtype == STRING
    assert out["source_file"].dtype == STRING
    assert out["batch_id"].tolist() == [plan.key] * 5
    assert out["source"].tolist() == ["landing"] * 5
    assert out["source_file"].tolist() == ["ai4i_2024-05-01.csv"] * 5
    assert out["ingested_at"].dtype == UTC_US
    assert out["event_time"].dtype == UTC_US
    truncated = pd.Timestamp("2024-05-02T09:30:00.123456Z")
    assert out["ingested_at"].tolist() == [truncated] * 5
    # no event time in the batch: stamped with its ingestion time
    assert out["event_time"].tolist() == [truncated] * 5


def test_lineage_constants_are_the_columns_add_lineage_repeats() -> None:
    valid = _valid(with_timestamp=False)
    stamp = pd.Timestamp("2024-05-02T09:30:00.123456789Z")
    full = add_lineage(valid, AI4I, plan=_plan(), ingested_at=stamp)
    without = add_lineage(valid, AI4I, plan=_plan(), ingested_at=stamp, constants=False)
    constants = lineage_constants(_plan(), stamp)

    assert list(constants.columns) == CONSTANT_LINEAGE
    assert len(constants) == 1
    # left out, and only those: the row lineage (event time, source row) stays
    assert list(without.columns) == [c for c in full.columns if c not in CONSTANT_LINEAGE]
    pd.testing.assert_frame_equal(without, full[list(without.columns)])
    # the same values and types as add_lineage puts in every row
    repeated = constants.loc[[0] * len(full)].reset_index(drop=True)
    pd.testing.assert_frame_equal(repeated, full[CONSTANT_LINEAGE])


@pytest.mark.parametrize("rows", [5, 0])
def test_add_lineage_text_columns_are_plain_arrow_text_in_every_row(rows: int) -> None:
    valid = _valid(with_timestamp=False).iloc[:rows].reset_index(drop=True)
    plan = BatchPlan("file-0123456789abcdef", "landing", "Ünïcode reading (2).csv", {})
    out = add_lineage(valid, AI4I, plan=plan, ingested_at=T0)
    expected_text = {"batch_id": plan.key, "source": "landing", "source_file": plan.label}
    for column, value in expected_text.items():
        expected = pd.Series(value, index=out.index, dtype=STRING, name=column)
        pd.testing.assert_series_equal(out[column], expected)


def test_add_lineage_fills_only_the_missing_event_times() -> None:
    valid = _valid(with_timestamp=True)
    stamp = pd.Timestamp("2024-05-02T09:30:00Z")
    out = add_lineage(valid, AI4I, plan=_plan(), ingested_at=stamp)
    assert out["event_time"].dtype == UTC_US
    assert out["event_time"].tolist() == [
        pd.Timestamp("2024-04-30T12:00:00Z"),
        stamp,
        pd.Timestamp("2024-04-30T12:00:00Z"),
        pd.Timestamp("2024-04-30T13:00:00Z"),
        stamp,
    ]
    assert list(out.columns).count("event_time") == 1


def test_add_lineage_stores_observations_not_derived_features() -> None:
    obs = hand_observations()
    out = add_lineage(obs, AI4I, plan=_plan(), ingested_at=T0)
    # derived features are computed when rows are read, never stored
    assert not {d.name for d in AI4I.derived} & set(out.columns)
    assert list(out.columns[: len(obs.columns)]) == list(obs.columns)
    assert out["event_time"].tolist() == [T0, T0]
    assert out["ingested_at"].tolist() == [T0, T0]
    assert out["batch_id"].tolist() == [_plan().key] * 2
    derived = add_derived(out, AI4I)
    np.testing.assert_allclose(derived["temp_diff_k"], [10.5, 8.5])
    np.testing.assert_allclose(derived["strain_min_nm"], [400.0, 2500.0])


# --- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T08:00:00", "2024-05-01T08:00:00Z"),  # naive text is UTC
        ("2024-05-01", "2024-05-01T00:00:00Z"),
        ("2024-05-01T08:00:00Z", "2024-05-01T08:00:00Z"),
        ("2024-05-01T10:00:00+02:00", "2024-05-01T08:00:00Z"),
        ("2024-05-01T03:30:00-04:30", "2024-05-01T08:00:00Z"),
        (datetime(2024, 5, 1, 8, 0), "2024-05-01T08:00:00Z"),  # naive datetime is UTC
        (datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))), "2024-05-01T08:00:00Z"),
        (pd.Timestamp("2024-05-01T04:00:00", tz="America/New_York"), "2024-05-01T08:00:00Z"),
        ("2024-05-01T08:00:00.1234567Z", "2024-05-01T08:00:00.123456Z"),
    ],
)
def test_parse_time_gives_utc_microseconds(value: str | datetime, expected: str) -> None:
    got = parse_time(value)
    assert got == pd.Timestamp(expected)
    assert str(got.tz) == "UTC"
    assert got.unit == "us"


def test_parse_time_rejects_text_that_is_not_a_time() -> None:
    with pytest.raises(ValueError):
        parse_time("yesterday")
