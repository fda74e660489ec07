"""Feature table snapshots as pure data: kept rows, superseded rows, digest, JSON form."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.snapshots import (
    FeatureSnapshot,
    SnapshotPart,
    mask_to_ranges,
    ranges_to_mask,
    superseded_rows,
)


@pytest.mark.parametrize(
    ("flags", "ranges"),
    [
        ([], ()),
        ([False, False], ()),
        ([True], ((0, 1),)),
        ([True, True, False, True], ((0, 2), (3, 4))),
        ([False, True, True, True, False, False, True], ((1, 4), (6, 7))),
    ],
)
def test_masks_and_ranges_are_inverse(flags: list[bool], ranges: tuple[tuple[int, int]]) -> None:
    mask = np.array(flags, dtype=bool)
    assert mask_to_ranges(mask) == ranges
    assert np.array_equal(ranges_to_mask(ranges, len(flags)), mask)


def test_a_range_outside_its_part_is_refused() -> None:
    with pytest.raises(ValueError, match="outside a part of 3 rows"):
        ranges_to_mask([(2, 4)], 3)


def test_the_last_reading_of_an_entity_is_kept_as_resolve_as_of_keeps_it() -> None:
    first = np.array([1, 2, 3, 4])
    second = np.array([3, 9])  # a later batch corrects entity 3
    third = np.array([1, 3])  # a still later one corrects 1 and 3 again
    masks = superseded_rows([first, second, third])
    assert [m.tolist() for m in masks] == [
        [True, False, True, False],
        [True, False],
        [False, False],
    ]
    every = np.concatenate([first, second, third])
    expected = pd.Series(every).duplicated(keep="last").to_numpy()
    assert np.array_equal(np.concatenate(masks), expected)


def test_increasing_ids_keep_every_row() -> None:
    masks = superseded_rows([np.arange(5), np.arange(5, 9)])
    assert not any(m.any() for m in masks) and [len(m) for m in masks] == [5, 4]
    assert superseded_rows([]) == []


def _snapshot(**changes: object) -> FeatureSnapshot:
    parts = (
        SnapshotPart("batches/a/v1/part-00000.parquet", "a", "v1", 10, "1" * 64, ((2, 4),)),
        SnapshotPart("batches/b/v1/part-00000.parquet", "b", "v1", 5, "2" * 64),
    )
    base = FeatureSnapshot("ai4i2020", "2026-12-01T00:00:00+00:00", ("udi", "torque_nm"), parts)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_snapshot_counts_kept_rows_and_round_trips_as_json() -> None:
    snapshot = _snapshot()
    assert snapshot.num_rows == 13
    assert snapshot.batches == ["a", "b"]
    assert snapshot.parts[0].keep_mask() is not None and snapshot.parts[1].keep_mask() is None
    assert FeatureSnapshot.from_json(snapshot.to_json()) == snapshot


def test_the_digest_names_the_content_not_the_time_or_place() -> None:
    snapshot = _snapshot()
    assert _snapshot(as_of="2027-01-01T00:00:00+00:00").digest == snapshot.digest
    moved = tuple(replace(p, path="elsewhere/" + p.path) for p in snapshot.parts)
    assert _snapshot(parts=moved).digest == snapshot.digest
    # any change of what is read changes it: bytes, superseded rows, columns, order
    changed_bytes = (replace(snapshot.parts[0], sha256="3" * 64), snapshot.parts[1])
    changed_rows = (replace(snapshot.parts[0], superseded=((2, 5),)), snapshot.parts[1])
    for other in (
        _snapshot(parts=changed_bytes),
        _snapshot(parts=changed_rows),
        _snapshot(parts=snapshot.parts[::-1]),
        _snapshot(columns=("udi",)),
    ):
        assert other.digest != snapshot.digest


def test_an_edited_snapshot_file_is_refused() -> None:
    data = _snapshot().to_json()
    data["parts"][0]["superseded"] = []
    with pytest.raises(ValueError, match="the file was edited"):
        FeatureSnapshot.from_json(data)
    with pytest.raises(ValueError, match="not a feature table snapshot"):
        FeatureSnapshot.from_json({**_snapshot().to_json(), "format": "other"})
