"""Unit tests of the automation's settings (mlplatform.core.automation_settings)."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest

from mlplatform.core.automation_settings import AUTOMATION_ENV, AutomationSettings

DEFAULTS = AutomationSettings(
    enabled=True,
    sensor_interval=30,
    max_runs_per_tick=50,
    retrain_min_rows=1000,
    drift_window_rows=500,
    drift_max_rows=50000,
    drift_windows=2,
    drift_alpha=0.01,
    drift_psi=0.2,
    drift_novelty=0.05,
    cooldown=timedelta(hours=6),
    live_recall_floor=0.6,
    live_min_positives=10,
    alert_webhook=None,
    automated_run_config=None,
    windows_start="2024-01-01",
)


def test_defaults_when_nothing_is_set() -> None:
    assert AutomationSettings.from_env({}) == DEFAULTS


def test_blank_values_mean_the_default() -> None:
    blank = {s.name: "  " for s in AUTOMATION_ENV}
    assert AutomationSettings.from_env(blank) == DEFAULTS


def test_every_variable_is_documented_once_and_its_default_parses() -> None:
    names = [s.name for s in AUTOMATION_ENV]
    assert len(names) == len(set(names))
    assert all(n.startswith("MLPLATFORM_") for n in names)
    assert all(s.description for s in AUTOMATION_ENV)
    # the documented defaults, given explicitly, are the defaults
    explicit = {s.name: s.default for s in AUTOMATION_ENV}
    assert AutomationSettings.from_env(explicit) == DEFAULTS
    assert len(names) == len(dataclasses.fields(AutomationSettings))


def test_every_setting_is_read_from_its_variable() -> None:
    env = {
        "MLPLATFORM_AUTOMATION": " OFF ",
        "MLPLATFORM_SENSOR_INTERVAL": "5",
        "MLPLATFORM_SENSOR_MAX_RUNS_PER_TICK": "7",
        "MLPLATFORM_RETRAIN_MIN_ROWS": "0",
        "MLPLATFORM_DRIFT_WINDOW_ROWS": "200",
        "MLPLATFORM_DRIFT_MAX_ROWS": "9000",
        "MLPLATFORM_DRIFT_WINDOWS": "3",
        "MLPLATFORM_DRIFT_ALPHA": "0.05",
        "MLPLATFORM_DRIFT_PSI": "0.1",
        "MLPLATFORM_DRIFT_NOVELTY": "0.1",
        "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES": "1.5",
        "MLPLATFORM_LIVE_RECALL_FLOOR": "0.75",
        "MLPLATFORM_LIVE_MIN_POSITIVES": "4",
        "MLPLATFORM_ALERT_WEBHOOK": "http://127.0.0.1:9/hook",
        "MLPLATFORM_AUTOMATED_RUN_CONFIG": "/etc/mlplatform/run.json",
        "MLPLATFORM_WINDOWS_START": "2025-06-01",
    }
    assert env.keys() == {s.name for s in AUTOMATION_ENV}
    assert AutomationSettings.from_env(env) == AutomationSettings(
        enabled=False,
        sensor_interval=5,
        max_runs_per_tick=7,
        retrain_min_rows=0,
        drift_window_rows=200,
        drift_max_rows=9000,
        drift_windows=3,
        drift_alpha=0.05,
        drift_psi=0.1,
        drift_novelty=0.1,
        cooldown=timedelta(seconds=90),
        live_recall_floor=0.75,
        live_min_positives=4,
        alert_webhook="http://127.0.0.1:9/hook",
        automated_run_config="/etc/mlplatform/run.json",
        windows_start="2025-06-01",
    )


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in AUTOMATION_ENV:
        monkeypatch.delenv(setting.name, raising=False)
    monkeypatch.setenv("MLPLATFORM_DRIFT_WINDOWS", "4")
    monkeypatch.setenv("MLPLATFORM_RETRAIN_COOLDOWN_MINUTES", "0")
    settings = AutomationSettings.from_env()
    assert settings.drift_windows == 4
    assert settings.cooldown == timedelta(0)
    assert settings.sensor_interval == 30


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("MLPLATFORM_SENSOR_INTERVAL", "sensor_interval"),
        ("MLPLATFORM_SENSOR_MAX_RUNS_PER_TICK", "max_runs_per_tick"),
        ("MLPLATFORM_DRIFT_WINDOW_ROWS", "drift_window_rows"),
        ("MLPLATFORM_DRIFT_MAX_ROWS", "drift_max_rows"),
        ("MLPLATFORM_DRIFT_WINDOWS", "drift_windows"),
        ("MLPLATFORM_LIVE_MIN_POSITIVES", "live_min_positives"),
    ],
)
def test_counts_that_cannot_be_zero_are_at_least_one(name: str, field: str) -> None:
    assert getattr(AutomationSettings.from_env({name: "0"}), field) == 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MLPLATFORM_AUTOMATION", "maybe", "MLPLATFORM_AUTOMATION='maybe': use 'on' or 'off'"),
        (
            "MLPLATFORM_SENSOR_INTERVAL",
            "abc",
            "MLPLATFORM_SENSOR_INTERVAL='abc' is not a valid int",
        ),
        (
            "MLPLATFORM_RETRAIN_MIN_ROWS",
            "1.5",
            "MLPLATFORM_RETRAIN_MIN_ROWS='1.5' is not a valid int",
        ),
        ("MLPLATFORM_DRIFT_WINDOWS", "-2", "MLPLATFORM_DRIFT_WINDOWS='-2' must not be negative"),
        ("MLPLATFORM_DRIFT_ALPHA", "one", "MLPLATFORM_DRIFT_ALPHA='one' is not a valid float"),
        ("MLPLATFORM_DRIFT_ALPHA", "0", "MLPLATFORM_DRIFT_ALPHA=0.0: must be in (0, 1)"),
        ("MLPLATFORM_DRIFT_ALPHA", "1", "MLPLATFORM_DRIFT_ALPHA=1.0: must be in (0, 1)"),
        ("MLPLATFORM_DRIFT_ALPHA", "nan", "MLPLATFORM_DRIFT_ALPHA='nan' is not a finite number"),
        ("MLPLATFORM_DRIFT_PSI", "inf", "MLPLATFORM_DRIFT_PSI='inf' is not a finite number"),
        ("MLPLATFORM_DRIFT_PSI", "-0.1", "MLPLATFORM_DRIFT_PSI='-0.1' must not be negative"),
        (
            "MLPLATFORM_LIVE_RECALL_FLOOR",
            "1.2",
            "MLPLATFORM_LIVE_RECALL_FLOOR=1.2: must be at most 1",
        ),
        (
            "MLPLATFORM_LIVE_RECALL_FLOOR",
            "NaN",
            "MLPLATFORM_LIVE_RECALL_FLOOR='NaN' is not a finite number",
        ),
        (
            "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES",
            "nan",
            "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES='nan' is not a finite number",
        ),
        (
            "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES",
            "1e20",
            "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES=1e+20 is too long a time",
        ),
        (
            "MLPLATFORM_WINDOWS_START",
            "2024-13-01",
            "MLPLATFORM_WINDOWS_START='2024-13-01' is not an ISO date",
        ),
        (
            "MLPLATFORM_WINDOWS_START",
            "yesterday",
            "MLPLATFORM_WINDOWS_START='yesterday' is not an ISO date",
        ),
    ],
)
def test_bad_values_are_errors_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        AutomationSettings.from_env({name: value})
    assert str(error.value).startswith(message)


def test_windows_start_may_be_a_full_timestamp() -> None:
    stamp = "2024-02-01T12:00:00+00:00"
    assert AutomationSettings.from_env({"MLPLATFORM_WINDOWS_START": stamp}).windows_start == stamp


# --- the run config of automated training runs -------------------------------------------


def _with_run_config(path: Path | str) -> AutomationSettings:
    return AutomationSettings.from_env({"MLPLATFORM_AUTOMATED_RUN_CONFIG": str(path)})


def test_no_run_config_file_means_the_jobs_defaults() -> None:
    assert DEFAULTS.run_config() == {}


def test_run_config_from_a_json_file(tmp_path: Path) -> None:
    config = {"ops": {"candidate_model": {"config": {"search_iterations": 2}}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    assert _with_run_config(path).run_config() == config


def test_missing_run_config_file_is_an_error_naming_variable_and_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ValueError) as error:
        _with_run_config(path).run_config()
    message = str(error.value)
    assert message.startswith("MLPLATFORM_AUTOMATED_RUN_CONFIG: cannot read ")
    assert str(path) in message


def test_run_config_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("ops: {candidate_model: {}}")  # YAML, not JSON
    with pytest.raises(
        ValueError, match=r"MLPLATFORM_AUTOMATED_RUN_CONFIG: cannot read .*run\.json"
    ):
        _with_run_config(path).run_config()


@pytest.mark.parametrize("body", ["[1, 2]", '"ops"', "3", "null"])
def test_run_config_that_is_not_a_json_object_is_an_error(tmp_path: Path, body: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(body)
    with pytest.raises(ValueError) as error:
        _with_run_config(path).run_config()
    assert str(error.value) == (f"MLPLATFORM_AUTOMATED_RUN_CONFIG: {path} must hold a JSON object")
