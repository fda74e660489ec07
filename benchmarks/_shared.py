"""Helpers the benchmark scripts share: memory high-water marks and a fresh state folder.

Each benchmark runs as a script (``python benchmarks/<name>.py``), so this module is
imported from the script's own folder.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark, in MiB.

    Linux: ``VmHWM``, which belongs to this program's address space. ``ru_maxrss`` is
    only the fallback: Linux carries it over ``exec`` from the forking parent, so a
    child of a big parent would report at least the parent's size.
    """
    if _STATUS.is_file():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def stage_peak_mb() -> float:
    """The high-water mark since the last call; resets it where Linux allows (else cumulative)."""
    peak = peak_rss_mb()
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")
    return peak


def fresh_state(state: Path) -> tuple[Any, Any]:
    """The landing area (its folder made) and feature store of a state folder under ``state``.

    Built by :func:`mlplatform.defs.resources.build_resources`: configured exactly as the
    assets' resources are.
    """
    from mlplatform.defs.resources import build_resources
    from mlplatform.paths import StatePaths

    paths = StatePaths(state)
    paths.landing.mkdir(parents=True)
    resources = build_resources(paths)
    return resources["landing"], resources["feature_store"]
