"""Continuous evaluation: drift of recent rows, live performance, and when to retrain.

Pure functions the monitoring sensors and assets call:

- :func:`feature_drift`: recent feature rows against the champion's
  :class:`~mlplatform.core.serving.TrainingReference`, per feature: a
  Kolmogorov-Smirnov test for numeric features (against the reference's quantile
  sketch), a chi-squared test for categorical ones, and the PSI of both, with a
  Bonferroni correction for testing many features at once;
- :func:`decide_drift`: a drift verdict needs ``windows_needed`` consecutive drifted
  windows, and no retrain is requested during the cooldown after a retrain (so the
  sensor neither flaps nor storms);
- :class:`OutcomeParser` (:func:`parse_outcomes` for one frame), :func:`join_outcomes`,
  :func:`live_metrics`: true outcomes, parsed chunk by chunk with every refused row
  named, joined on entity id with the champion's predictions, recall and precision
  per twelve-hour window;
- :func:`decide_decay`: live recall below its floor, on a window with enough
  positives to judge, requests a retrain (once per window, outside the cooldown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlplatform.core.ingest import FileRejected, clip_texts
from mlplatform.core.schema import DatasetSpec
from mlplatform.core.serving import TrainingReference, feature_bin_counts, reference_shares

__all__ = [
    "DRIFT_COLUMNS",
    "LIVE_METRIC_COLUMNS",
    "MAX_REFUSED_KEPT",
    "OUTCOME_PROBLEM_COLUMNS",
    "WINDOW_HOURS",
    "DecayDecision",
    "DriftDecision",
    "DriftState",
    "OutcomeParser",
    "ParsedOutcomes",
    "decide_decay",
    "decide_drift",
    "feature_drift",
    "join_outcomes",
    "ks_pvalue",
    "ks_statistic",
    "live_metrics",
    "parse_outcomes",
    "psi",
    "window_start",
]

WINDOW_HOURS = 12
"""Monitoring windows are twelve hours long: 00:00-12:00 and 12:00-24:00 UTC."""

DRIFT_COLUMNS = [
    "feature",
    "kind",
    "test",
    "rows",
    "statistic",
    "p_value",
    "p_threshold",
    "psi",
    "psi_threshold",
    "out_of_range_share",
    "drifted",
]
LIVE_METRIC_COLUMNS = [
    "window_start",
    "window_end",
    "rows",
    "positives",
    "predicted_positives",
    "true_positives",
    "recall",
    "precision",
    "model_versions",
]
OUTCOME_PROBLEM_COLUMNS = ["source_file", "row_number", "column", "value", "reason"]
_PSI_EPS = 1e-4
NATURAL_PSI_MARGIN = 1.5
"""A window must stray this many times farther than the training rows' own windows did:
windows of training rows (thinned by the split) wander a little less than raw ones."""


# --- drift -------------------------------------------------------------------------------


def psi(observed: Sequence[float] | np.ndarray, expected_shares: Sequence[float]) -> float:
    """Population stability index of bin counts ``observed`` against ``expected_shares``."""
    counts = np.asarray(observed, dtype="float64")
    total = counts.sum()
    if total == 0:
        return math.nan
    actual = np.clip(counts / total, _PSI_EPS, None)
    expected = np.clip(np.asarray(expected_shares, dtype="float64"), _PSI_EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(values: np.ndarray, quantiles: Sequence[float]) -> float:
    """Kolmogorov-Smirnov distance between ``values`` and a quantile sketch.

    The sketch's CDF is the step function of its (equally spaced) quantiles, so ties
    in discrete features (speeds, tool wear in whole minutes) are handled as the
    exact two-sample statistic handles them: both CDFs are compared at every jump,
    on both sides. The error against the statistic on the full training rows is at
    most one step of the sketch (0.1 % for 1,001 quantiles).
    """
    sample = np.sort(np.asarray(values, dtype="float64"))
    sketch = np.sort(np.asarray(quantiles, dtype="float64"))
    if sample.size == 0 or sketch.size == 0:
        return math.nan
    points = np.union1d(sample, sketch)
    cdf_sample_at = np.searchsorted(sample, points, side="right") / sample.size
    cdf_sketch_at = np.searchsorted(sketch, points, side="right") / sketch.size
    cdf_sample_before = np.searchsorted(sample, points, side="left") / sample.size
    cdf_sketch_before = np.searchsorted(sketch, points, side="left") / sketch.size
    return float(
        max(
            np.max(np.abs(cdf_sample_at - cdf_sketch_at)),
            np.max(np.abs(cdf_sample_before - cdf_sketch_before)),
        )
    )


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Two-sample KS p-value of ``statistic`` for samples of ``n`` and ``m`` rows.

    Uses the distribution of the one-sample statistic at the effective size
    ``n * m / (n + m)``, the standard approximation for two samples.
    """
    from scipy import stats

    if math.isnan(statistic) or n == 0 or m == 0:
        return math.nan
    effective = max(1, round(n * m / (n + m)))
    return float(stats.kstwo.sf(statistic, effective))


def feature_drift(
    frame: pd.DataFrame,
    reference: TrainingReference,
    *,
    alpha: float = 0.01,
    psi_threshold: float = 0.2,
    novelty_share: float = 0.05,
) -> pd.DataFrame:
    """Per model feature, recent rows ``frame`` against the training ``reference``.

    Numeric features: the KS test against the reference's quantile sketch (a
    chi-squared test on the decile bins for references stored without one).
    Categorical features: a chi-squared test on the training categories (unseen
    categories in one extra bin). Every feature also gets its PSI and the share of
    values never seen in training (outside the training range, or an unseen
    category).

    A feature drifts when its p-value is below ``alpha`` divided by the number of
    features tested (Bonferroni) **and** the shift is large: its PSI is at least
    ``psi_threshold`` and at least :data:`NATURAL_PSI_MARGIN` times the feature's
    natural PSI (how far a window of consecutive training rows strays by itself,
    :attr:`TrainingReference.natural_psi`),
    or at least ``novelty_share`` of its values lie outside what training saw. A
    slowly wandering feature (AI4I's temperatures are random walks) is so judged
    against its own wandering, not against the whole training set: a window at one
    end of its walk is not drift; values beyond anything seen are.

    Returns
    -------
    pandas.DataFrame
        :data:`DRIFT_COLUMNS`, one row per feature of ``reference`` in ``frame``.
    """
    from scipy import stats

    tested = [f for f in reference.features if f in frame.columns]
    p_threshold = alpha / max(1, len(tested))
    bins = feature_bin_counts(frame[tested], _subset(reference, tested))
    rows: list[tuple[Any, ...]] = []
    for name in tested:
        observed = np.asarray(bins[name], dtype="float64")
        total = int(observed.sum())
        shares = reference_shares(reference, name)
        feature_psi = psi(observed, shares)
        numeric = reference.numeric.get(name)
        if total == 0:
            test, statistic, p_value = "none", math.nan, math.nan
        elif numeric is not None and numeric.quantiles:
            values = frame[name].to_numpy("float64", na_value=np.nan)
            values = values[~np.isnan(values)]
            test = "ks"
            statistic = ks_statistic(values, numeric.quantiles)
            p_value = ks_pvalue(statistic, values.size, reference.n_rows)
        else:
            test = "chi2"
            expected = np.clip(np.asarray(shares, dtype="float64"), _PSI_EPS, None)
            expected_counts = expected / expected.sum() * total
            chi2, p = stats.chisquare(observed, expected_counts)
            statistic, p_value = float(chi2), float(p)
        natural = NATURAL_PSI_MARGIN * reference.natural_psi.get(name, 0.0)
        feature_threshold = max(psi_threshold, natural)
        novel = _novel_share(frame[name], reference, name)
        large = feature_psi >= feature_threshold or novel >= novelty_share
        drifted = bool(not math.isnan(p_value) and p_value < p_threshold and large)
        rows.append(
            (
                name,
                "numeric" if numeric is not None else "categorical",
                test,
                total,
                statistic,
                p_value,
                p_threshold,
                feature_psi,
                feature_threshold,
                novel,
                drifted,
            )
        )
    return pd.DataFrame(rows, columns=DRIFT_COLUMNS)


def _novel_share(values: pd.Series, reference: TrainingReference, name: str) -> float:
    """Share of ``values`` (missing ignored) outside the training range or categories."""
    present = values.dropna()
    if present.empty:
        return 0.0
    numeric = reference.numeric.get(name)
    if numeric is not None:
        x = pd.to_numeric(present, errors="coerce").to_numpy("float64", na_value=np.nan)
        return float(np.mean((x < numeric.min) | (x > numeric.max)))
    known = set(reference.categorical[name].categories)
    return float(np.mean(~present.astype(str).isin(known)))


def _subset(reference: TrainingReference, features: list[str]) -> TrainingReference:
    return replace(
        reference,
        numeric={k: v for k, v in reference.numeric.items() if k in features},
        categorical={k: v for k, v in reference.categorical.items() if k in features},
    )


@dataclass(frozen=True)
class DriftState:
    """What the drift sensor remembers between windows (its cursor)."""

    consecutive: int = 0
    """Drifted windows in a row, up to the latest evaluated one."""
    after: str | None = None
    """Ingestion time of the newest batch already evaluated (ISO-8601)."""
    windows: int = 0
    """Windows evaluated so far."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse: :meth:`from_dict`)."""
        return {"consecutive": self.consecutive, "after": self.after, "windows": self.windows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DriftState:
        """Inverse of :meth:`to_dict`; ``None`` (no cursor yet) is the initial state."""
        if not data:
            return cls()
        return cls(
            consecutive=int(data.get("consecutive", 0)),
            after=data.get("after"),
            windows=int(data.get("windows", 0)),
        )


@dataclass(frozen=True)
class DriftDecision:
    """The verdict on one window: the next state, whether to retrain, and why."""

    state: DriftState
    retrain: bool
    reason: str


def decide_drift(
    state: DriftState,
    window_drifted: bool,
    *,
    now: datetime,
    last_retrain: datetime | None,
    training_active: bool,
    windows_needed: int,
    cooldown: timedelta,
) -> DriftDecision:
    """Count consecutive drifted windows; request a retrain when enough, unless cooling down.

    A window without drift resets the count. When the count reaches
    ``windows_needed``, a retrain is requested unless a training run is active or
    the last retrain started less than ``cooldown`` ago; then the count is kept, and
    the next drifted window after the cooldown requests it. A request resets the
    count.
    """
    if windows_needed < 1:
        raise ValueError(f"windows_needed must be at least 1, got {windows_needed}")
    consecutive = state.consecutive + 1 if window_drifted else 0
    evaluated = replace(state, consecutive=consecutive, windows=state.windows + 1)
    if not window_drifted:
        return DriftDecision(evaluated, False, "no drift in this window")
    if consecutive < windows_needed:
        return DriftDecision(
            evaluated,
            False,
            f"drift in {consecutive} consecutive window(s); {windows_needed} needed",
        )
    if training_active:
        return DriftDecision(evaluated, False, "drift confirmed, but a training run is active")
    if last_retrain is not None and now - last_retrain < cooldown:
        until = last_retrain + cooldown
        return DriftDecision(
            evaluated,
            False,
            f"drift confirmed, but cooling down after the retrain of "
            f"{last_retrain:%Y-%m-%d %H:%M} UTC until {until:%Y-%m-%d %H:%M} UTC",
        )
    return DriftDecision(
        replace(evaluated, consecutive=0),
        True,
        f"drift in {consecutive} consecutive windows (>= {windows_needed})",
    )


# --- live performance --------------------------------------------------------------------


def window_start(stamps: pd.Series, hours: int = WINDOW_HOURS) -> pd.Series:
    """The start (UTC) of the ``hours``-long window each stamp falls in."""
    utc = pd.to_datetime(stamps, utc=True)
    return utc.dt.floor(f"{hours}h")


MAX_REFUSED_KEPT = 100_000
"""Refused rows of one labels file stored with their reasons; more are only counted (the
file itself is kept byte for byte, so nothing is lost). Bounds what a file of garbage
costs: each kept entry's value is clipped to ``MAX_TEXT_CHARS`` characters."""

_ALLOWED_TYPES = "whole numbers, numbers, text or true/false"


@dataclass(frozen=True)
class ParsedOutcomes:
    """What a labels file holds: valid outcomes, refused rows, and the counts.

    ``rows`` = ``len(valid)`` + ``rows_refused``: every data row is either an outcome
    or refused (once, for its first problem); ``refused`` lists them by row number, at
    most :data:`MAX_REFUSED_KEPT`.
    """

    valid: pd.DataFrame
    """``entity_id`` and ``outcome`` (int64), one row per entity: its last line, in file order."""
    refused: pd.DataFrame
    """:data:`OUTCOME_PROBLEM_COLUMNS`, one row per refused data row, by row number."""
    rows: int
    """Data rows read."""
    rows_refused: int
    """Data rows refused (``len(refused)`` unless more than :data:`MAX_REFUSED_KEPT`)."""


class OutcomeParser:
    """Parses a labels file chunk by chunk, holding 13 bytes per valid row (id, outcome, row).

    ``add`` takes each chunk (an Arrow table or a frame) with its data-row numbers
    (1 is the first data row); ``add_unparsed`` a line the reader could not split;
    ``result`` returns the :class:`ParsedOutcomes`. The entity id and the target are
    found by their declared names or their source headers (``UDI`` and
    ``Machine failure`` for AI4I); other columns are ignored (and never converted).

    A row is refused, with its row number, column and reason, when its id is not a
    whole number, its outcome is not 0 or 1 (missing values, ``NaN``, ``inf``, text
    and spreadsheet formulas alike), or a later line gives the same entity (the later
    line corrects it; the earlier is refused as superseded, naming the later row).

    Raises
    ------
    FileRejected
        Naming the file and column, when the id or target column is missing, given
        twice (by both names), or holds values of another kind (lists, dates, bytes).
    """

    def __init__(
        self, spec: DatasetSpec, source_file: str, *, max_refused_kept: int = MAX_REFUSED_KEPT
    ) -> None:
        self.spec = spec
        self.source_file = source_file
        self.max_refused_kept = max_refused_kept
        self._ids: list[np.ndarray] = []
        self._outcomes: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._refused: list[pd.DataFrame] = []
        self._kept = 0
        self._rows_read = 0
        self._rows_refused = 0
        self._next_row = 1
        self._result: ParsedOutcomes | None = None

    def _source_columns(self, names: Sequence[str]) -> tuple[str, str]:
        """The names of the id and target columns among ``names`` (landed headers)."""
        found: dict[str, list[str]] = {}
        for canonical in (self.spec.entity_id, self.spec.target):
            aliases = {canonical} | {
                s for s, n in self.spec.source_to_name.items() if n == canonical
            }
            # surrounding spaces (and a byte-order mark) ignored, as ingestion does
            found[canonical] = [n for n in names if n.strip().lstrip("\ufeff") in aliases]
        missing = [c for c, present in found.items() if not present]
        if missing:
            headers = {v: k for k, v in self.spec.source_to_name.items()}
            listed = ", ".join(f"{c!r} (or {headers.get(c, c)!r})" for c in missing)
            raise FileRejected(self.source_file, f"labels file lacks the column(s) {listed}")
        for canonical, present in found.items():
            if len(present) > 1:
                shown = " and ".join(repr(n) for n in present)
                raise FileRejected(
                    self.source_file,
                    f"the column is given {len(present)} times ({shown}); which one holds "
                    "the labels is ambiguous",
                    column=canonical,
                )
        return found[self.spec.entity_id][0], found[self.spec.target][0]

    def _two_columns(self, chunk: pa.Table | pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        names = list(chunk.column_names if isinstance(chunk, pa.Table) else chunk.columns)
        id_column, target_column = self._source_columns([str(n) for n in names])
        if not isinstance(chunk, pa.Table):
            return chunk[id_column], chunk[target_column]
        out = []
        for name, canonical in (
            (id_column, self.spec.entity_id),
            (target_column, self.spec.target),
        ):
            column = chunk.column(name)
            kind = column.type
            if pa.types.is_dictionary(kind):
                column, kind = column.cast(kind.value_type), kind.value_type
            if not (
                pa.types.is_integer(kind)
                or pa.types.is_floating(kind)
                or pa.types.is_string(kind)
                or pa.types.is_large_string(kind)
                or pa.types.is_boolean(kind)
                or pa.types.is_null(kind)
            ):
                raise FileRejected(
                    self.source_file,
                    f"column {name!r} holds {kind} values; expected {_ALLOWED_TYPES}",
                    column=canonical,
                )
            out.append(column.to_pandas())
        return out[0], out[1]

    def add(self, chunk: pa.Table | pd.DataFrame, row_numbers: np.ndarray | None = None) -> None:
        """Parse one chunk; ``row_numbers`` default to the rows after the previous chunk."""
        raw_ids, raw_outcomes = self._two_columns(chunk)
        n = len(raw_ids)
        rows = (
            np.arange(self._next_row, self._next_row + n, dtype="int64")
            if row_numbers is None
            else np.asarray(row_numbers, dtype="int64")
        )
        if len(rows) != n:
            raise ValueError(f"{self.source_file}: {len(rows)} row numbers for {n} rows")
        self._next_row = int(rows[-1]) + 1 if n else self._next_row
        self._rows_read += n
        ids, outcome = _numbers(raw_ids), _numbers(raw_outcomes)
        # NaN, infinities and ids beyond int64 compare False here: refused, not a crash
        in_range = (ids.abs() < 2.0**63).fillna(False).to_numpy(dtype=bool)
        bad_id = ~in_range | (ids != ids.round()).to_numpy(dtype=bool)
        bad_outcome = ~outcome.isin([0, 1]).to_numpy(dtype=bool)
        for column, values, mask, reason in (
            (self.spec.entity_id, raw_ids, bad_id, "entity id is not a whole number"),
            (self.spec.target, raw_outcomes, bad_outcome & ~bad_id, "outcome is not 0 or 1"),
        ):
            idx = np.flatnonzero(mask)
            self._refuse(rows[idx], column, values.iloc[idx], reason)
        keep = ~(bad_id | bad_outcome)
        self._ids.append(ids[keep].astype("int64").to_numpy())
        self._outcomes.append(outcome[keep].astype("int8").to_numpy())
        # row numbers are kept only to name a superseded line: 4 bytes each where they fit
        kept = rows[keep]
        self._rows.append(kept.astype("int32") if kept.max(initial=0) < 2**31 else kept)

    def add_unparsed(self, row_number: int, reason: str, text: str) -> None:
        """A line the reader could not split into fields (``<row>``: the whole line)."""
        self._rows_read += 1
        self._refuse(np.array([row_number], dtype="int64"), "<row>", pd.Series([text]), reason)

    def _refuse(self, rows: np.ndarray, column: str, values: pd.Series, reason: Any) -> None:
        self._rows_refused += len(rows)
        room = max(0, self.max_refused_kept - self._kept)
        if not len(rows) or not room:
            return
        rows, values = rows[:room], values.iloc[:room]
        reasons = reason[:room] if isinstance(reason, list) else reason
        text = values.astype(object).where(values.notna(), "<missing>").astype(str)
        self._refused.append(
            pd.DataFrame(
                {
                    "source_file": self.source_file,
                    "row_number": rows,
                    "column": column,
                    "value": clip_texts(text.reset_index(drop=True)).to_numpy(),
                    "reason": reasons,
                }
            )
        )
        self._kept += len(rows)

    def result(self) -> ParsedOutcomes:
        """The outcomes (each entity's last line) and every refused row, by row number.

        Ends the parse: a second call returns the same result.
        """
        if self._result is not None:
            return self._result
        # one array at a time, each list freed once joined: the peak is one array over
        ids = _joined(self._ids, "int64")
        self._ids = []
        outcomes = _joined(self._outcomes, "int8")
        self._outcomes = []
        rows = _joined(self._rows, "int64")
        self._rows = []
        keep = self._refuse_superseded(ids, rows)
        if keep is not None:
            ids, outcomes = ids[keep], outcomes[keep]
        del rows, keep
        valid = pd.DataFrame({"entity_id": ids, "outcome": outcomes.astype("int64")})
        refused = (
            pd.concat(self._refused, ignore_index=True)
            .sort_values(["row_number", "column"], kind="stable")
            .reset_index(drop=True)
            if self._refused
            else pd.DataFrame(
                {
                    c: pd.Series(dtype="int64" if c == "row_number" else "object")
                    for c in OUTCOME_PROBLEM_COLUMNS
                }
            )
        )
        self._result = ParsedOutcomes(
            valid, refused[OUTCOME_PROBLEM_COLUMNS], self._rows_read, self._rows_refused
        )
        return self._result

    def _refuse_superseded(self, ids: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """Refuse every line a later line of the same entity corrects; the mask of the rest.

        None when no entity is given twice (the usual case: nothing but one sort).
        """
        order = np.argsort(ids, kind="stable")  # equal ids stay in file order
        ordered = ids[order]
        repeated = np.flatnonzero(ordered[1:] == ordered[:-1])  # each followed by its own id
        if not repeated.size:
            return None
        superseded = order[repeated]
        # the last line of each repeated entity: the end of its run among the sorted ids
        later = rows[order[np.searchsorted(ordered, ordered[repeated], side="right") - 1]]
        del order, ordered
        by_row = np.argsort(rows[superseded], kind="stable")
        superseded, later = superseded[by_row], later[by_row]
        room = max(0, self.max_refused_kept - self._kept)  # reasons made only for rows kept
        self._refuse(
            rows[superseded],
            self.spec.entity_id,
            pd.Series(ids[superseded[:room]]),
            [f"superseded by row {r}, the last line for this entity id" for r in later[:room]],
        )
        keep = np.ones(len(ids), dtype=bool)
        keep[superseded] = False
        return keep


def _joined(parts: list[np.ndarray], dtype: str) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def _numbers(values: pd.Series) -> pd.Series:
    """``values`` as numbers (NaN where not one); true/false as 1/0."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("int64")
    return pd.to_numeric(values, errors="coerce")


def parse_outcomes(
    frame: pd.DataFrame, spec: DatasetSpec, source_file: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """True outcomes from a labels file held in one frame: (valid outcomes, refused rows).

    :class:`OutcomeParser` on one chunk: row 1 is the frame's first row.

    Raises
    ------
    FileRejected
        A ``ValueError`` naming the file and the column, when the id or target is
        absent or given twice.
    """
    parser = OutcomeParser(spec, source_file)
    parser.add(frame)
    parsed = parser.result()
    return parsed.valid, parsed.refused


def join_outcomes(outcomes: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Outcomes joined on entity id with the latest prediction of each entity.

    ``predictions`` has the batch-prediction columns (``entity_id``, ``event_time``,
    ``failure_probability``, ``predicted_failure``, ``model_version``,
    ``scored_at``); an entity scored more than once (a re-score, a window run)
    counts once, by its latest prediction. Entities without a prediction are left
    out.
    """
    latest = predictions.sort_values("scored_at", kind="stable").drop_duplicates(
        "entity_id", keep="last"
    )
    return outcomes.merge(latest, on="entity_id", how="inner", validate="one_to_one")


def live_metrics(joined: pd.DataFrame, hours: int = WINDOW_HOURS) -> pd.DataFrame:
    """Recall and precision of the predictions in ``joined``, per ``hours``-long window.

    Windows follow the rows' event time. ``recall`` is NaN in a window without a
    positive outcome, ``precision`` in one without a predicted positive.

    Returns
    -------
    pandas.DataFrame
        :data:`LIVE_METRIC_COLUMNS`, one row per window, oldest first.
    """
    if joined.empty:
        return pd.DataFrame(columns=LIVE_METRIC_COLUMNS)
    frame = pd.DataFrame(
        {
            "window_start": window_start(joined["event_time"], hours),
            "actual": joined["outcome"].astype("int64").to_numpy(),
            "predicted": joined["predicted_failure"].astype("int64").to_numpy(),
            "model_version": joined["model_version"].astype(str).to_numpy(),
        }
    )
    frame["hit"] = frame["actual"] * frame["predicted"]
    grouped = frame.groupby("window_start", sort=True)
    out = pd.DataFrame(
        {
            "rows": grouped.size(),
            "positives": grouped["actual"].sum(),
            "predicted_positives": grouped["predicted"].sum(),
            "true_positives": grouped["hit"].sum(),
            "model_versions": grouped["model_version"].agg(
                lambda v: ",".join(sorted(set(v), key=lambda x: (len(x), x)))
            ),
        }
    ).reset_index()
    out["window_end"] = out["window_start"] + pd.Timedelta(hours=hours)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["recall"] = np.where(
            out["positives"] > 0, out["true_positives"] / out["positives"].clip(lower=1), np.nan
        )
        out["precision"] = np.where(
            out["predicted_positives"] > 0,
            out["true_positives"] / out["predicted_positives"].clip(lower=1),
            np.nan,
        )
    for column in ("rows", "positives", "predicted_positives", "true_positives"):
        out[column] = out[column].astype("int64")
    return out[LIVE_METRIC_COLUMNS]


@dataclass(frozen=True)
class DecayDecision:
    """Whether live recall calls for a retrain, the window judged, and why.

    ``window`` is the newest window judged (None when no window could be judged);
    the caller remembers it, so each window is judged once.
    """

    retrain: bool
    window: str | None
    reason: str


def decide_decay(
    metrics: pd.DataFrame,
    *,
    recall_floor: float,
    min_positives: int,
    judged_through: str | None,
    now: datetime,
    last_retrain: datetime | None,
    training_active: bool,
    cooldown: timedelta,
) -> DecayDecision:
    """Retrain when the newest judgeable window's live recall is below ``recall_floor``.

    A window is judgeable with at least ``min_positives`` true failures (recall on
    a handful of positives is noise), and only when it is newer than
    ``judged_through`` (the newest window judged before), so one bad window
    requests at most one retrain. No retrain is requested while a training run is
    active or within ``cooldown`` of the last retrain: that retrain already
    answers the decay, and the next windows judge the model it produced.
    """
    # a window without positives has no recall (NaN): never judged, whatever min_positives
    enough = metrics["positives"] >= max(1, min_positives)
    judgeable = metrics.loc[enough].sort_values("window_start")
    if judged_through is not None:
        judgeable = judgeable.loc[judgeable["window_start"] > pd.Timestamp(judged_through)]
    if judgeable.empty:
        return DecayDecision(False, None, f"no new window with at least {min_positives} positives")
    latest = judgeable.iloc[-1]
    window = _window_id(latest["window_start"])
    recall = float(latest["recall"])
    if recall >= recall_floor:
        return DecayDecision(
            False, window, f"live recall {recall:.3f} >= {recall_floor} in window {window}"
        )
    low = f"live recall {recall:.3f} < {recall_floor} in window {window}"
    if training_active:
        return DecayDecision(False, window, f"{low}, but a training run is active")
    if last_retrain is not None and now - last_retrain < cooldown:
        return DecayDecision(
            False,
            window,
            f"{low}, but cooling down after the retrain of {last_retrain:%Y-%m-%d %H:%M} UTC",
        )
    return DecayDecision(True, window, f"{low} ({int(latest['positives'])} positives)")


def _window_id(start: Any) -> str:
    stamp = pd.Timestamp(start)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return stamp.isoformat()
