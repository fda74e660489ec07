"""A degraded candidate is never promoted: shuffled labels, or no derived features.

Runs on the real AI4I file over 20 split seeds, with the gate's default thresholds
and the first-run rule (no champion to compare with: the most permissive case).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.evaluation import bootstrap_intervals, evaluate, slice_reports
from mlplatform.core.features import build_feature_table, model_inputs
from mlplatform.core.gate import GateThresholds, decide
from mlplatform.core.ingest import type_and_validate
from mlplatform.core.models import train_candidate
from mlplatform.core.schema import AI4I
from mlplatform.core.split import SPLIT_COLUMN, stratified_split
from mlplatform.defs.evaluation import GateConfig

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

SEEDS = range(20)
RAW_ONLY = dataclasses.replace(AI4I, derived=())


@pytest.fixture(scope="module")
def table(real_ai4i: Path) -> pd.DataFrame:
    raw = pd.read_csv(real_ai4i, dtype=str, keep_default_na=False)
    return build_feature_table(type_and_validate(raw, AI4I, real_ai4i.name).valid, AI4I)


def _default_thresholds() -> GateThresholds:
    config = GateConfig()
    return GateThresholds(
        min_recall=config.min_recall,
        min_precision=config.min_precision,
        max_recall_drop_vs_champion=config.max_recall_drop_vs_champion,
        min_slice_recall=config.min_slice_recall,
        min_slice_positives=config.min_slice_positives,
    )


def _gate(
    table: pd.DataFrame, seed: int, *, shuffle: bool, spec: object, threshold: str
) -> tuple[bool, str]:
    split, _ = stratified_split(table, AI4I.target, test_size=0.3, seed=seed)
    train = split[split[SPLIT_COLUMN] == "train"].copy()
    test = split[split[SPLIT_COLUMN] == "test"]
    if shuffle:
        labels = train[AI4I.target].to_numpy()
        train[AI4I.target] = np.random.default_rng(seed).permutation(labels)
    trained = train_candidate(
        train,
        spec,  # type: ignore[arg-type]
        model_name="hist_gradient_boosting",
        seed=seed,
        threshold=threshold,  # type: ignore[arg-type]
    )
    report = evaluate(trained.pipeline, test, spec)  # type: ignore[arg-type]
    predicted = trained.pipeline.predict(model_inputs(test, spec))  # type: ignore[arg-type]
    decision = decide(
        report.metrics(),
        _default_thresholds(),
        recall_interval=bootstrap_intervals(report, seed=seed)["recall"],
        slices=slice_reports(test[AI4I.target].to_numpy(), predicted, test["type"]),
    )
    return decision.passed, decision.summary()


# Both ways a candidate gets its threshold: the default 0.5 (the degraded model's recall
# is then low: its interval's lower bound stays below the minimum recall) and tuned on
# out-of-fold predictions to the target recall (its precision then falls below the
# floor). Measured with the default gate on these 20 seeds: the raw-features model's
# highest lower bound is 0.667 (min_recall 0.70), its highest tuned precision 0.416
# (floor 0.50).
@pytest.mark.parametrize("threshold", ["default", "tune"])
@pytest.mark.parametrize("degradation", ["shuffled_labels", "no_derived_features"])
def test_degraded_candidate_never_passes(
    table: pd.DataFrame, degradation: str, threshold: str
) -> None:
    passed = {}
    for seed in SEEDS:
        ok, summary = _gate(
            table,
            seed,
            shuffle=degradation == "shuffled_labels",
            spec=RAW_ONLY if degradation == "no_derived_features" else AI4I,
            threshold=threshold,
        )
        passed[seed] = summary if ok else None
    promoted = {s: summary for s, summary in passed.items() if summary}
    assert not promoted, f"{degradation} ({threshold} threshold) passed the gate for {promoted}"


def test_full_candidate_passes_on_most_seeds(table: pd.DataFrame) -> None:
    # the control: the same gate is not simply rejecting everything
    # with the threshold tuned to the target recall, as the candidate search does
    results = [_gate(table, seed, shuffle=False, spec=AI4I, threshold="tune")[0] for seed in SEEDS]
    assert sum(results) >= 15, f"only {sum(results)} of 20 seeds passed"
