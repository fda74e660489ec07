"""The README's two worked examples for data scientists, run as written in docs/examples/.

- adding a model candidate: the ``Candidate(...)`` entry is taken from the doc, added
  to ``CANDIDATES``, and searched through the real assets up to scoring;
- pointing the platform at a new dataset: the YAML spec is taken from the doc, a pump
  CSV with its own columns and target is generated, and ``mlplatform run`` /
  ``champion`` / ``score`` run in subprocesses with ``MLPLATFORM_DATASET`` set (the
  spec is read when the code location loads), nothing else changed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform.core.schema import Role, load_dataset_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
BIN = Path(sys.executable).parent


def _code_blocks(doc: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", doc.read_text(), re.MULTILINE | re.DOTALL)


# --- adding a model candidate -----------------------------------------------------------------


def _candidate_from_doc() -> Any:
    """The ``Candidate(...)`` of the doc: its imports run, its last expression evaluated."""
    from mlplatform.core.models import Candidate

    [block] = _code_blocks(EXAMPLES / "add-a-candidate.md", "python")
    tree = ast.parse(block)
    *setup, last = tree.body
    assert isinstance(last, ast.Expr), "the example must end with the Candidate(...) entry"
    namespace: dict[str, Any] = {"Candidate": Candidate}
    exec(compile(ast.Module(body=setup, type_ignores=[]), "example", "exec"), namespace)
    return eval(compile(ast.Expression(body=last.value), "example", "eval"), namespace)


@pytest.mark.slow
def test_a_candidate_added_as_documented_is_trained_gated_registered_and_served(
    resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlplatform.core.models import CANDIDATES
    from mlplatform.defs.registry import CANDIDATE_TAG
    from mlplatform_tests.defs.helpers import LENIENT, land_sample, materialize_all

    candidate = _candidate_from_doc()
    assert candidate.name == "extra_trees" and candidate.name not in CANDIDATES
    monkeypatch.setitem(CANDIDATES, candidate.name, candidate)
    land_sample(resources, 2_500, seed=21)
    config = {
        "ops": {
            **LENIENT["ops"],
            "candidate_model": {
                "config": {"candidates": [candidate.name], "search_iterations": 2, "cv_folds": 3}
            },
        }
    }
    result = materialize_all(resources, config)
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    [trained] = result.asset_materializations_for_node("candidate_model")
    assert trained.metadata["model_name"].value == "extra_trees"
    assert "extra_trees" in trained.metadata["candidates"].value  # the search's table
    [evaluated] = result.asset_materializations_for_node("model_evaluation")
    assert 0.0 <= evaluated.metadata["recall"].value <= 1.0
    decision = result.output_for_node("gate_decision")
    assert decision.passed

    registry = resources["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None
    assert registry.version_tags(champion)[CANDIDATE_TAG] == "extra_trees"
    classifier = registry.load(champion).named_steps["classifier"].estimator
    assert type(classifier).__name__ == "ExtraTreesClassifier"
    # the new batch was scored by it
    predictions = resources["prediction_store"].files()
    assert predictions
    scored = pd.read_parquet(predictions[-1])
    assert set(scored["model_version"]) == {champion.version} and len(scored) == 2_500


# --- pointing the platform at a new dataset ---------------------------------------------------

SITES = ("north", "south", "east")


def pump_readings(rows: int, *, seed: int, start_id: int = 1, label: bool = True) -> pd.DataFrame:
    """Pump inspections whose leaks follow a rule on the pressure drop per flow and vibration."""
    rng = np.random.default_rng(seed)
    inlet = rng.uniform(8.0, 16.0, rows)
    flow = rng.uniform(40.0, 260.0, rows)
    outlet = inlet - rng.gamma(2.0, 1.2, rows)
    vibration = rng.gamma(3.0, 1.4, rows)
    age = rng.integers(30, 6_000, rows)
    drop_per_flow = (inlet - outlet) / (flow + 1)
    leak = ((drop_per_flow > 0.035) & (vibration > 3.0)) | (vibration > 11.5)
    flip = rng.random(rows) < 0.003
    frame = pd.DataFrame(
        {
            "Reading ID": np.arange(start_id, start_id + rows),
            "Measured at": pd.date_range("2026-03-01", periods=rows, freq="5min", tz="UTC")
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_numpy(),
            "Site": rng.choice(SITES, rows),
            "Inlet pressure [bar]": inlet.round(2),
            "Outlet pressure [bar]": outlet.clip(0.0).round(2),
            "Flow [l/min]": flow.round(1),
            "Vibration [mm/s]": vibration.round(2),
            "Pump age [days]": age,
        }
    )
    if label:
        frame["Leak"] = (leak ^ flip).astype(int)
        frame["Technician note"] = np.where(frame["Leak"] == 1, "seal replaced", "")
    return frame


def _commands_of_step_2() -> list[list[str]]:
    """The ``mlplatform`` commands of the doc's step 2, as argv lists."""
    [shell] = [b for b in _code_blocks(EXAMPLES / "new-dataset.md", "bash") if "mlplatform" in b]
    return [
        line.split("#")[0].split()[1:]
        for line in shell.splitlines()
        if line.startswith(".venv/bin/mlplatform")
    ]


def test_the_documented_spec_is_the_pump_dataset(tmp_path: Path) -> None:
    [block] = _code_blocks(EXAMPLES / "new-dataset.md", "yaml")
    path = tmp_path / "pumps.yaml"
    path.write_text(block)
    spec = load_dataset_spec(path)
    assert spec.name == "pumps" and spec.target == "leak" and spec.entity_id == "reading_id"
    assert spec.model_features == [
        "inlet_pressure_bar",
        "outlet_pressure_bar",
        "flow_lpm",
        "vibration_mm_s",
        "pump_age_days",
        "pressure_drop_bar",
        "drop_per_flow",
        "site",
    ]
    assert spec.names(Role.LEAKAGE) == ["technician_note"]
    frame = pump_readings(50, seed=1).rename(columns=spec.source_to_name)
    derived = spec.derived[1].compute(frame)
    expected = (frame.inlet_pressure_bar - frame.outlet_pressure_bar) / (frame.flow_lpm + 1)
    np.testing.assert_allclose(derived.to_numpy(), expected.to_numpy())
    # every column of the generated file is declared, under its header
    assert set(pump_readings(5, seed=1).columns) == {c.source for c in spec.columns}
    # the same spec as JSON and TOML-free mapping gives the same dataset
    as_json = tmp_path / "pumps.json"
    as_json.write_text(json.dumps(yaml.safe_load(block)))
    assert load_dataset_spec(as_json).model_features == spec.model_features


@pytest.mark.slow
@pytest.mark.e2e
def test_a_new_dataset_runs_end_to_end_by_configuration_alone(tmp_path: Path) -> None:
    [block] = _code_blocks(EXAMPLES / "new-dataset.md", "yaml")
    spec_file = tmp_path / "pumps.yaml"
    spec_file.write_text(block)
    state = tmp_path / "pumps-state"
    (state / "landing").mkdir(parents=True)
    pump_readings(3_000, seed=5).to_csv(state / "landing" / "pumps.csv", index=False)
    new = pump_readings(400, seed=6, start_id=10_001, label=False)
    new.to_csv(tmp_path / "new_readings.csv", index=False)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLPLATFORM_", "MLFLOW_"))},
        "MLPLATFORM_DATASET": str(spec_file),
        "MLPLATFORM_HOME": str(state),
    }
    env.pop("DAGSTER_HOME", None)

    def mlplatform(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "mlplatform"), *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    run, champion, score = _commands_of_step_2()
    assert run == ["run"] and champion == ["champion"] and score[0] == "score"
    # one fast candidate keeps the test short; the doc's plain `run` searches them all
    ran = mlplatform(*run, "--model", "hist_gradient_boosting")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "dataset 'pumps': no sample data generated" in ran.stdout
    assert "generated sample rows" not in ran.stdout
    assert re.search(
        r"ingested pumps\.csv \(file-[0-9a-f]{16}\): 3,000 landed, 3,000 stored", ran.stdout
    )
    assert "gate PASSED" in ran.stdout
    # per-site recall was judged (the spec's slice column)
    assert all(f"recall[{site}]" in ran.stdout for site in SITES)

    shown = mlplatform(*champion)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    [uri] = re.findall(r"^champion:\s+models:/(\S+)/1 \(= @champion\)$", shown.stdout, re.M)
    registered_name = uri
    assert re.search(r"^gate:\s+PASSED", shown.stdout, re.M)

    # the registered model saw the pump features, and only them
    db = sqlite3.connect(state / "mlflow" / "mlflow.db")
    [(features,)] = db.execute("SELECT value FROM params WHERE key = 'features'").fetchall()
    [(dataset,)] = db.execute("SELECT value FROM tags WHERE key = 'dataset'").fetchall()
    db.close()
    assert dataset == "pumps"
    assert features.split(",") == [
        "inlet_pressure_bar",
        "outlet_pressure_bar",
        "flow_lpm",
        "vibration_mm_s",
        "pump_age_days",
        "pressure_drop_bar",
        "drop_per_flow",
        "site",
    ]

    # the landed batch was scored by the champion during the run
    batches = [p for p in (state / "predictions").iterdir() if p.name.startswith("file-")]
    [batch] = batches
    scored = pd.read_parquet(batch / "v1")
    assert len(scored) == 3_000 and sorted(scored["entity_id"]) == list(range(1, 3_001))
    assert set(scored["model_name"]) == {registered_name}

    # and a new file without the label is scored by the champion
    out = tmp_path / score[score.index("--out") + 1]
    scored_new = mlplatform(*score)
    assert scored_new.returncode == 0, scored_new.stdout + scored_new.stderr
    predictions = pd.read_parquet(out)
    assert sorted(predictions["entity_id"]) == list(range(10_001, 10_401))
    leaky = pump_readings(400, seed=6, start_id=10_001)
    truth = leaky.set_index("Reading ID")["Leak"].loc[predictions["entity_id"]].to_numpy()
    recall = (predictions["predicted_failure"].to_numpy() & truth).sum() / max(1, truth.sum())
    assert recall >= 0.7, recall  # the model learned the pumps' rule, not noise
