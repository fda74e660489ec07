"""Settings of the automation (sensors and schedules), read from the environment.

Every setting has a default that suits a laptop; a deployment changes them by
environment variable, without touching code. :data:`AUTOMATION_ENV` lists each
variable with its default and meaning (the configuration reference is generated
from it).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["AUTOMATION_ENV", "AutomationSettings", "EnvSetting"]


@dataclass(frozen=True)
class EnvSetting:
    """One environment variable: its name, default (as text) and meaning."""

    name: str
    default: str
    description: str


AUTOMATION_ENV: tuple[EnvSetting, ...] = (
    EnvSetting(
        "MLPLATFORM_AUTOMATION",
        "on",
        "'on': sensors and schedules start running when the daemon loads the code "
        "location; 'off': they start stopped (turn them on in the UI).",
    ),
    EnvSetting(
        "MLPLATFORM_SENSOR_INTERVAL",
        "30",
        "Seconds between two evaluations of each sensor.",
    ),
    EnvSetting(
        "MLPLATFORM_SENSOR_MAX_RUNS_PER_TICK",
        "50",
        "At most this many ingestion runs requested per tick; the rest follow on the "
        "next ticks (many files landing at once never time a tick out).",
    ),
    EnvSetting(
        "MLPLATFORM_RETRAIN_MIN_ROWS",
        "1000",
        "New stored rows since the last training that start a retraining run.",
    ),
    EnvSetting(
        "MLPLATFORM_DRIFT_WINDOW_ROWS",
        "500",
        "Rows a drift window needs: newly stored rows accumulate until then.",
    ),
    EnvSetting(
        "MLPLATFORM_DRIFT_MAX_ROWS",
        "50000",
        "At most this many rows of a window are tested (a uniform sample beyond).",
    ),
    EnvSetting(
        "MLPLATFORM_DRIFT_WINDOWS",
        "2",
        "Consecutive drifted windows needed before drift starts a retraining run.",
    ),
    EnvSetting(
        "MLPLATFORM_DRIFT_ALPHA",
        "0.01",
        "Family-wise significance level of the drift tests (Bonferroni-corrected across features).",
    ),
    EnvSetting(
        "MLPLATFORM_DRIFT_PSI",
        "0.2",
        "PSI a feature must also reach to count as drifted (effect size).",
    ),
    EnvSetting(
        "MLPLATFORM_DRIFT_NOVELTY",
        "0.05",
        "Share of a window's values outside what training saw (range or categories) that "
        "counts as a large shift by itself, however far the feature wanders naturally.",
    ),
    EnvSetting(
        "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES",
        "360",
        "After a retrain, drift and decay wait this long before requesting another.",
    ),
    EnvSetting(
        "MLPLATFORM_LIVE_RECALL_FLOOR",
        "0.6",
        "Live recall below this, in a window with enough positives, starts a retrain.",
    ),
    EnvSetting(
        "MLPLATFORM_LIVE_MIN_POSITIVES",
        "10",
        "True failures a window needs before its live recall is judged.",
    ),
    EnvSetting(
        "MLPLATFORM_ALERT_WEBHOOK",
        "",
        "URL that receives a JSON POST for every failed run (none: records only).",
    ),
    EnvSetting(
        "MLPLATFORM_AUTOMATED_RUN_CONFIG",
        "",
        "Path of a JSON file with the run config of automated training runs (e.g. "
        "fewer search iterations); none: the jobs' defaults.",
    ),
    EnvSetting(
        "MLPLATFORM_WINDOWS_START",
        "2024-01-01",
        "First day of the twelve-hour inference windows (UTC).",
    ),
)


def _raw(environ: Mapping[str, str], name: str) -> str:
    default = next(s.default for s in AUTOMATION_ENV if s.name == name)
    return environ.get(name, "").strip() or default


def _number(environ: Mapping[str, str], name: str, kind: type[int] | type[float]) -> Any:
    text = _raw(environ, name)
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a valid {kind.__name__}") from None
    # 'nan' and 'inf' parse as floats, and a NaN threshold compares False everywhere
    if not math.isfinite(value):
        raise ValueError(f"{name}={text!r} is not a finite number")
    if value < 0:
        raise ValueError(f"{name}={text!r} must not be negative")
    return value


def _minutes(environ: Mapping[str, str], name: str) -> timedelta:
    minutes = _number(environ, name, float)
    try:
        return timedelta(minutes=minutes)
    except OverflowError:
        raise ValueError(f"{name}={minutes:g} is too long a time") from None


def _date(environ: Mapping[str, str], name: str) -> str:
    text = _raw(environ, name)
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an ISO date (e.g. 2024-01-01)") from None
    return text


@dataclass(frozen=True)
class AutomationSettings:
    """The automation's settings (see :data:`AUTOMATION_ENV` for each one's meaning)."""

    enabled: bool
    sensor_interval: int
    max_runs_per_tick: int
    retrain_min_rows: int
    drift_window_rows: int
    drift_max_rows: int
    drift_windows: int
    drift_alpha: float
    drift_psi: float
    drift_novelty: float
    cooldown: timedelta
    live_recall_floor: float
    live_min_positives: int
    alert_webhook: str | None
    automated_run_config: str | None
    windows_start: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AutomationSettings:
        """The settings named by the environment (defaults where unset).

        Raises
        ------
        ValueError
            Naming the variable, for a value that is not a number or not allowed.
        """
        env = os.environ if environ is None else environ
        switch = _raw(env, "MLPLATFORM_AUTOMATION").lower()
        if switch not in ("on", "off"):
            raise ValueError(f"MLPLATFORM_AUTOMATION={switch!r}: use 'on' or 'off'")
        settings = cls(
            enabled=switch == "on",
            sensor_interval=max(1, _number(env, "MLPLATFORM_SENSOR_INTERVAL", int)),
            max_runs_per_tick=max(1, _number(env, "MLPLATFORM_SENSOR_MAX_RUNS_PER_TICK", int)),
            retrain_min_rows=_number(env, "MLPLATFORM_RETRAIN_MIN_ROWS", int),
            drift_window_rows=max(1, _number(env, "MLPLATFORM_DRIFT_WINDOW_ROWS", int)),
            drift_max_rows=max(1, _number(env, "MLPLATFORM_DRIFT_MAX_ROWS", int)),
            drift_windows=max(1, _number(env, "MLPLATFORM_DRIFT_WINDOWS", int)),
            drift_alpha=_number(env, "MLPLATFORM_DRIFT_ALPHA", float),
            drift_psi=_number(env, "MLPLATFORM_DRIFT_PSI", float),
            drift_novelty=_number(env, "MLPLATFORM_DRIFT_NOVELTY", float),
            cooldown=_minutes(env, "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES"),
            live_recall_floor=_number(env, "MLPLATFORM_LIVE_RECALL_FLOOR", float),
            live_min_positives=max(1, _number(env, "MLPLATFORM_LIVE_MIN_POSITIVES", int)),
            alert_webhook=_raw(env, "MLPLATFORM_ALERT_WEBHOOK") or None,
            automated_run_config=_raw(env, "MLPLATFORM_AUTOMATED_RUN_CONFIG") or None,
            windows_start=_date(env, "MLPLATFORM_WINDOWS_START"),
        )
        if not 0 < settings.drift_alpha < 1:
            raise ValueError(f"MLPLATFORM_DRIFT_ALPHA={settings.drift_alpha}: must be in (0, 1)")
        if settings.live_recall_floor > 1:
            raise ValueError(
                f"MLPLATFORM_LIVE_RECALL_FLOOR={settings.live_recall_floor}: must be at most 1"
            )
        return settings

    def run_config(self) -> dict[str, Any]:
        """The run config of automated training runs (empty: the jobs' defaults).

        Raises
        ------
        ValueError
            Naming the file, when it is missing or not a JSON object.
        """
        if self.automated_run_config is None:
            return {}
        path = Path(self.automated_run_config)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"MLPLATFORM_AUTOMATED_RUN_CONFIG: cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"MLPLATFORM_AUTOMATED_RUN_CONFIG: {path} must hold a JSON object")
        return data
