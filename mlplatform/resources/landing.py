"""The landing area: an inbox of CSV and Parquet files, an archive and a rejected area.

Every landed file is identified by the sha256 of its bytes. After ingestion it
moves to the archive, byte for byte; a file that cannot be ingested moves to the
rejected area beside a ``.reason.txt``. Nothing is deleted.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from mlplatform.core.ingest import FileRejected
from mlplatform.resources.files import TMP_PREFIX, write_bytes_atomic, write_with_atomic

__all__ = ["LandedFile", "LandingArea"]

SUPPORTED_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class LandedFile:
    """A file waiting in the landing folder."""

    path: Path
    sha256: str
    size_bytes: int

    @property
    def name(self) -> str:
        """The file's name as landed."""
        return self.path.name

    @property
    def stored_name(self) -> str:
        """Name in the archive or rejected area: hash prefix, then the landed name."""
        return f"{self.sha256[:16]}__{self.path.name}"


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class LandingArea(dg.ConfigurableResource):
    """Reads landed files and moves them to the archive or the rejected area."""

    landing_dir: str
    archive_dir: str
    rejected_dir: str

    def pending(self) -> list[LandedFile]:
        """Files waiting in the landing folder, oldest name first; hidden files are ignored."""
        root = Path(self.landing_dir)
        if not root.is_dir():
            return []
        found = []
        for p in sorted(root.iterdir()):
            if not p.is_file() or p.name.startswith((".", TMP_PREFIX)):
                continue
            found.append(LandedFile(p, _sha256(p), p.stat().st_size))
        return found

    def read(self, landed: LandedFile) -> pd.DataFrame:
        """The file's rows, every column as text (typing happens in core).

        Raises
        ------
        FileRejected
            Naming the file, when it is of an unsupported kind, empty, not UTF-8
            text or not parseable.
        """
        suffix = landed.path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise FileRejected(
                landed.name,
                f"unsupported file type {suffix or '(none)'!r}; "
                f"expected one of {', '.join(SUPPORTED_SUFFIXES)}",
            )
        if landed.size_bytes == 0:
            raise FileRejected(landed.name, "the file is empty (0 bytes)")
        try:
            if suffix == ".csv":
                return pd.read_csv(
                    landed.path,
                    dtype=str,
                    keep_default_na=False,
                    encoding="utf-8",
                    encoding_errors="strict",
                )
            return pd.read_parquet(landed.path)
        except UnicodeDecodeError as exc:
            raise FileRejected(
                landed.name, f"not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from exc
        except pd.errors.EmptyDataError as exc:
            raise FileRejected(landed.name, "no header and no rows") from exc
        except pd.errors.ParserError as exc:
            raise FileRejected(landed.name, f"unparseable CSV: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise FileRejected(landed.name, f"unreadable {suffix[1:]} file: {exc}") from exc

    def archive(self, landed: LandedFile) -> Path:
        """Move ``landed`` to the archive (kept byte for byte); returns its new path."""
        return self._move(landed, Path(self.archive_dir))

    def reject(self, landed: LandedFile, reason: str) -> Path:
        """Move ``landed`` to the rejected area with a reason file; returns its new path."""
        target = self._move(landed, Path(self.rejected_dir))
        write_bytes_atomic(reason.encode(), target.with_name(target.name + ".reason.txt"))
        return target

    def drop(self, frame: pd.DataFrame, name: str) -> Path:
        """Write ``frame`` into the landing folder as CSV (atomically), e.g. sample data."""
        target = Path(self.landing_dir) / name
        return write_with_atomic(lambda tmp: frame.to_csv(tmp, index=False), target)

    def _move(self, landed: LandedFile, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / landed.stored_name
        shutil.move(landed.path, target)
        return target
