"""Seeded synthetic generator for AI4I 2020 predictive-maintenance data.

The AI4I 2020 dataset (UCI, S. Matzka 2020) is itself synthetic and its
documentation states the data-generating process. :func:`generate_ai4i`
re-implements that process with numpy so the platform can produce sample data
of any size without shipping the real file. Only a handful of scalar constants
(shares, means, standard deviations, curve coefficients) were fitted by looking
at the real file; no rows or tables of values are taken from it.

The process, per row (one row is one machining process):

- ``Type`` is drawn L/M/H with the shares seen in the real file (60/30/10 %;
  the dataset's prose says 50/30/20 %, the file does not).
- ``Air temperature [K]`` is a slow AR(1) path (a mean-reverting random walk)
  standardised over the call to mean 300 K and standard deviation 2 K.
- ``Process temperature [K]`` is air temperature + 10 K + a second slow path
  standardised to standard deviation 1 K. As in the real file that path is
  correlated -0.7 with the air temperature, which gives the process temperature
  its standard deviation of about 1.48 K.
- ``Torque [Nm]`` is normal around 40 Nm with sigma 10 Nm, folded at zero so it
  is never negative.
- ``Rotational speed [rpm]`` follows a falling speed-torque characteristic of
  the drive (about 3,000 rpm at no load, flattening to about 1,300 rpm at high
  torque) plus normal noise of 50 rpm. This reproduces the real marginal
  (mean about 1,539 rpm, std about 179 rpm, right skew) and its correlation of
  about -0.87 with torque. The dataset's prose speaks of "a power of 2860 W",
  but the real file's mechanical power averages about 6,280 W, so the curve is
  fitted to the file rather than to that figure.
- ``Tool wear [min]``: each process adds 2/3/5 min (L/M/H) to the wear of the
  tool; the wear shown on a row is the wear before that process. Each tool
  gets a life drawn uniformly from 200-240 min and is retired by the process
  that takes its wear to that life; the next row starts a fresh tool at 0.
  40 % of the retirements are failures (TWF, flagged on the tool's last row)
  rather than planned replacements. Every call starts with a fresh tool, as
  the real file does.
- Failure modes, applied to the rounded columns exactly as a reader of the
  file would recompute them:

  - HDF: ``process - air < 8.6`` K and ``speed < 1380`` rpm;
  - PWF: ``torque * speed * 2 * pi / 60`` below 3,500 W or above 9,000 W;
  - OSF: ``tool wear * torque`` above 11,000 (L), 12,000 (M), 13,000 (H);
  - RNF: 0.1 % of processes at random;
  - ``Machine failure`` is 1 when any mode is 1.

Unlike the real file (which has a few unexplained rows), ``Machine failure``
is always exactly the OR of the five modes.
"""

from __future__ import annotations

import operator
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["AI4I_COLUMNS", "generate_ai4i"]

AI4I_COLUMNS: Final[tuple[str, ...]] = (
    "UDI",
    "Product ID",
    "Type",
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
    "Machine failure",
    "TWF",
    "HDF",
    "PWF",
    "OSF",
    "RNF",
)
"""The 14 column names of the real AI4I 2020 file, in file order."""

_FAILURE_MODES: Final[tuple[str, ...]] = ("TWF", "HDF", "PWF", "OSF", "RNF")

# Product type, indexed 0 = L, 1 = M, 2 = H.
_TYPE_LETTERS: Final[tuple[str, ...]] = ("L", "M", "H")
_TYPE_SHARES: Final[tuple[float, ...]] = (0.6, 0.3, 0.1)
_WEAR_PER_PROCESS: Final[tuple[int, ...]] = (2, 3, 5)
_OSF_LIMIT: Final[tuple[float, ...]] = (11_000.0, 12_000.0, 13_000.0)
# Product serial = base + UDI - 1, so that UDI 1 of type M is "M14860".
_SERIAL_BASE: Final[tuple[int, ...]] = (47_180, 14_860, 29_414)
_SERIAL_DIGITS: Final[int] = 5

# Temperatures.
_AIR_MEAN_K: Final[float] = 300.0
_AIR_STD_K: Final[float] = 2.0
_PROCESS_OFFSET_K: Final[float] = 10.0
_PROCESS_WALK_STD_K: Final[float] = 1.0
_PROCESS_AIR_CORR: Final[float] = -0.7
# AR(1) coefficient of both temperature paths: a correlation time of about
# 2,000 rows, matching the real file's autocorrelation (0.96 at lag 100,
# 0.6 at lag 1,000) and its row-to-row steps of 0 / +-0.1 K.
_TEMP_AR_COEF: Final[float] = 0.9995

# Torque and rotational speed.
_TORQUE_MEAN_NM: Final[float] = 40.0
_TORQUE_STD_NM: Final[float] = 10.0
# speed(t) = low - slope * t + (no_load - low) / (1 + (t / knee) ** shape)
_SPEED_NO_LOAD_RPM: Final[float] = 3045.0
_SPEED_LOW_RPM: Final[float] = 1593.0
_SPEED_SLOPE_RPM_PER_NM: Final[float] = 5.05
_SPEED_KNEE_NM: Final[float] = 16.2
_SPEED_SHAPE: Final[float] = 2.78
_SPEED_NOISE_RPM: Final[float] = 50.0

# Tool life and failure modes.
_TOOL_LIFE_MIN: Final[int] = 200
_TOOL_LIFE_MAX: Final[int] = 240
_TWF_SHARE: Final[float] = 0.4
_HDF_MAX_TEMP_DIFF_K: Final[float] = 8.6
_HDF_MAX_SPEED_RPM: Final[int] = 1380
_PWF_MIN_POWER_W: Final[float] = 3500.0
_PWF_MAX_POWER_W: Final[float] = 9000.0
_RNF_PROBABILITY: Final[float] = 0.001

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def generate_ai4i(
    n_rows: int, *, seed: int = 0, start_udi: int = 1, burn_in: int = 0
) -> pd.DataFrame:
    """Generate synthetic rows following the AI4I 2020 data-generating process.

    Parameters
    ----------
    n_rows : int
        Number of rows (processes) to generate; 0 gives an empty frame with
        the full schema.
    seed : int, default 0
        Seed of the random generator. The same seed gives the same frame;
        different seeds give different frames.
    start_udi : int, default 1
        ``UDI`` of the first row; rows are numbered consecutively from it.
    burn_in : int, default 0
        Processes simulated before the first returned row and then dropped, so
        that a short sample starts mid-way through tool lives and temperature
        walks (representative failure rates) rather than with a fresh tool.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`AI4I_COLUMNS` with the dtypes ``pandas.read_csv`` gives
        the real file: int64 for ``UDI``, speed, wear and the six labels;
        float64 rounded to 0.1 for the temperatures and torque; the default
        string dtype for ``Product ID`` and ``Type``. ``Product ID`` is the
        type letter plus a serial of at least five digits, unique within the
        call (and across calls with non-overlapping ``UDI`` ranges); the
        serial is ``UDI - 1`` plus a per-type base (so UDI 1 of type M is
        ``M14860``, as in the real file) and grows past five digits once it
        passes 99,999.

    Raises
    ------
    ValueError
        If ``n_rows`` or ``start_udi`` is negative.
    TypeError
        If ``n_rows`` or ``start_udi`` is not an integer.

    Notes
    -----
    Temperatures are standardised over the whole call, so every call has an
    air temperature of mean 300 K and standard deviation 2 K (a single row
    sits at exactly 300 K / 310 K). Each call starts with a fresh tool (wear
    0), so very short calls carry little tool wear and few TWF/OSF rows;
    generate a longer frame and slice it when a short but representative
    sample is wanted.

    Examples
    --------
    >>> df = generate_ai4i(5, seed=1)
    >>> list(df.columns) == list(AI4I_COLUMNS)
    True
    >>> df["UDI"].tolist()
    [1, 2, 3, 4, 5]
    """
    kept = _non_negative_int(n_rows, "n_rows")
    first_udi = _non_negative_int(start_udi, "start_udi")
    skip = _non_negative_int(burn_in, "burn_in")
    n = kept + skip
    type_rng, temp_rng, load_rng, wear_rng, random_rng = np.random.default_rng(seed).spawn(5)

    type_code = type_rng.choice(len(_TYPE_SHARES), size=n, p=_TYPE_SHARES).astype(np.int64)
    air, process = _temperatures(temp_rng, n)
    torque, speed = _torque_and_speed(load_rng, n)
    wear, twf = _tool_wear(wear_rng, type_code)

    hdf = ((process - air) < _HDF_MAX_TEMP_DIFF_K) & (speed < _HDF_MAX_SPEED_RPM)
    power = torque * speed * 2 * np.pi / 60
    pwf = (power < _PWF_MIN_POWER_W) | (power > _PWF_MAX_POWER_W)
    osf = wear * torque > np.asarray(_OSF_LIMIT)[type_code]
    rnf = random_rng.random(n) < _RNF_PROBABILITY
    failure = twf | hdf | pwf | osf | rnf
    if skip:
        type_code, speed, wear = type_code[skip:], speed[skip:], wear[skip:]
        air, process, torque = air[skip:], process[skip:], torque[skip:]
        twf, hdf, pwf, osf = twf[skip:], hdf[skip:], pwf[skip:], osf[skip:]
        rnf, failure = rnf[skip:], failure[skip:]

    udi = np.arange(first_udi, first_udi + kept, dtype=np.int64)
    letters = np.asarray(_TYPE_LETTERS, dtype=object)[type_code]
    serial = np.asarray(_SERIAL_BASE, dtype=np.int64)[type_code] + udi - 1
    product_id = [
        f"{letter}{number:0{_SERIAL_DIGITS}d}"
        for letter, number in zip(letters.tolist(), serial.tolist(), strict=True)
    ]

    columns: dict[str, object] = {
        "UDI": udi,
        "Product ID": pd.Series(product_id, dtype=object).astype("str"),
        "Type": pd.Series(letters, dtype=object).astype("str"),
        "Air temperature [K]": air,
        "Process temperature [K]": process,
        "Rotational speed [rpm]": speed,
        "Torque [Nm]": torque,
        "Tool wear [min]": wear,
        "Machine failure": failure.astype(np.int64),
        "TWF": twf.astype(np.int64),
        "HDF": hdf.astype(np.int64),
        "PWF": pwf.astype(np.int64),
        "OSF": osf.astype(np.int64),
        "RNF": rnf.astype(np.int64),
    }
    return pd.DataFrame(columns, columns=list(AI4I_COLUMNS))


def _non_negative_int(value: int, name: str) -> int:
    """Check that an argument is a non-negative integer.

    Parameters
    ----------
    value : int
        The argument's value.
    name : str
        The argument's name, for the error message.

    Returns
    -------
    int
        ``value`` as a Python int.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (booleans are refused too).
    ValueError
        If ``value`` is negative.
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def _standardised_ar1(rng: np.random.Generator, n: int) -> FloatArray:
    """Draw a slow AR(1) path and standardise it to mean 0, std 1 over its rows.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the innovations.
    n : int
        Length of the path.

    Returns
    -------
    numpy.ndarray of float64
        The path, with sample mean 0 and (population) standard deviation 1;
        all zeros when ``n < 2``.
    """
    coef = _TEMP_AR_COEF
    shocks = rng.standard_normal(n)
    if n < 2:
        return np.zeros(n, dtype=np.float64)
    # x[t] = coef * x[t-1] + (1 - coef) * shocks[t]: an exponentially weighted
    # mean with adjust=False. Scale the first value to the stationary spread so
    # the path starts in equilibrium.
    shocks[0] *= np.sqrt((1 - coef) / (1 + coef))
    path: FloatArray = (
        pd.Series(shocks).ewm(alpha=1 - coef, adjust=False).mean().to_numpy(dtype=np.float64)
    )
    return _standardise(path)


def _standardise(values: FloatArray) -> FloatArray:
    """Shift and scale values to mean 0 and population standard deviation 1.

    Parameters
    ----------
    values : numpy.ndarray of float64
        Values to standardise.

    Returns
    -------
    numpy.ndarray of float64
        Standardised values; all zeros when the values are (numerically)
        constant.
    """
    centred: FloatArray = values - values.mean()
    spread = float(np.sqrt(np.mean(centred * centred)))
    if spread <= 1e-12:
        return np.zeros_like(values)
    standardised: FloatArray = centred / spread
    return standardised


def _temperatures(rng: np.random.Generator, n: int) -> tuple[FloatArray, FloatArray]:
    """Generate air and process temperatures, rounded to 0.1 K.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Number of rows.

    Returns
    -------
    air, process : numpy.ndarray of float64
        Air temperature (mean 300 K, std 2 K) and process temperature (air +
        10 K + a path of std 1 K correlated -0.7 with the air temperature).
    """
    if n == 0:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty.copy()
    air_z = _standardised_ar1(rng, n)
    other = _standardised_ar1(rng, n)
    # Remove the other path's chance correlation with air, so the process
    # temperature's spread is set by _PROCESS_AIR_CORR rather than by luck.
    other = _standardise(other - np.mean(other * air_z) * air_z)
    walk_z = _PROCESS_AIR_CORR * air_z + np.sqrt(1 - _PROCESS_AIR_CORR**2) * other
    air = _AIR_MEAN_K + _AIR_STD_K * air_z
    process = air + _PROCESS_OFFSET_K + _PROCESS_WALK_STD_K * walk_z
    return np.round(air, 1), np.round(process, 1)


def _torque_and_speed(rng: np.random.Generator, n: int) -> tuple[FloatArray, IntArray]:
    """Generate torque (rounded to 0.1 Nm) and rotational speed (whole rpm).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Number of rows.

    Returns
    -------
    torque : numpy.ndarray of float64
        Normal(40, 10) folded at zero, rounded to 0.1 Nm.
    speed : numpy.ndarray of int64
        Speed-torque characteristic of the drive plus normal noise, in rpm.
    """
    draws: FloatArray = rng.normal(_TORQUE_MEAN_NM, _TORQUE_STD_NM, size=n)
    torque: FloatArray = np.abs(draws).round(1)
    curve = (
        _SPEED_LOW_RPM
        - _SPEED_SLOPE_RPM_PER_NM * torque
        + (_SPEED_NO_LOAD_RPM - _SPEED_LOW_RPM) / (1 + (torque / _SPEED_KNEE_NM) ** _SPEED_SHAPE)
    )
    speed = np.rint(curve + rng.normal(0.0, _SPEED_NOISE_RPM, size=n)).astype(np.int64)
    return torque, speed


def _tool_wear(rng: np.random.Generator, type_code: IntArray) -> tuple[IntArray, BoolArray]:
    """Accumulate tool wear with tool replacements and tool-wear failures.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the tool lives and of which retirements are failures.
    type_code : numpy.ndarray of int64
        Product type per row (0 = L, 1 = M, 2 = H).

    Returns
    -------
    wear : numpy.ndarray of int64
        Tool wear in minutes before each row's process.
    twf : numpy.ndarray of bool
        True on the last row of a tool that failed (rather than being
        replaced as planned).
    """
    n = len(type_code)
    # Every tool lasts at least _TOOL_LIFE_MIN / max(increment) rows, which
    # bounds the number of tools a call can need.
    max_tools = n // (_TOOL_LIFE_MIN // max(_WEAR_PER_PROCESS)) + 2
    lives = rng.integers(_TOOL_LIFE_MIN, _TOOL_LIFE_MAX + 1, size=max_tools)
    fails = rng.random(max_tools) < _TWF_SHARE

    # Wear a single never-replaced tool would show: row i carries the wear
    # added by rows 0..i-1.
    added = np.asarray(_WEAR_PER_PROCESS, dtype=np.int64)[type_code]
    cumulative = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(added[:-1], out=cumulative[1:])

    # Wear after each row's process; non-decreasing, so it can be searched.
    cumulative_after = cumulative + added

    tool_start = np.zeros(n, dtype=np.int64)
    twf = np.zeros(n, dtype=np.bool_)
    start, tool = 0, 0
    while start < n:
        # Last row of this tool: the first whose process takes the wear to
        # the tool's life.
        target = cumulative[start] + lives[tool]
        last = int(np.searchsorted(cumulative_after, target, side="left"))
        if last >= n:
            break
        twf[last] = fails[tool]
        if last + 1 < n:
            tool_start[last + 1] = last + 1
        start, tool = last + 1, tool + 1
    np.maximum.accumulate(tool_start, out=tool_start)
    wear = cumulative - cumulative[tool_start]
    return wear, twf
