"""Unit tests of frame content digests (mlplatform.core.digest)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.core.digest import frame_digest


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "udi": pd.array([1, 2, 3], dtype="int64"),
            "torque_nm": [40.0, 12.5, 33.3],
            "type": pd.array(["L", "M", "H"], dtype="string"),
        }
    )


def test_digest_is_a_sha256_hex_string() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", frame_digest(_frame()))


def test_same_frame_same_digest() -> None:
    assert frame_digest(_frame()) == frame_digest(_frame())
    frame = _frame()
    assert frame_digest(frame) == frame_digest(frame.copy())


@pytest.mark.parametrize(
    "reindex",
    [
        lambda f: f.set_axis([10, 20, 30]),
        lambda f: f.set_axis(["a", "b", "c"]),
        lambda f: pd.concat([f.iloc[:1], f.iloc[1:]]).set_axis([5, 5, 5]),
    ],
    ids=["ints", "labels", "duplicate-labels"],
)
def test_index_change_keeps_the_digest(reindex: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    assert frame_digest(reindex(_frame())) == frame_digest(_frame())


def _change_cell(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[1, "torque_nm"] = 12.6
    return f


def _change_text_cell(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[2, "type"] = "L"
    return f


def _change_int_cell(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[0, "udi"] = 4
    return f


@pytest.mark.parametrize(
    "change",
    [
        _change_cell,
        _change_text_cell,
        _change_int_cell,
        lambda f: f.astype({"udi": "float64"}),
        lambda f: f.astype({"udi": "int32"}),
        lambda f: f.astype({"type": "object"}),
        lambda f: f.iloc[::-1],
        lambda f: f.iloc[[1, 0, 2]],
        lambda f: f.rename(columns={"torque_nm": "torque"}),
        lambda f: f[["torque_nm", "udi", "type"]],
        lambda f: f.iloc[:2],
        lambda f: f.drop(columns=["type"]),
    ],
    ids=[
        "float-cell", "text-cell", "int-cell", "dtype-float", "dtype-int32", "dtype-object",
        "reversed-rows", "swapped-rows", "renamed-column", "column-order", "dropped-row",
        "dropped-column",
    ],
)  # fmt: skip
def test_any_content_change_changes_the_digest(
    change: Callable[[pd.DataFrame], pd.DataFrame],
) -> None:
    assert frame_digest(change(_frame())) != frame_digest(_frame())


def test_values_swapped_between_columns_change_the_digest() -> None:
    a = pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]})
    b = pd.DataFrame({"x": [3.0, 4.0], "y": [1.0, 2.0]})
    assert frame_digest(a) != frame_digest(b)


def test_empty_frames_with_different_columns_differ() -> None:
    assert frame_digest(_frame().iloc[:0]) != frame_digest(_frame().iloc[:0, :2])
    assert frame_digest(_frame().iloc[:0]) == frame_digest(_frame().iloc[:0])


def test_digest_is_stable_across_processes() -> None:
    # Idempotent ingestion compares digests across runs: no per-process hash salt.
    code = (
        "from mlplatform_tests.core.test_digest import _frame;"
        "from mlplatform.core.digest import frame_digest;"
        "print(frame_digest(_frame()))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == frame_digest(_frame())
