"""Continuous training, measured: a file lands, the daemon ingests it and retrains.

Starts a real ``dagster-daemon`` (the repository's workspace and dagster.yaml, on a
temp state), drops one CSV file of ``--rows`` generated rows into the landing
folder and measures:

- seconds from the file landing to its ingestion run starting (the new-data
  sensor's interval is stated: ``sensor_interval_s``);
- seconds from the file landing to a new champion being registered (ingestion run,
  then the retrain_on_new_rows sensor's training run: feature table, split,
  candidate search, evaluation, gate, MLflow registration, promotion);
- the training run's wall time, from its creation (queued by the sensor) to its end:
  queueing, launch of its process, imports, every step, events, MLflow.

The limit, in the same run: the same work done in one plain Python process with the
same configuration (the default candidate search, or one candidate with ``--quick``;
in both, a gate any model passes, since a refused candidate registers no champion
and the gate is not what is measured): the feature store read as of now, the
feature table, the split, the candidate search and refit, the test predictions,
metrics, bootstrap intervals, slices, permutation importance and the gate decision;
no Dagster, no Great Expectations check, no plots, no MLflow. Target: the training
run takes at most 1.5 times the limit (orchestration adds at most 50 %), i.e.
``ratio = limit / ours >= 0.667``.

    .venv/bin/python benchmarks/continuous_training.py              # 10,000 rows
    .venv/bin/python benchmarks/continuous_training.py --rows 3000 --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET = 1 / 1.5


def _run_config(quick: bool) -> dict[str, Any]:
    """The default candidate search (or one fast candidate), with a gate any model passes.

    The gate is not what is measured: on generated data the default precision floor
    may refuse the candidate, and a refused candidate registers no champion.
    """
    from mlplatform_tests.defs.helpers import LENIENT, gate_config

    gate = gate_config(
        min_recall=0.0, min_precision=0.0, max_recall_drop_vs_champion=1.0, min_slice_recall=0.0
    )
    return {"ops": {**(LENIENT["ops"] if quick else {}), **gate["ops"]}}


def plain_python(store_root: Path, run_config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """The training run's work in one plain Python process; (seconds, facts)."""
    from mlplatform.core.evaluation import (
        bootstrap_intervals,
        metrics_from_predictions,
        permutation_importances,
        slice_reports,
    )
    from mlplatform.core.features import build_feature_table, model_inputs
    from mlplatform.core.gate import GateThresholds, decide
    from mlplatform.core.schema import AI4I
    from mlplatform.core.selection import SelectionRule, search_and_fit
    from mlplatform.core.split import SPLIT_COLUMN, stratified_split
    from mlplatform.defs.evaluation import EvaluationConfig, GateConfig
    from mlplatform.defs.training import SplitConfig, TrainingConfig
    from mlplatform.resources.feature_store import FeatureStore

    ops = run_config.get("ops", {})
    split_cfg = SplitConfig(**ops.get("train_test_split", {}).get("config", {}))
    train_cfg = TrainingConfig(**ops.get("candidate_model", {}).get("config", {}))
    eval_cfg = EvaluationConfig(**ops.get("model_evaluation", {}).get("config", {}))
    gate_cfg = GateConfig(**ops.get("gate_decision", {}).get("config", {}))

    start = time.perf_counter()
    observations = FeatureStore(root=str(store_root)).as_of(AI4I)
    table = build_feature_table(observations, AI4I)
    labelled, _ = stratified_split(
        table, AI4I.target, test_size=split_cfg.test_size, seed=split_cfg.seed
    )
    train = labelled[labelled[SPLIT_COLUMN] == "train"]
    test = labelled[labelled[SPLIT_COLUMN] == "test"]
    caps = (
        None
        if train_cfg.max_fit_rows is None
        else dict.fromkeys(train_cfg.candidates, train_cfg.max_fit_rows)
    )
    outcome = search_and_fit(
        train,
        AI4I,
        train_cfg.candidates,
        rule=SelectionRule(target_recall=train_cfg.target_recall),
        n_iter=train_cfg.search_iterations,
        cv_folds=train_cfg.cv_folds,
        seed=train_cfg.seed,
        time_budget_s=train_cfg.time_budget_s,
        max_fit_rows=caps,
        n_jobs=train_cfg.search_jobs,
    )
    model = outcome.model
    x, y = model_inputs(test, AI4I), test[AI4I.target].to_numpy()
    scores = model.pipeline.predict_proba(x)[:, 1]
    predicted = model.pipeline.predict(x)
    report = metrics_from_predictions(y, predicted, scores)
    intervals = bootstrap_intervals(
        report,
        n_resamples=eval_cfg.bootstrap_resamples,
        level=eval_cfg.confidence_level,
        seed=model.seed,
    )
    slices = (
        slice_reports(y, predicted, test[eval_cfg.slice_column])
        if eval_cfg.slice_column is not None
        else {}
    )
    if eval_cfg.importance_repeats > 0:
        permutation_importances(
            model.pipeline, test, AI4I, repeats=eval_cfg.importance_repeats, seed=model.seed
        )
    decision = decide(
        report.metrics(),
        GateThresholds(
            min_recall=gate_cfg.min_recall,
            min_precision=gate_cfg.min_precision,
            max_recall_drop_vs_champion=gate_cfg.max_recall_drop_vs_champion,
            min_slice_recall=gate_cfg.min_slice_recall,
            min_slice_positives=gate_cfg.min_slice_positives,
        ),
        recall_interval=intervals.get("recall"),
        slices=slices,
    )
    seconds = time.perf_counter() - start
    return seconds, {
        "model": model.model_name,
        "recall": report.recall,
        "gate_passed": decision.passed,
        "rows": len(table),
    }


def _step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Wall seconds of each step of a run, from its start to its success or failure event."""
    from dagster import DagsterEventType

    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            begun = started.get(event.step_key)
            if begun is not None:
                seconds[event.step_key] = round(record.timestamp - begun, 2)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows in the landed file")
    parser.add_argument("--sensor-interval", type=int, default=5, help="sensor interval (s)")
    parser.add_argument(
        "--quick", action="store_true", help="one fast candidate instead of the full search"
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait in all")
    args = parser.parse_args()

    from mlflow import MlflowClient

    from mlplatform.core.generator import generate_ai4i
    from mlplatform.core.schema import AI4I
    from mlplatform_tests.daemon import LocalDaemon, finished, runs

    run_config = _run_config(args.quick)
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        daemon = LocalDaemon(
            Path(tmp) / "state",
            sensor_interval=args.sensor_interval,
            run_config=run_config,
            env={"MLPLATFORM_RETRAIN_MIN_ROWS": str(args.rows)},
        )
        frame = generate_ai4i(args.rows, seed=7, start_udi=1, burn_in=5_000)
        staged = daemon.paths.root / "readings.csv"
        frame.to_csv(staged, index=False)
        daemon.start()
        try:
            instance = daemon.instance()
            # let the daemon load the code location and tick once before the file lands
            daemon.wait_for(
                "the first tick of the new-data sensor",
                lambda: True if "sensor: new_source_batches" in daemon.log_tail(2000) else None,
                300,
            )
            landed_at = time.time()
            staged.rename(daemon.paths.landing / "readings.csv")
            [ingest] = daemon.wait_for(
                "the ingestion run to start",
                lambda: [r for r in runs(instance, "ingest") if r.start_time] or None,
                args.timeout,
                every=0.2,
            )
            to_ingest_start = float(ingest.start_time or 0) - landed_at
            [training] = daemon.wait_for(
                "the training run to end",
                lambda: finished(runs(instance, "train_and_score")) or None,
                args.timeout,
            )
            if not training.dagster_run.is_success:
                raise SystemExit(f"training run failed:\n{daemon.log_tail()}")
            uri = daemon.paths.mlflow_tracking_uri
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            version = client.get_model_version_by_alias(AI4I.registered_model_name, "champion")
            to_champion = version.creation_timestamp / 1000 - landed_at
            ours = float(training.end_time or 0) - training.create_timestamp.timestamp()
            executing = float(training.end_time or 0) - float(training.start_time or 0)
            to_end = float(training.end_time or 0) - landed_at
            steps = _step_seconds(instance, training.dagster_run.run_id)
        finally:
            daemon.stop()
        limit, facts = plain_python(daemon.paths.feature_store, run_config)
    ratio = limit / ours
    result = {
        "benchmark": "continuous_training",
        "rows": facts["rows"],
        "config": "quick (one candidate)" if args.quick else "default candidate search",
        "sensor_interval_s": args.sensor_interval,
        "landing_to_ingest_run_start_s": round(to_ingest_start, 2),
        "landing_to_champion_registered_s": round(to_champion, 2),
        "landing_to_end_of_training_run_s": round(to_end, 2),
        "training_run_s": round(ours, 2),
        "training_run_executing_s": round(executing, 2),
        "plain_python_s": round(limit, 2),
        "overhead_pct": round(100 * (ours / limit - 1), 1),
        "training_run_steps_s": steps,
        "model": facts["model"],
        "ratio": round(ratio, 3),
        "target": round(TARGET, 3),
        "meets_target": ratio >= TARGET,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
