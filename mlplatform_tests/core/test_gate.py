"""Unit tests of the recall gate (mlplatform.core.gate)."""

from __future__ import annotations

import json
import math

import pytest

from mlplatform.core.gate import Criterion, GateDecision, GateThresholds, decide

THRESHOLDS = GateThresholds(min_recall=0.8, min_precision=0.3, max_recall_drop_vs_champion=0.05)
# Distance from the threshold, and whether the criterion must hold there.
OFFSETS = [(0.0, True), (1e-9, True), (0.001, True), (-1e-9, False), (-0.001, False)]
OFFSET_IDS = ["at", "above-1e-9", "above-0.001", "below-1e-9", "below-0.001"]


def _by_name(decision: GateDecision) -> dict[str, Criterion]:
    return {c.name: c for c in decision.criteria}


# --- each criterion at, above and below its threshold ----------------------------------------


@pytest.mark.parametrize(("offset", "passes"), OFFSETS, ids=OFFSET_IDS)
@pytest.mark.parametrize("min_recall", [0.8, 0.85, 0.9, 0.95])
def test_min_recall_boundary(min_recall: float, offset: float, passes: bool) -> None:
    thresholds = GateThresholds(min_recall, 0.3, 0.05)
    decision = decide({"recall": min_recall + offset, "precision": 0.9}, thresholds)
    criterion = _by_name(decision)["recall"]
    assert criterion.threshold == min_recall
    assert criterion.value == min_recall + offset
    assert criterion.passed is passes
    assert decision.passed is passes


@pytest.mark.parametrize(("offset", "passes"), OFFSETS, ids=OFFSET_IDS)
@pytest.mark.parametrize("min_precision", [0.1, 0.3, 0.7])
def test_min_precision_boundary(min_precision: float, offset: float, passes: bool) -> None:
    thresholds = GateThresholds(0.8, min_precision, 0.05)
    decision = decide({"recall": 0.95, "precision": min_precision + offset}, thresholds)
    criterion = _by_name(decision)["precision"]
    assert criterion.threshold == min_precision
    assert criterion.passed is passes
    assert decision.passed is passes


@pytest.mark.parametrize(("offset", "passes"), OFFSETS, ids=OFFSET_IDS)
@pytest.mark.parametrize(
    ("champion", "tolerance", "at"),
    [(0.9, 0.05, 0.85), (0.8, 0.1, 0.7), (0.93, 0.03, 0.9), (0.97, 0.0, 0.97), (0.7, 0.2, 0.5)],
)
def test_recall_vs_champion_boundary(
    champion: float, tolerance: float, at: float, offset: float, passes: bool
) -> None:
    thresholds = GateThresholds(0.3, 0.3, tolerance)
    decision = decide(
        {"recall": at + offset, "precision": 0.9}, thresholds, champion_metrics={"recall": champion}
    )
    criterion = _by_name(decision)["recall_vs_champion"]
    assert criterion.threshold == pytest.approx(champion - tolerance)
    assert criterion.value == at + offset
    assert criterion.passed is passes
    assert decision.passed is passes


def test_champion_point_nine_tolerance_point_zero_five_candidate_point_eight_five_passes() -> None:
    thresholds = GateThresholds(min_recall=0.8, min_precision=0.3, max_recall_drop_vs_champion=0.05)
    decision = decide(
        {"recall": 0.85, "precision": 0.5}, thresholds, champion_metrics={"recall": 0.9}
    )
    assert decision.passed is True
    assert all(c.passed for c in decision.criteria)


def test_champion_floor_off_by_one_ulp_still_passes_at_the_floor() -> None:
    assert 0.8 - 0.1 != 0.7  # the binary-float trap the "exactly at" rule must survive
    thresholds = GateThresholds(min_recall=0.5, min_precision=0.3, max_recall_drop_vs_champion=0.1)
    decision = decide({"recall": 0.7, "precision": 0.5}, thresholds, {"recall": 0.8})
    assert decision.passed is True


def test_recall_computed_from_counts_at_its_threshold_passes() -> None:
    # 0.7 + 0.1 is 0.7999999999999999 in binary floats: still "at" 0.8.
    decision = decide({"recall": 0.7 + 0.1, "precision": 0.3}, THRESHOLDS)
    assert decision.passed is True


# --- rules -----------------------------------------------------------------------------------


def test_first_run_rule_has_two_absolute_criteria() -> None:
    decision = decide({"recall": 0.9, "precision": 0.5}, THRESHOLDS)
    assert decision.first_model is True
    assert [c.name for c in decision.criteria] == ["recall", "precision"]
    assert decision.passed is True


def test_first_run_rule_ignores_candidate_same_rows() -> None:
    decision = decide(
        {"recall": 0.9, "precision": 0.5}, THRESHOLDS, candidate_same_rows={"recall": 0.1}
    )
    assert decision.first_model is True
    assert len(decision.criteria) == 2
    assert decision.passed is True


def test_with_a_champion_there_are_three_criteria() -> None:
    decision = decide(
        {"recall": 0.9, "precision": 0.5}, THRESHOLDS, champion_metrics={"recall": 0.92}
    )
    assert decision.first_model is False
    assert [c.name for c in decision.criteria] == ["recall", "precision", "recall_vs_champion"]
    assert decision.passed is True


@pytest.mark.parametrize(
    ("recall", "precision", "champion", "passes"),
    [
        (0.9, 0.5, None, True),
        (0.79, 0.5, None, False),  # recall floor
        (0.9, 0.29, None, False),  # precision floor
        (0.9, 0.5, 0.96, False),  # worse than champion by more than the tolerance
        (0.79, 0.5, 0.8, False),  # close to the champion but under the floor
        (0.99, 0.5, 0.7, True),  # better than the champion
    ],
)
def test_passed_only_when_every_criterion_holds(
    recall: float, precision: float, champion: float | None, passes: bool
) -> None:
    champion_metrics = None if champion is None else {"recall": champion}
    decision = decide({"recall": recall, "precision": precision}, THRESHOLDS, champion_metrics)
    assert decision.passed is passes
    assert decision.passed is all(c.passed for c in decision.criteria)


def test_candidate_same_rows_is_used_for_the_champion_comparison() -> None:
    champion = {"recall": 0.9}
    good_overall_bad_on_same_rows = decide(
        {"recall": 0.95, "precision": 0.5}, THRESHOLDS, champion,
        candidate_same_rows={"recall": 0.84, "precision": 0.5},
    )  # fmt: skip
    vs = _by_name(good_overall_bad_on_same_rows)["recall_vs_champion"]
    assert vs.value == 0.84
    assert vs.passed is False
    assert good_overall_bad_on_same_rows.passed is False

    bad_overall_good_on_same_rows = decide(
        {"recall": 0.82, "precision": 0.5}, THRESHOLDS, champion,
        candidate_same_rows={"recall": 0.88, "precision": 0.5},
    )  # fmt: skip
    criteria = _by_name(bad_overall_good_on_same_rows)
    assert criteria["recall"].value == 0.82
    assert criteria["recall_vs_champion"].value == 0.88
    assert bad_overall_good_on_same_rows.passed is True


def test_without_candidate_same_rows_the_test_metrics_are_compared() -> None:
    decision = decide({"recall": 0.84, "precision": 0.5}, THRESHOLDS, {"recall": 0.9})
    vs = _by_name(decision)["recall_vs_champion"]
    assert vs.value == 0.84
    assert vs.passed is False


@pytest.mark.parametrize(
    ("metrics", "same_rows", "failing"),
    [
        ({"recall": math.nan, "precision": 0.5}, None, ["recall", "recall_vs_champion"]),
        ({"recall": 0.9, "precision": math.nan}, None, ["precision"]),
        ({"recall": 0.9, "precision": 0.5}, {"recall": math.nan}, ["recall_vs_champion"]),
    ],
)
def test_nan_metric_fails_its_criterion(
    metrics: dict[str, float], same_rows: dict[str, float] | None, failing: list[str]
) -> None:
    decision = decide(metrics, THRESHOLDS, {"recall": 0.9}, candidate_same_rows=same_rows)
    assert decision.passed is False
    assert [c.name for c in decision.criteria if not c.passed] == failing


def test_nan_recall_fails_without_a_champion() -> None:
    decision = decide({"recall": math.nan, "precision": 0.5}, THRESHOLDS)
    assert decision.passed is False


@pytest.mark.parametrize("key", ["recall", "precision"])
def test_missing_metric_raises_key_error_naming_it(key: str) -> None:
    metrics = {"recall": 0.9, "precision": 0.5, "f1": 0.6}
    del metrics[key]
    with pytest.raises(KeyError, match=key):
        decide(metrics, THRESHOLDS)


# --- thresholds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_recall": -0.01}, "min_recall"),
        ({"min_recall": 1.01}, "min_recall"),
        ({"min_recall": math.nan}, "min_recall"),
        ({"min_precision": -0.5}, "min_precision"),
        ({"min_precision": 2.0}, "min_precision"),
        ({"min_precision": math.nan}, "min_precision"),
        ({"max_recall_drop_vs_champion": -0.01}, "max_recall_drop_vs_champion"),
    ],
)
def test_invalid_thresholds_raise_naming_the_threshold(kwargs: dict[str, float], name: str) -> None:
    values = {"min_recall": 0.8, "min_precision": 0.3, "max_recall_drop_vs_champion": 0.05}
    with pytest.raises(ValueError, match=name) as info:
        GateThresholds(**{**values, **kwargs})
    assert repr(kwargs[name]) in str(info.value)


def test_nan_max_recall_drop_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_recall_drop_vs_champion"):
        GateThresholds(min_recall=0.8, min_precision=0.3, max_recall_drop_vs_champion=math.nan)


@pytest.mark.parametrize("values", [(0.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.8, 0.3, 1.0)])
def test_thresholds_at_the_bounds_are_valid(values: tuple[float, float, float]) -> None:
    thresholds = GateThresholds(*values)
    assert (
        thresholds.min_recall,
        thresholds.min_precision,
        thresholds.max_recall_drop_vs_champion,
    ) == values


# --- reporting -------------------------------------------------------------------------------


def _mixed_decision() -> GateDecision:
    return decide(
        {"recall": 0.8123, "precision": 0.2512}, THRESHOLDS, champion_metrics={"recall": 0.9}
    )


def test_summary_names_every_criterion_value_threshold_and_verdict() -> None:
    decision = _mixed_decision()
    text = decision.summary()
    assert text.startswith("gate FAILED; ")
    assert "recall 0.8123 >= 0.8000: pass" in text
    assert "precision 0.2512 >= 0.3000: FAIL" in text
    assert "recall_vs_champion 0.8123 >= 0.8500: FAIL" in text
    assert "no champion" not in text


def test_summary_of_a_first_model() -> None:
    text = decide({"recall": 0.9, "precision": 0.5}, THRESHOLDS).summary()
    assert text.startswith("gate PASSED (no champion yet: absolute criteria only); ")
    assert "recall 0.9000 >= 0.8000: pass" in text
    assert "precision 0.5000 >= 0.3000: pass" in text
    assert "recall_vs_champion" not in text


def test_to_dict_holds_every_criterion_and_is_json_ready() -> None:
    decision = _mixed_decision()
    data = decision.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["passed"] is False
    assert data["first_model"] is False
    assert data["criteria"] == [
        {"name": "recall", "value": 0.8123, "threshold": 0.8, "comparison": ">=",
         "passed": True, "note": ""},
        {"name": "precision", "value": 0.2512, "threshold": 0.3, "comparison": ">=",
         "passed": False, "note": ""},
        {"name": "recall_vs_champion", "value": 0.8123, "threshold": pytest.approx(0.85),
         "comparison": ">=", "passed": False, "note": ""},
    ]  # fmt: skip


def test_criterion_describe() -> None:
    assert Criterion("recall", 0.91234, 0.8, ">=", True).describe() == (
        "recall 0.9123 >= 0.8000: pass"
    )
    assert Criterion("precision", 0.1, 0.3, ">=", False).describe() == (
        "precision 0.1000 >= 0.3000: FAIL"
    )


def test_the_decision_records_the_champion_it_compared_with() -> None:
    metrics = {"recall": 0.9, "precision": 0.5}
    decision = decide(metrics, THRESHOLDS, {"recall": 0.88}, champion_version="7")
    assert (decision.first_model, decision.champion_version) == (False, "7")
    assert _by_name(decision)["recall_vs_champion"].note == "champion version 7"
    assert decision.to_dict()["champion_version"] == "7"
    assert "recall_vs_champion 0.9000 >= 0.8300: pass (champion version 7)" in decision.summary()
    # no champion metrics: nothing was compared, whatever version is named
    first = decide(metrics, THRESHOLDS, champion_version="7")
    assert (first.first_model, first.champion_version) == (True, None)
    assert first.to_dict()["champion_version"] is None
