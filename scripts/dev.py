#!/usr/bin/env python3
"""Set up the project from its lockfile and run the main job or the checks.

Needs only Python 3.11+:

    python3 scripts/dev.py run     # install, generate sample data, run the whole lifecycle
    python3 scripts/dev.py test    # install with dev tools, then ruff, mypy and pytest

Extra arguments go to ``mlplatform run`` or to pytest. The environment is
``.venv`` in the checkout, installed by uv from ``uv.lock`` (uv itself is
installed into that venv with pip, pinned below).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

UV_VERSION = "0.13.9"
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def _call(*argv: str | Path, env: dict[str, str] | None = None) -> int:
    _say(" ".join(str(a) for a in argv))
    return subprocess.call([str(a) for a in argv], cwd=ROOT, env=env)


def _check(*argv: str | Path) -> None:
    code = _call(*argv)
    if code != 0:
        sys.exit(code)


def setup(dev: bool) -> None:
    """Create ``.venv`` and sync it with ``uv.lock`` (frozen: the lockfile is not changed)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before the venv exists
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        _say(f"creating {VENV}")
        venv.create(VENV, with_pip=True)
    uv = BIN / "uv"
    have = (
        subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout
        if uv.exists()
        else ""
    )
    if UV_VERSION not in have:
        _check(
            BIN / "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"uv=={UV_VERSION}",
        )
    # --inexact keeps pip and uv themselves in the venv. --compile-bytecode writes every
    # package's .pyc now (seconds when nothing changed): otherwise each new process, and
    # the tests start many (dagster dev, mlplatform run), compiles what it imports anew
    # where PYTHONDONTWRITEBYTECODE is set, ~20 s of CPU per process on this machine.
    _check(
        uv, "sync", "--frozen", "--inexact", "--compile-bytecode", *([] if dev else ["--no-dev"])
    )


def run(args: list[str]) -> int:
    """The main job: sample data through to a champion and predictions."""
    setup(dev=False)
    return _call(BIN / "mlplatform", "run", *args)


def test(args: list[str]) -> int:
    """Lint, type check and the test suite."""
    setup(dev=True)
    for step in (
        (BIN / "ruff", "check", "."),
        (BIN / "ruff", "format", "--check", "."),
        (BIN / "mypy",),
    ):
        code = _call(*step)
        if code != 0:
            return code
    return _call(BIN / "python", "-m", "pytest", *args)


def main() -> int:
    commands = {"run": run, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
