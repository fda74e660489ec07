"""The recall gate: a pure decision on whether a candidate may become champion.

Missing a machine that needs maintenance costs far more than a false alarm, so
recall decides; a precision floor keeps a model that flags everything out. When a
champion exists, the candidate must not be worse than it by more than a tolerance,
both scored on the same test rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from mlplatform.core.evaluation import Interval, SliceReport

__all__ = ["Criterion", "GateDecision", "GateThresholds", "decide"]


@dataclass(frozen=True)
class GateThresholds:
    """Configured thresholds of the gate (never literals in asset code)."""

    min_recall: float
    min_precision: float
    max_recall_drop_vs_champion: float
    min_slice_recall: float = 0.0
    min_slice_positives: int = 10

    def __post_init__(self) -> None:
        for name in ("min_recall", "min_precision", "min_slice_recall"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ValueError(f"gate threshold {name} must be in [0, 1], got {value!r}")
        if not self.max_recall_drop_vs_champion >= 0.0:  # also rejects NaN
            raise ValueError(
                "gate threshold max_recall_drop_vs_champion must be >= 0, "
                f"got {self.max_recall_drop_vs_champion!r}"
            )
        if self.min_slice_positives < 1:
            raise ValueError(
                f"gate threshold min_slice_positives must be >= 1, got {self.min_slice_positives}"
            )


@dataclass(frozen=True)
class Criterion:
    """One criterion: the value measured, the threshold, and whether it held."""

    name: str
    value: float
    threshold: float
    comparison: str
    passed: bool
    note: str = ""

    def describe(self) -> str:
        """One line, e.g. ``recall 0.912 >= 0.800: pass``."""
        verdict = "pass" if self.passed else "FAIL"
        note = f" ({self.note})" if self.note else ""
        return (
            f"{self.name} {self.value:.4f} {self.comparison} {self.threshold:.4f}: {verdict}{note}"
        )


@dataclass(frozen=True)
class GateDecision:
    """The gate's structured decision, with every criterion.

    ``champion_version`` is the champion the candidate was compared with (None when
    there was none: ``first_model``). A promotion acts on the decision only while that
    version still is the champion: a challenger must have beaten the current one.
    """

    passed: bool
    criteria: tuple[Criterion, ...]
    first_model: bool
    champion_version: str | None = None

    def summary(self) -> str:
        """Human-readable verdict with each criterion."""
        head = "PASSED" if self.passed else "FAILED"
        rule = " (no champion yet: absolute criteria only)" if self.first_model else ""
        return f"gate {head}{rule}; " + "; ".join(c.describe() for c in self.criteria)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, for metadata and model-version tags."""
        return {
            "passed": self.passed,
            "first_model": self.first_model,
            "champion_version": self.champion_version,
            "criteria": [asdict(c) for c in self.criteria],
        }


# Metrics and thresholds are decimals held in binary floats: a value "exactly at"
# its threshold (0.9 - 0.05 vs 0.85) must pass, so compare with a tiny slack.
_EPS = 1e-12


def _at_least(name: str, value: float, threshold: float, note: str = "") -> Criterion:
    ok = not math.isnan(value) and value >= threshold - _EPS
    return Criterion(name, value, threshold, ">=", ok, note)


def decide(
    metrics: Mapping[str, float],
    thresholds: GateThresholds,
    champion_metrics: Mapping[str, float] | None = None,
    candidate_same_rows: Mapping[str, float] | None = None,
    *,
    recall_interval: Interval | None = None,
    slices: Mapping[str, SliceReport] | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """Decide whether a candidate passes the gate.

    Parameters
    ----------
    metrics : mapping
        The candidate's test metrics; must hold ``recall`` and ``precision``.
    thresholds : GateThresholds
        The configured thresholds.
    champion_metrics : mapping, optional
        The current champion's metrics on the *same* test rows. None when there is
        no champion: then only the absolute criteria apply (the first-run rule).
    candidate_same_rows : mapping, optional
        The candidate's metrics on exactly the rows the champion was scored on
        (test rows the champion never trained on); defaults to ``metrics``.
    recall_interval : Interval, optional
        Bootstrap interval of the recall: when given, its *lower bound* must reach
        ``min_recall`` (a lucky test split cannot pass a weak model).
    slices : mapping, optional
        Per-slice reports (e.g. by product type): each slice with at least
        ``min_slice_positives`` positives must reach ``min_slice_recall``; smaller
        slices are reported and not judged.
    champion_version : str, optional
        The version whose ``champion_metrics`` these are: recorded in the decision
        (and named in the ``recall_vs_champion`` criterion), so that a promotion can
        refuse when the champion has changed since.

    Returns
    -------
    GateDecision
        Passed only if every criterion holds. A NaN metric fails its criterion.
    """
    for key in ("recall", "precision"):
        if key not in metrics:
            raise KeyError(f"gate needs metric {key!r}; got {sorted(metrics)}")
    if recall_interval is not None:
        recall = _at_least(
            "recall_ci_lower",
            recall_interval.low,
            thresholds.min_recall,
            f"{recall_interval.level:.0%} interval {recall_interval.low:.4f}-"
            f"{recall_interval.high:.4f} around {recall_interval.estimate:.4f}",
        )
    else:
        recall = _at_least("recall", float(metrics["recall"]), thresholds.min_recall)
    criteria = [
        recall,
        _at_least("precision", float(metrics["precision"]), thresholds.min_precision),
    ]
    for key, report in sorted((slices or {}).items()):
        name = f"recall[{key}]"
        if report.n_positive < thresholds.min_slice_positives:
            criteria.append(
                Criterion(
                    name,
                    report.recall,
                    thresholds.min_slice_recall,
                    ">=",
                    True,
                    f"not judged: {report.n_positive} positives < {thresholds.min_slice_positives}",
                )
            )
        else:
            criteria.append(
                _at_least(
                    name,
                    report.recall,
                    thresholds.min_slice_recall,
                    f"{report.n_positive} positives",
                )
            )
    if champion_metrics is not None:
        floor = float(champion_metrics["recall"]) - thresholds.max_recall_drop_vs_champion
        same_rows = candidate_same_rows if candidate_same_rows is not None else metrics
        note = f"champion version {champion_version}" if champion_version is not None else ""
        criteria.append(_at_least("recall_vs_champion", float(same_rows["recall"]), floor, note))
    return GateDecision(
        passed=all(c.passed for c in criteria),
        criteria=tuple(criteria),
        first_model=champion_metrics is None,
        champion_version=champion_version if champion_metrics is not None else None,
    )
