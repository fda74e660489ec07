"""A corpus of malformed (and a few tricky but clean) landed files, with expected outcomes.

Each :class:`CorpusCase` is one kind of input a landing folder receives in real
life: an empty file, a wrong delimiter, a latin-1 export, a Parquet file with text
in a numeric column, a CSV with a ragged row... It says how to write the file and
what ingestion must make of it, as exactly as the code can be held to:

* :class:`Rejection`: the whole file is refused; the reason contains ``reason``
  and the failure names ``column`` (or no column);
* :class:`Ingestion`: the file is stored; ``entries`` are exactly the quarantine
  rows (row number, column header, expectation, reason substring) and the
  landed / stored / quarantined counts are exact.

``data_rows`` is the number of data rows actually written into the file (a
truncated or ragged line counts, a blank line does not): an ingested file must
account for every one of them. ``known_bug`` marks a case the library gets wrong
today (see the test module, which expects it to fail until fixed).

The corpus is built in memory by :func:`build_corpus`; nothing touches the disk
until :meth:`CorpusCase.write`.
"""

from __future__ import annotations

import functools
import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.core.generator import AI4I_COLUMNS, generate_ai4i
from mlplatform.core.ingest import MAX_TEXT_CHARS, PARSE_EXPECTATION, TYPE_EXPECTATION

__all__ = [
    "BETWEEN",
    "IN_SET",
    "NOT_NULL",
    "UNIQUE",
    "CorpusCase",
    "Ingestion",
    "QuarantineEntry",
    "Rejection",
    "build_corpus",
    "gzip_bomb",
    "parquet_bomb",
]

NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
UNIQUE = "expect_column_values_to_be_unique"
ROW = "<row>"

HEADER = ",".join(AI4I_COLUMNS)
N_FIELDS = len(AI4I_COLUMNS)


@dataclass(frozen=True)
class Rejection:
    """The whole file is refused: moved to the rejected area, the run fails."""

    reason: str
    column: str | None = None


@dataclass(frozen=True)
class QuarantineEntry:
    """One expected quarantine row: a failed (row, column, expectation)."""

    row_number: int
    column: str
    expectation: str
    reason: str


@dataclass(frozen=True)
class Ingestion:
    """The file is stored; its bad rows, exactly these, are quarantined.

    ``stored_values`` maps canonical columns to their stored values in row order;
    ``dropped_columns`` are landed columns that must not reach the store.
    """

    rows_landed: int
    rows_stored: int
    rows_quarantined: int
    entries: tuple[QuarantineEntry, ...] = ()
    stored_values: Mapping[str, tuple[object, ...]] = field(default_factory=dict)
    dropped_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.rows_landed != self.rows_stored + self.rows_quarantined:
            raise ValueError(f"expected counts break the count invariant: {self}")
        if self.rows_quarantined != len({e.row_number for e in self.entries}):
            raise ValueError(f"rows_quarantined disagrees with the entries: {self}")

    @property
    def quarantined_rows(self) -> set[int]:
        """Row numbers that must not be stored."""
        return {e.row_number for e in self.entries}


Outcome = Rejection | Ingestion
Writer = Callable[[Path], None]


@dataclass(frozen=True)
class CorpusCase:
    """One kind of landed file and what ingestion must make of it."""

    id: str
    filename: str
    payload: bytes | Writer
    expected: Outcome
    data_rows: int
    description: str
    malformed: bool = True
    chunk_rows: int | None = None
    known_bug: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.expected, Ingestion) and self.expected.rows_landed != self.data_rows:
            raise ValueError(
                f"{self.id}: expects {self.expected.rows_landed} rows landed for "
                f"{self.data_rows} data rows written; a case may not expect lost rows"
            )

    @property
    def rejected(self) -> bool:
        """Whether the whole file must be refused."""
        return isinstance(self.expected, Rejection)

    def write(self, folder: Path) -> Path:
        """Write the file into ``folder`` as :attr:`filename`; returns its path."""
        target = folder / self.filename
        if isinstance(self.payload, bytes):
            target.write_bytes(self.payload)
        else:
            self.payload(target)
        return target

    def run_config(self) -> dict[str, object]:
        """Run config of the ingestion asset for this case (its chunk size, if any)."""
        if self.chunk_rows is None:
            return {}
        return {"ops": {"raw_observations": {"config": {"chunk_rows": self.chunk_rows}}}}


# -- building blocks --------------------------------------------------------------------


def _frame(n: int, seed: int, start_udi: int = 1) -> pd.DataFrame:
    """``n`` valid generated rows, every column as object so any cell can take any text."""
    return generate_ai4i(n, seed=seed, start_udi=start_udi).astype(object)


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _lines(frame: pd.DataFrame) -> list[str]:
    """Header and data lines of ``frame`` as CSV, without line ends."""
    return _csv(frame).splitlines()


def _join(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _parquet(frame: pd.DataFrame) -> Writer:
    def write(path: Path) -> None:
        frame.to_parquet(path, index=False)

    return write


def _with(frame: pd.DataFrame, column: str, values: list[object]) -> pd.DataFrame:
    out = frame.copy()
    out[column] = pd.Series(values, index=out.index, dtype=object)
    return out


def _q(row: int, column: str, expectation: str, reason: str) -> QuarantineEntry:
    return QuarantineEntry(row, column, expectation, reason)


def _ragged(line: str, keep: int) -> str:
    """``line`` cut to its first ``keep`` fields (or padded with zeros to ``keep``)."""
    fields = line.split(",")
    return ",".join(fields[:keep] if keep <= len(fields) else fields + ["0"] * (keep - len(fields)))


def _few(found: int) -> str:
    return f"expected {N_FIELDS} fields, found {found}"


# -- the corpus -------------------------------------------------------------------------


def _whole_file_cases() -> list[CorpusCase]:
    five = _frame(5, seed=11)
    lines = _lines(five)
    semicolon = _csv(_frame(5, seed=12)).replace(",", ";")
    tab = _csv(_frame(5, seed=13)).replace(",", "\t")
    dup_type = _lines(_frame(5, seed=14))
    dup_type = [f"{dup_type[0]},Type", *(f"{line},L" for line in dup_type[1:])]
    latin = _csv(_frame(5, seed=15)).replace("\n3,", "\n3,\u00e9", 1)
    late_text = _csv(_frame(2000, seed=16))
    at = late_text.index("\n1900,") + 1
    late_latin = late_text[:at] + "1900,Caf\u00e9" + late_text[at + len("1900,") :]
    unterminated = _lines(_frame(8, seed=17))
    unterminated[3] = unterminated[3].replace(",", ',"', 1)  # data row 3 opens a quote
    parquet_no_udi = generate_ai4i(5, seed=18).drop(columns=["UDI"])
    torque_twice = _frame(5, seed=19)
    torque_twice["torque_nm"] = torque_twice["Torque [Nm]"]
    return [
        CorpusCase(
            "empty_file",
            "empty_file.csv",
            b"",
            Rejection("the file is empty (0 bytes)"),
            0,
            "0 bytes",
        ),
        CorpusCase(
            "header_only",
            "header_only.csv",
            (HEADER + "\n").encode(),
            Rejection("no data rows (a header only, or an empty pull)"),
            0,
            "the header and nothing else",
        ),
        CorpusCase(
            "blank_first_line",
            "blank_first_line.csv",
            b"\n" + _join(lines),
            Rejection("no header: the first line is empty"),
            5,
            "an empty line before the header",
        ),
        CorpusCase(
            "no_header",
            "no_header.csv",
            _join(lines[1:]),
            Rejection("no header: the first line looks like data"),
            5,
            "data rows without a header line",
        ),
        CorpusCase(
            "semicolon_delimiter",
            "semicolon_delimiter.csv",
            semicolon.encode(),
            Rejection("wrong delimiter", semicolon.splitlines()[0][:80]),
            5,
            "a European export: ';' between fields",
        ),
        CorpusCase(
            "tab_delimiter",
            "tab_delimiter.csv",
            tab.encode(),
            Rejection("wrong delimiter", tab.splitlines()[0][:80]),
            5,
            "tab-separated values saved as .csv",
        ),
        CorpusCase(
            "missing_required_column",
            "missing_required_column.csv",
            _csv(_frame(5, seed=20).drop(columns=["Torque [Nm]"])).encode(),
            Rejection("missing required column", "Torque [Nm]"),
            5,
            "no torque column",
        ),
        CorpusCase(
            "duplicated_column_header",
            "duplicated_column_header.csv",
            _join(dup_type),
            Rejection("the column appears twice in the header", "Type"),
            5,
            "the Type header twice",
        ),
        CorpusCase(
            "source_and_canonical_header",
            "source_and_canonical_header.csv",
            _csv(torque_twice).encode(),
            Rejection("the column appears twice in the header", "torque_nm"),
            5,
            "'Torque [Nm]' and 'torque_nm' name the same column",
        ),
        CorpusCase(
            "latin1_bytes",
            "latin1_bytes.csv",
            latin.encode("latin-1"),
            Rejection("not UTF-8 text"),
            5,
            "a latin-1 export (an e-acute in a product id)",
        ),
        CorpusCase(
            "latin1_byte_late",
            "latin1_byte_late.csv",
            late_latin.encode("latin-1"),
            Rejection("not UTF-8 text"),
            2000,
            "one latin-1 byte in row 1900, after a first chunk was written (it is dropped)",
            chunk_rows=1000,
        ),
        CorpusCase(
            "utf16_with_bom",
            "utf16_with_bom.csv",
            _csv(_frame(5, seed=21)).encode("utf-16"),
            Rejection("not UTF-8 text (byte 0: invalid start byte)"),
            5,
            "UTF-16 (Excel 'Unicode text') with its byte-order mark",
        ),
        CorpusCase(
            "binary_renamed_csv",
            "binary_renamed.csv",
            b"\x89PNG\r\n\x1a\n" + np.random.default_rng(22).bytes(400),
            Rejection("not UTF-8 text (byte 0: invalid start byte)"),
            0,
            "a PNG image renamed .csv",
        ),
        CorpusCase(
            "xlsx_extension",
            "observations.xlsx",
            b"PK\x03\x04" + np.random.default_rng(23).bytes(200),
            Rejection("unsupported file type '.xlsx'"),
            0,
            "an Excel workbook",
        ),
        CorpusCase(
            "txt_extension",
            "observations.txt",
            _csv(_frame(5, seed=24)).encode(),
            Rejection("unsupported file type '.txt'"),
            5,
            "valid CSV content under a .txt name",
        ),
        CorpusCase(
            "no_extension",
            "observations",
            _csv(_frame(5, seed=25)).encode(),
            Rejection("unsupported file type '(none)'"),
            5,
            "valid CSV content without an extension",
        ),
        CorpusCase(
            "corrupt_parquet",
            "corrupt.parquet",
            np.random.default_rng(26).bytes(300),
            Rejection("unreadable parquet file"),
            0,
            "random bytes named .parquet",
        ),
        CorpusCase(
            "parquet_missing_column",
            "parquet_missing_column.parquet",
            _parquet(parquet_no_udi),
            Rejection("missing required column", "UDI"),
            5,
            "a Parquet file without UDI",
        ),
        CorpusCase(
            "parquet_no_rows",
            "parquet_no_rows.parquet",
            _parquet(generate_ai4i(0, seed=27)),
            Rejection("no data rows (a header only, or an empty pull)"),
            0,
            "a Parquet file with the schema and no rows",
        ),
        CorpusCase(
            "unterminated_quote",
            "unterminated_quote.csv",
            _join(unterminated),
            Rejection("quote"),
            8,
            "data row 3 opens a quote that never closes: the rows after it cannot be counted",
        ),
    ]


def _row_level_cases() -> list[CorpusCase]:
    cases: list[CorpusCase] = []

    ragged = _lines(_frame(10, seed=30))
    ragged[3] = _ragged(ragged[3], 9)  # data row 3: too few fields
    ragged[7] = _ragged(ragged[7], 16)  # data row 7: too many
    cases.append(
        CorpusCase(
            "ragged_rows",
            "ragged_rows.csv",
            _join(ragged),
            Ingestion(
                10,
                8,
                2,
                (_q(3, ROW, PARSE_EXPECTATION, _few(9)), _q(7, ROW, PARSE_EXPECTATION, _few(16))),
            ),
            10,
            "one row with too few fields, one with too many",
        )
    )

    truncated = _join(_lines(_frame(8, seed=31)))
    cut = truncated.rstrip(b"\n")
    cut = cut[: cut.rfind(b",", 0, len(cut) - 12)]  # the last line stops mid-row
    cut_fields = cut.rsplit(b"\n", 1)[1].count(b",") + 1
    cases.append(
        CorpusCase(
            "truncated_last_line",
            "truncated_last_line.csv",
            cut,
            Ingestion(8, 7, 1, (_q(8, ROW, PARSE_EXPECTATION, _few(cut_fields)),)),
            8,
            "an upload cut off in the middle of the last row (no final newline)",
        )
    )

    across = _lines(_frame(2000, seed=32))
    across[5] = _ragged(across[5], 12)
    across[1500] = _ragged(across[1500], 15)
    fields = across[1800].split(",")
    fields[3] = "900.0"  # air temperature
    across[1800] = ",".join(fields)
    cases.append(
        CorpusCase(
            "ragged_rows_across_chunks",
            "ragged_rows_across_chunks.csv",
            _join(across),
            Ingestion(
                2000,
                1997,
                3,
                (
                    _q(5, ROW, PARSE_EXPECTATION, _few(12)),
                    _q(1500, ROW, PARSE_EXPECTATION, _few(15)),
                    _q(1800, "Air temperature [K]", BETWEEN, "outside [250, 350] K"),
                ),
            ),
            2000,
            "ragged rows in two chunks and a bad value after them: row numbers must hold",
            chunk_rows=1000,
        )
    )

    text = _with(_frame(6, seed=33), "Torque [Nm]", ["40.1", "forty", "4O.1", "40,1", 12, "1.2.3"])
    cases.append(
        CorpusCase(
            "text_in_numeric_column",
            "text_in_numeric_column.csv",
            _csv(text).encode(),
            Ingestion(
                6,
                2,
                4,
                tuple(_q(r, "Torque [Nm]", TYPE_EXPECTATION, "not a number") for r in (2, 3, 4, 6)),
                stored_values={"torque_nm": (40.1, 12.0)},
            ),
            6,
            "words, a letter O, a decimal comma (quoted) and two dots in Torque",
        )
    )

    empty = _frame(5, seed=34)
    empty.loc[0, "Torque [Nm]"] = ""
    empty.loc[1, "TWF"] = ""  # optional leakage flag: empty is allowed
    empty.loc[2, "Product ID"] = ""
    empty.loc[3, "Rotational speed [rpm]"] = "   "
    cases.append(
        CorpusCase(
            "empty_cells",
            "empty_cells.csv",
            _csv(empty).encode(),
            Ingestion(
                5,
                2,
                3,
                (
                    _q(1, "Torque [Nm]", NOT_NULL, "missing value"),
                    _q(3, "Product ID", NOT_NULL, "missing value"),
                    _q(4, "Rotational speed [rpm]", NOT_NULL, "missing value"),
                ),
            ),
            5,
            "empty and blank required cells; an empty optional TWF cell is stored",
        )
    )

    special = _with(_frame(6, seed=35), "Torque [Nm]", ["inf", "nan", "1e999", "-inf", "NaN", 40])
    cases.append(
        CorpusCase(
            "inf_nan_overflow",
            "inf_nan_overflow.csv",
            _csv(special).encode(),
            Ingestion(
                6,
                1,
                5,
                (
                    _q(1, "Torque [Nm]", TYPE_EXPECTATION, "not a finite number"),
                    _q(2, "Torque [Nm]", NOT_NULL, "missing value"),
                    _q(3, "Torque [Nm]", TYPE_EXPECTATION, "not a finite number"),
                    _q(4, "Torque [Nm]", TYPE_EXPECTATION, "not a finite number"),
                    _q(5, "Torque [Nm]", NOT_NULL, "missing value"),
                ),
            ),
            6,
            "inf, -inf, 1e999 (overflows to inf) are not finite; nan is a missing value",
        )
    )

    fractional = _with(
        _frame(5, seed=36), "Rotational speed [rpm]", [1500, "1500.5", "1.5e3", "1500.0", "0.25"]
    )
    cases.append(
        CorpusCase(
            "fractional_integer",
            "fractional_integer.csv",
            _csv(fractional).encode(),
            Ingestion(
                5,
                3,
                2,
                (
                    _q(2, "Rotational speed [rpm]", TYPE_EXPECTATION, "not an integer"),
                    _q(5, "Rotational speed [rpm]", TYPE_EXPECTATION, "not an integer"),
                ),
                stored_values={"rotational_speed_rpm": (1500, 1500, 1500)},
            ),
            5,
            "1500.5 and 0.25 in an integer column; 1.5e3 and 1500.0 are whole numbers",
        )
    )

    ranges = _frame(6, seed=37)
    ranges.loc[0, "Air temperature [K]"] = 500
    ranges.loc[1, "Torque [Nm]"] = -5
    ranges.loc[2, "Rotational speed [rpm]"] = -10
    ranges.loc[3, "Process temperature [K]"] = 0
    ranges.loc[4, "Tool wear [min]"] = 5000
    cases.append(
        CorpusCase(
            "out_of_physical_range",
            "out_of_physical_range.csv",
            _csv(ranges).encode(),
            Ingestion(
                6,
                1,
                5,
                (
                    _q(1, "Air temperature [K]", BETWEEN, "outside [250, 350] K"),
                    _q(2, "Torque [Nm]", BETWEEN, "outside [0, 200] Nm"),
                    _q(3, "Rotational speed [rpm]", BETWEEN, "outside [0, 10000] rpm"),
                    _q(4, "Process temperature [K]", BETWEEN, "outside [250, 400] K"),
                    _q(5, "Tool wear [min]", BETWEEN, "outside [0, 1000] min"),
                ),
            ),
            6,
            "a 500 K air temperature, negative torque and speed, 0 K, 5000 min of wear",
        )
    )

    types = _with(_frame(6, seed=38), "Type", ["L", "l", "X", " M ", "", "Low"])
    cases.append(
        CorpusCase(
            "type_not_in_set",
            "type_not_in_set.csv",
            _csv(types).encode(),
            Ingestion(
                6,
                2,
                4,
                (
                    _q(2, "Type", IN_SET, "not one of L, M, H"),
                    _q(3, "Type", IN_SET, "not one of L, M, H"),
                    _q(5, "Type", NOT_NULL, "missing value"),
                    _q(6, "Type", IN_SET, "not one of L, M, H"),
                ),
                stored_values={"type": ("L", "M")},
            ),
            6,
            "lowercase l, X, an empty Type and 'Low'; ' M ' is trimmed and kept",
        )
    )

    labels = _with(_frame(6, seed=39), "Machine failure", [0, 2, -1, 1, "yes", "1.0"])
    cases.append(
        CorpusCase(
            "label_not_binary",
            "label_not_binary.csv",
            _csv(labels).encode(),
            Ingestion(
                6,
                3,
                3,
                (
                    _q(2, "Machine failure", IN_SET, "label not in {0, 1}"),
                    _q(3, "Machine failure", IN_SET, "label not in {0, 1}"),
                    _q(5, "Machine failure", TYPE_EXPECTATION, "not a number"),
                ),
                stored_values={"machine_failure": (0, 1, 1)},
            ),
            6,
            "labels 2, -1 and 'yes'; 1.0 is the label 1",
        )
    )

    dup = _with(_frame(6, seed=40), "UDI", [1, 2, 1, 4, 2, 6])
    later_copy = "duplicate entity id (an earlier row of this file has it; the first is kept)"
    cases.append(
        CorpusCase(
            "duplicated_udi",
            "duplicated_udi.csv",
            _csv(dup).encode(),
            Ingestion(
                6,
                4,
                2,
                tuple(_q(r, "UDI", UNIQUE, later_copy) for r in (3, 5)),
                stored_values={"udi": (1, 2, 4, 6)},
            ),
            6,
            "UDI 1 and 2 twice in one chunk: the first copies are kept, the later quarantined",
        )
    )

    dup_chunks = _frame(2000, seed=41)
    dup_chunks.loc[19, "UDI"] = 30  # rows 20 and 30: same chunk
    dup_chunks.loc[1799, "UDI"] = 10  # row 1800 repeats row 10, a chunk earlier
    cases.append(
        CorpusCase(
            "duplicated_udi_across_chunks",
            "duplicated_udi_across_chunks.csv",
            _csv(dup_chunks).encode(),
            Ingestion(
                2000,
                1998,
                2,
                (
                    # the same rule within a chunk and across chunks: the first copy stays
                    _q(30, "UDI", UNIQUE, later_copy),
                    _q(1800, "UDI", UNIQUE, later_copy),
                ),
            ),
            2000,
            "a repeated UDI within a chunk and one across chunks",
            chunk_rows=1000,
        )
    )

    huge = _with(_frame(4, seed=42), "UDI", [1, 2**53, 3, -(2**60)])
    cases.append(
        CorpusCase(
            "udi_too_large",
            "udi_too_large.csv",
            _csv(huge).encode(),
            Ingestion(
                4,
                2,
                2,
                (
                    _q(2, "UDI", TYPE_EXPECTATION, "integer too large (|value| >= 2**53)"),
                    _q(4, "UDI", TYPE_EXPECTATION, "integer too large (|value| >= 2**53)"),
                ),
            ),
            4,
            "ids a float64 cannot hold exactly",
        )
    )

    stamps = _frame(5, seed=43)
    stamps.insert(
        1,
        "Timestamp",
        ["2024-05-01T08:00:00Z", "yesterday", "2024-13-01", "", "2024-05-01 10:00"],
    )
    cases.append(
        CorpusCase(
            "bad_timestamp",
            "bad_timestamp.csv",
            _csv(stamps).encode(),
            Ingestion(
                5,
                3,
                2,
                (
                    _q(2, "Timestamp", TYPE_EXPECTATION, "not an ISO-8601 timestamp"),
                    _q(3, "Timestamp", TYPE_EXPECTATION, "not an ISO-8601 timestamp"),
                ),
            ),
            5,
            "'yesterday' and month 13 in the optional Timestamp column; empty is allowed",
        )
    )

    parquet_text = generate_ai4i(5, seed=44)
    parquet_text["Torque [Nm]"] = ["40.1", "abc", None, " 12 ", "n/a"]
    cases.append(
        CorpusCase(
            "parquet_text_torque",
            "parquet_text_torque.parquet",
            _parquet(parquet_text),
            Ingestion(
                5,
                2,
                3,
                (
                    _q(2, "Torque [Nm]", TYPE_EXPECTATION, "not a number"),
                    _q(3, "Torque [Nm]", NOT_NULL, "missing value"),
                    _q(5, "Torque [Nm]", TYPE_EXPECTATION, "not a number"),
                ),
                stored_values={"torque_nm": (40.1, 12.0)},
            ),
            5,
            "Parquet with Torque stored as strings, some not numbers",
        )
    )

    parquet_float = generate_ai4i(4, seed=45)
    parquet_float["UDI"] = [1.0, 2.5, 3.0, 4.0]
    parquet_float["Tool wear [min]"] = [3.0, 5.0, 7.5, 9.0]
    cases.append(
        CorpusCase(
            "parquet_wrong_types",
            "parquet_wrong_types.parquet",
            _parquet(parquet_float),
            Ingestion(
                4,
                2,
                2,
                (
                    _q(2, "UDI", TYPE_EXPECTATION, "not an integer"),
                    _q(3, "Tool wear [min]", TYPE_EXPECTATION, "not an integer"),
                ),
                stored_values={"udi": (1, 4), "tool_wear_min": (3, 9)},
            ),
            4,
            "Parquet with float64 where integers belong: whole values kept, 2.5 and 7.5 not",
        )
    )

    all_bad = _with(_frame(4, seed=46), "Type", ["l", "m", "h", "l"])
    cases.append(
        CorpusCase(
            "every_row_bad",
            "every_row_bad.csv",
            _csv(all_bad).encode(),
            Ingestion(4, 0, 4, tuple(_q(r, "Type", IN_SET, "not one of") for r in (1, 2, 3, 4))),
            4,
            "every row quarantined: an empty version is committed, nothing stored",
        )
    )

    blank = _lines(_frame(6, seed=47))
    fields = blank[4].split(",")
    fields[6] = "-1.0"  # torque of data row 4
    blank[4] = ",".join(fields)
    blank = [*blank[:3], "", *blank[3:], ""]  # a blank line after data row 2 and at the end
    cases.append(
        CorpusCase(
            "blank_lines_inside",
            "blank_lines_inside.csv",
            _join(blank),
            Ingestion(6, 5, 1, (_q(4, "Torque [Nm]", BETWEEN, "outside [0, 200] Nm"),)),
            6,
            "blank lines are skipped and not counted: row numbers count data rows",
        )
    )
    return cases


def _clean_cases() -> list[CorpusCase]:
    bom = _frame(5, seed=50)
    crlf = _frame(5, seed=51)
    spaced = _frame(5, seed=53)
    extra = _frame(5, seed=54)
    extra.insert(3, "Operator", ["ann", "bob", "cy", "dee", "eve"])
    extra["Comment"] = ["", "ok", "x,y", "", "z"]
    quoted = _frame(5, seed=55)
    quoted_lines = _lines(quoted)
    product = str(quoted.loc[1, "Product ID"])
    weird_id = f"{product[:3]},\n{product[3:]}"
    quoted_lines[2] = quoted_lines[2].replace(product, f'"{weird_id}"', 1)
    quoted_ids = tuple(str(p) for p in quoted["Product ID"])
    canonical = generate_ai4i(5, seed=56).rename(
        columns={
            "UDI": "udi",
            "Product ID": "product_id",
            "Type": "type",
            "Air temperature [K]": "air_temperature_k",
            "Process temperature [K]": "process_temperature_k",
            "Rotational speed [rpm]": "rotational_speed_rpm",
            "Torque [Nm]": "torque_nm",
            "Tool wear [min]": "tool_wear_min",
            "Machine failure": "machine_failure",
        }
    )
    return [
        CorpusCase(
            "utf8_bom",
            "utf8_bom.csv",
            b"\xef\xbb\xbf" + _csv(bom).encode(),
            Ingestion(5, 5, 0, stored_values={"udi": (1, 2, 3, 4, 5)}),
            5,
            "UTF-8 with a byte-order mark (Excel 'CSV UTF-8'): accepted, the BOM dropped",
            malformed=False,
        ),
        CorpusCase(
            "crlf_line_endings",
            "crlf_line_endings.csv",
            _csv(crlf).replace("\n", "\r\n").encode(),
            Ingestion(5, 5, 0, stored_values={"rnf": tuple(int(v) for v in crlf["RNF"])}),
            5,
            "Windows line endings: accepted, no stray \\r in the last column",
            malformed=False,
        ),
        CorpusCase(
            "whitespace_around_values",
            "whitespace_around_values.csv",
            _csv(spaced).replace(",", " , ").replace("\n", " \n").encode(),
            Ingestion(
                5,
                5,
                0,
                stored_values={
                    "type": tuple(str(t) for t in spaced["Type"]),
                    "product_id": tuple(str(p) for p in spaced["Product ID"]),
                    "torque_nm": tuple(float(t) for t in spaced["Torque [Nm]"]),
                },
            ),
            5,
            "spaces around every header and value: trimmed and accepted",
            malformed=False,
        ),
        CorpusCase(
            "unknown_extra_columns",
            "unknown_extra_columns.csv",
            _csv(extra).encode(),
            Ingestion(5, 5, 0, dropped_columns=("Operator", "Comment", "operator", "comment")),
            5,
            "columns the schema does not know: accepted and dropped",
            malformed=False,
        ),
        CorpusCase(
            "quoted_comma_and_newline",
            "quoted_comma_and_newline.csv",
            _join(quoted_lines),
            Ingestion(
                5,
                5,
                0,
                stored_values={"product_id": (quoted_ids[0], weird_id, *quoted_ids[2:])},
            ),
            5,
            "a quoted Product ID holding a comma and a newline: one row, kept verbatim",
            malformed=False,
        ),
        CorpusCase(
            "parquet_canonical_headers",
            "parquet_canonical_headers.parquet",
            _parquet(canonical),
            Ingestion(5, 5, 0),
            5,
            "Parquet with the canonical snake_case names: accepted",
            malformed=False,
        ),
    ]


# -- hostile input: formulas, look-alikes, giant fields, archives and bombs -----------------

FORMULA_TYPES = ['=HYPERLINK("http://x.example","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)"]
FORMULA_IDS = [
    "=1+1",
    '=HYPERLINK("http://x.example","y")',
    "@SUM(A1)",
    "-2+3",
    "+cmd|'/C calc'!A0",
]
GIANT_CHARS = 2 << 20


@functools.cache
def gzip_bomb(expanded_mib: int) -> bytes:
    """Gzip bytes that expand to a CSV header and ``expanded_mib`` MiB of zeros.

    Built without compressing gigabytes: after a full flush the compressor starts
    afresh, so one compressed MiB of zeros is valid at any point of the stream and is
    repeated (about 1,000 to 1). The trailer's CRC is not computed (it is only checked
    once every byte has been expanded, which a reader of this file must never do).
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress((HEADER + "\n").encode()) + deflate.flush(zlib.Z_FULL_FLUSH)
    zeros = b"0" * (1 << 20)
    piece = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    if deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH) != piece:
        raise RuntimeError("a full flush did not make the compressed MiB repeatable")
    tail = deflate.flush()
    magic = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return magic + head + piece * expanded_mib + tail + struct.pack("<II", 0, 0)


def parquet_bomb(rows: int, text_chars: int) -> Writer:
    """A Parquet file of ``rows`` rows whose Product ID is one ``text_chars``-long text.

    Dictionary-encoded and compressed, the file is a few hundred KB; decoded, the rows
    take ``rows * text_chars`` bytes.
    """

    def write(path: Path) -> None:
        udi = pa.array(np.arange(1, rows + 1, dtype="int64"))
        product = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(rows, dtype="int32")), pa.array(["L" * text_chars])
        )
        columns = {name: pa.array(np.zeros(rows, dtype="int64")) for name in AI4I_COLUMNS}
        columns.update(
            {
                "UDI": udi,
                "Product ID": product,
                "Type": pa.DictionaryArray.from_arrays(
                    pa.array(np.zeros(rows, dtype="int32")), pa.array(["L"])
                ),
                "Air temperature [K]": pa.array(np.full(rows, 300.0)),
                "Process temperature [K]": pa.array(np.full(rows, 310.0)),
                "Torque [Nm]": pa.array(np.full(rows, 40.0)),
            }
        )
        pq.write_table(pa.table(columns), path, compression="zstd")

    return write


def _gzip_csv(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as fh:
        fh.write(data)
    return out.getvalue()


def _zip_csv(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def _write_lazily(build: Callable[[], bytes]) -> Writer:
    def write(path: Path) -> None:
        path.write_bytes(build())

    return write


def _hostile_cases() -> list[CorpusCase]:
    valid = _csv(_frame(5, seed=60)).encode()

    formulas = _frame(9, seed=61)
    formulas["Type"] = [*FORMULA_TYPES, "L", "M", "H", "L", "\t=1+1"]
    formulas["Product ID"] = ["M1", "M2", "M3", "M4", *FORMULA_IDS]
    formulas['=HYPERLINK("http://x.example","header")'] = "=1+1"  # an unknown column: dropped
    not_in_set = "not one of L, M, H"

    lookalikes = _with(
        _frame(7, seed=62),
        "Type",
        ["\u041c", "\uff2c", "L\u200b", "\u202eL", "H\x00", "l\u0307", "M"],
    )

    giant = _frame(5, seed=63)
    giant.loc[1, "Product ID"] = "M" * GIANT_CHARS
    giant.loc[3, "Torque [Nm]"] = "4" + "0" * GIANT_CHARS + "x"
    too_long = f"text longer than {MAX_TEXT_CHARS:,} characters"

    single = _with(_frame(8, seed=64), "Machine failure", [0] * 8)
    for flag in ("TWF", "HDF", "PWF", "OSF", "RNF"):
        single[flag] = 0

    return [
        CorpusCase(
            "formula_injection",
            "formula_injection.csv",
            _csv(formulas).encode(),
            Ingestion(
                9,
                4,
                5,
                (
                    *(_q(r, "Type", IN_SET, not_in_set) for r in (1, 2, 3, 4)),
                    _q(9, "Type", IN_SET, not_in_set),
                ),
                # formulas in a text identifier are stored as the file wrote them
                stored_values={"type": ("L", "M", "H", "L"), "product_id": tuple(FORMULA_IDS[:4])},
                dropped_columns=('=HYPERLINK("http://x.example","header")',),
            ),
            9,
            "spreadsheet formulas (=HYPERLINK, +cmd|, -2+3, @SUM) as Type: quarantined; as "
            "Product ID: stored literally, never evaluated; a formula as a header: dropped",
        ),
        CorpusCase(
            "type_lookalikes",
            "type_lookalikes.csv",
            _csv(lookalikes).encode(),
            Ingestion(7, 1, 6, tuple(_q(r, "Type", IN_SET, not_in_set) for r in range(1, 7))),
            7,
            "Cyrillic M, fullwidth L, a zero-width space, a right-to-left override, a NUL "
            "byte and a combining dot: none of them is L, M or H",
        ),
        CorpusCase(
            "giant_fields",
            "giant_fields.csv",
            _csv(giant).encode(),
            Ingestion(
                5,
                3,
                2,
                (
                    _q(2, "Product ID", TYPE_EXPECTATION, too_long),
                    _q(4, "Torque [Nm]", TYPE_EXPECTATION, "not a number"),
                ),
            ),
            5,
            f"an {GIANT_CHARS >> 20} MiB Product ID and an {GIANT_CHARS >> 20} MiB Torque: "
            "quarantined (and clipped there), the other rows stored",
        ),
        CorpusCase(
            "single_class",
            "single_class.csv",
            _csv(single).encode(),
            Ingestion(8, 8, 0, stored_values={"machine_failure": (0,) * 8}),
            8,
            "every label 0: valid rows, stored (training on them alone must refuse to fit)",
            malformed=False,
        ),
        CorpusCase(
            "gzip_csv",
            "observations.csv.gz",
            _gzip_csv(valid),
            Rejection("unsupported file type '.gz'"),
            0,
            "a gzip-compressed CSV: compressed input is not accepted, never decompressed",
        ),
        CorpusCase(
            "zip_archive",
            "observations.zip",
            _zip_csv("observations.csv", valid),
            Rejection("unsupported file type '.zip'"),
            0,
            "a zip archive holding a CSV",
        ),
        CorpusCase(
            "gzip_bomb_as_csv",
            "gzip_bomb.csv",
            _write_lazily(lambda: gzip_bomb(10 << 10)),
            Rejection("not UTF-8 text (byte 1: invalid start byte)"),
            0,
            "10 MB of gzip expanding to 10 GiB, named .csv: refused at its second byte",
        ),
        CorpusCase(
            "parquet_decompression_bomb",
            "parquet_bomb.parquet",
            parquet_bomb(200_000, 10_000),
            Rejection("a decompression bomb"),
            200_000,
            "a Parquet file whose one dictionary text, repeated, decodes to 2 GB: refused "
            "before it is decoded",
        ),
    ]


def build_corpus() -> list[CorpusCase]:
    """Every case; ids and file names are unique."""
    cases = [*_whole_file_cases(), *_row_level_cases(), *_clean_cases(), *_hostile_cases()]
    ids = [c.id for c in cases]
    names = [c.filename for c in cases]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise ValueError("corpus case ids and file names must be unique")
    return cases
