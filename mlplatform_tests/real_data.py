"""Where the real AI4I 2020 file lives, for tests that need it (never copied here)."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_AI4I = Path(__file__).resolve().parents[2] / "shared" / "data" / "ai4i2020.csv"


def require_real_ai4i() -> Path:
    """The real file's path (``../shared/data`` beside the checkout), or skip the test."""
    if not REAL_AI4I.is_file():
        pytest.skip(f"real AI4I file not found at {REAL_AI4I}")
    return REAL_AI4I
