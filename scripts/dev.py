#!/usr/bin/env python3
"""Set up the project from its lockfile and run the main job or the checks.

Needs only Python 3.11+:

    python3 scripts/dev.py run     # install, generate sample data, run the whole lifecycle
    python3 scripts/dev.py test    # install with dev tools, then ruff, mypy, pytest, pip-audit

Extra arguments go to ``mlplatform run`` or to pytest. The environment is
``.venv`` in the checkout, installed by uv from ``uv.lock`` (uv itself is
installed into that venv with pip, pinned below).

``test`` ends with a dependency audit: ``pip-audit`` (a locked dev dependency) looks
up every installed package in PyPI's vulnerability data and one line reports the
number of known vulnerabilities. Where that service cannot be reached the line says
so and the audit is skipped; the audit never changes the command's exit status (CI
runs it as a step of its own, which fails on a known vulnerability).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path
from typing import Any

UV_VERSION = "0.13.9"
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
# pip-audit's default vulnerability service: PyPI's JSON API, asked per release (an old,
# permanent one here); a mirror may answer for a project and not for its releases
AUDIT_SERVICE_PROBE = "https://pypi.org/pypi/pip/24.0/json"
AUDIT_TIMEOUT_S = 600


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


def service_problem(probe: str = AUDIT_SERVICE_PROBE) -> str | None:
    """Why the vulnerability service cannot be used from here; None when it answers."""
    try:
        with urllib.request.urlopen(probe, timeout=10) as response:
            json.load(response)["vulnerabilities"]
    except (OSError, ValueError, KeyError, TypeError) as exc:  # URLError is an OSError
        return f"{probe}: {exc}"
    return None


def summarize(report: dict[str, Any]) -> list[str]:
    """The audit's result from pip-audit's JSON report: one line, then one per vulnerability.

    Every package skipped (none could be looked up) means the service did not answer
    for them: that is reported as unreachable, never as "no vulnerabilities".
    """
    packages = report.get("dependencies", [])
    audited = [p for p in packages if "skip_reason" not in p]
    if packages and not audited:
        return [
            f"pip-audit: vulnerability service unreachable ({len(packages)} packages could not "
            "be looked up), skipped"
        ]
    affected = [p for p in audited if p.get("vulns")]
    count = sum(len(p["vulns"]) for p in affected)
    skipped = len(packages) - len(audited)
    lines = [
        f"pip-audit: {count} known vulnerabilit{'y' if count == 1 else 'ies'} in "
        f"{len(affected)} of {len(audited)} packages"
        + (f" ({skipped} could not be looked up)" if skipped else "")
    ]
    for package in affected:
        for vuln in package["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or [])
            fixed = f"fixed in {fixes}" if fixes else "no fix yet"
            lines.append(f"  {package['name']} {package['version']}: {vuln['id']} ({fixed})")
    return lines


def audit(probe: str = AUDIT_SERVICE_PROBE) -> list[str]:
    """Audit the installed dependencies; report, never fail: the lines it printed."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        lines = ["pip-audit: runs as its own step in CI"]
    elif (problem := service_problem(probe)) is not None:
        lines = [f"pip-audit: vulnerability service unreachable ({problem}), skipped"]
    else:
        with tempfile.TemporaryDirectory(prefix="pip-audit-") as tmp:
            out = Path(tmp) / "audit.json"
            argv = [BIN / "pip-audit", "--skip-editable", "--progress-spinner", "off"]
            _say(" ".join(str(a) for a in [*argv, "--format", "json"]))
            try:
                done = subprocess.run(
                    [*map(str, argv), "--format", "json", "--output", str(out)],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=AUDIT_TIMEOUT_S,
                )
                lines = (
                    summarize(json.loads(out.read_text()))
                    if out.is_file()
                    else [f"pip-audit: failed (exit {done.returncode}): {done.stderr[-300:]}"]
                )
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                lines = [f"pip-audit: could not run ({exc}), skipped"]
    for line in lines:
        _say(line)
    return lines


def test(args: list[str]) -> int:
    """Lint, type check, the test suite, then the dependency audit (reported only)."""
    setup(dev=True)
    for step in (
        (BIN / "ruff", "check", "."),
        (BIN / "ruff", "format", "--check", "."),
        (BIN / "mypy",),
    ):
        code = _call(*step)
        if code != 0:
            return code
    code = _call(BIN / "python", "-m", "pytest", *args)
    audit()
    return code


def main() -> int:
    commands = {"run": run, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
