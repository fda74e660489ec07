#!/usr/bin/env python3
"""Generate the docs that are derived from the code, or check that they are current.

    .venv/bin/python scripts/docs.py           # write docs/asset-graph.svg, docs/configuration.md
    .venv/bin/python scripts/docs.py --check   # exit 1 naming every stale file

- ``docs/asset-graph.svg``: the asset graph of ``mlplatform.definitions`` (assets by
  group, their kinds and checks, the lineage edges), drawn with matplotlib. The
  nodes and edges it was drawn from are embedded in the SVG's metadata, so a test
  compares them with the current definitions (not pixels).
- ``docs/configuration.md``: every setting: environment variables (from
  :data:`mlplatform.settings.ENVIRONMENT`), the run config of every asset and op
  (their ``dg.Config`` classes), every resource's fields and the value the embedded
  deployment gives them, the dataset spec file's keys, and the command line.

Both are deterministic: the same code gives byte-identical files.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GRAPH_SVG = DOCS / "asset-graph.svg"
CONFIGURATION_MD = DOCS / "configuration.md"
# the state folder as the docs show it
HOME_PLACEHOLDER = "/MLPLATFORM_HOME"
GRAPH_METADATA_KEY = "Description"

GROUP_COLOURS = {
    "ingestion": "#dbeafe",
    "features": "#dcfce7",
    "training": "#fef9c3",
    "evaluation": "#ffedd5",
    "registry": "#f3e8ff",
    "inference": "#e0f2fe",
    "monitoring": "#fee2e2",
}
DEFAULT_COLOUR = "#f1f5f9"


@contextlib.contextmanager
def _clean_environment() -> Iterator[None]:
    """Without the platform's environment variables: the docs show the defaults."""
    from mlplatform.settings import ENVIRONMENT

    saved = {s.name: os.environ.pop(s.name) for s in ENVIRONMENT if s.name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _definitions() -> Any:
    from mlplatform.definitions import build_definitions
    from mlplatform.paths import StatePaths

    return build_definitions(StatePaths(Path(HOME_PLACEHOLDER)))


# --- the asset graph ----------------------------------------------------------------------


def asset_graph_structure(defs: Any) -> dict[str, Any]:
    """Nodes and edges of the definitions' asset graph, as plain sorted data."""
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[tuple[str, bool]]] = {}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        checks.setdefault(check_key.asset_key.to_user_string(), []).append(
            (check_key.name, bool(spec.blocking))
        )
    nodes = []
    edges = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        name = key.to_user_string()
        nodes.append(
            {
                "key": name,
                "group": node.group_name,
                "kinds": sorted(node.kinds),
                "partitioned": node.partitions_def is not None,
                "checks": [list(c) for c in sorted(checks.get(name, []))],
            }
        )
        edges += [[parent.to_user_string(), name] for parent in node.parent_keys]
    return {"nodes": nodes, "edges": sorted(edges)}


def _layers(structure: dict[str, Any]) -> list[list[str]]:
    """Assets by depth (longest path from a root), ordered to keep edges short."""
    parents: dict[str, list[str]] = {n["key"]: [] for n in structure["nodes"]}
    for parent, child in structure["edges"]:
        parents[child].append(parent)
    depth: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in depth:
            depth[key] = 1 + max((level(p) for p in parents[key]), default=-1)
        return depth[key]

    for key in parents:
        level(key)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for key in sorted(parents):
        layers[depth[key]].append(key)
    position: dict[str, float] = {}
    for layer in layers:
        layer.sort(
            key=lambda k: (
                sum(position[p] for p in parents[k]) / len(parents[k]) if parents[k] else 0.0,
                k,
            )
        )
        for i, key in enumerate(layer):
            position[key] = i - (len(layer) - 1) / 2
    return layers


def draw_asset_graph(structure: dict[str, Any]) -> bytes:
    """The asset graph as SVG (text kept as text), with ``structure`` in its metadata."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    nodes = {n["key"]: n for n in structure["nodes"]}
    layers = _layers(structure)
    box_w, gap_x, row_h = 3.8, 0.5, 1.9
    widest = max(len(layer) for layer in layers)
    width = widest * (box_w + gap_x)
    height = len(layers) * row_h
    centre: dict[str, tuple[float, float]] = {}
    box_h: dict[str, float] = {}
    for row, layer in enumerate(layers):
        for i, key in enumerate(layer):
            x = width / 2 + (i - (len(layer) - 1) / 2) * (box_w + gap_x)
            centre[key] = (x, height - (row + 0.5) * row_h)
            box_h[key] = 0.75 + 0.2 * len(nodes[key]["checks"])
    with plt.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "mlplatform-asset-graph", "font.size": 9}
    ):
        total_w = width + 0.4 + 0.16 * len(structure["edges"]) + 1.6  # lanes, legend
        fig, ax = plt.subplots(figsize=(total_w * 0.95, height * 0.95))
        ax.set_xlim(0, total_w)
        ax.set_ylim(-0.6, height)
        ax.axis("off")
        row_of = {key: row for row, layer in enumerate(layers) for key in layer}
        arrow = {"arrowstyle": "-|>", "mutation_scale": 12, "zorder": 1}
        skips = []
        for parent, child in structure["edges"]:
            (x0, y0), (x1, y1) = centre[parent], centre[child]
            if row_of[child] - row_of[parent] == 1:
                ax.add_patch(
                    FancyArrowPatch(
                        (x0, y0 - box_h[parent] / 2),
                        (x1, y1 + box_h[child] / 2),
                        color="#475569",
                        **arrow,
                    )
                )
            else:
                skips.append((row_of[child] - row_of[parent], row_of[parent], parent, child))
        # An edge that skips rows runs orthogonally: down into the gap below its source,
        # right to a lane of its own beside every box, down, and back left in the gap above
        # its target; no line crosses a box.
        right = max(x for x, _ in centre.values()) + box_w / 2
        for lane, (_, _, parent, child) in enumerate(sorted(skips)):
            (x0, y0), (x1, y1) = centre[parent], centre[child]
            lane_x = right + 0.25 + 0.14 * lane
            step = 0.12 + 0.07 * (lane % 5)
            x_out = x0 + box_w * 0.3 + 0.05 * (lane % 3)
            x_in = x1 + box_w * 0.3 + 0.05 * (lane % 3)
            y_out = y0 - box_h[parent] / 2 - step
            y_in = y1 + box_h[child] / 2 + step
            ax.plot(
                [x_out, x_out, lane_x, lane_x, x_in],
                [y0 - box_h[parent] / 2, y_out, y_out, y_in, y_in],
                color="#94a3b8",
                linewidth=0.9,
                zorder=1,
            )
            ax.add_patch(
                FancyArrowPatch(
                    (x_in, y_in), (x_in, y1 + box_h[child] / 2), color="#94a3b8", **arrow
                )
            )
        for key, (x, y) in centre.items():
            node = nodes[key]
            h = box_h[key]
            ax.add_patch(
                FancyBboxPatch(
                    (x - box_w / 2, y - h / 2),
                    box_w,
                    h,
                    boxstyle="round,pad=0.02,rounding_size=0.12",
                    facecolor=GROUP_COLOURS.get(node["group"], DEFAULT_COLOUR),
                    edgecolor="#334155",
                    linewidth=1.2,
                    zorder=2,
                )
            )
            top = y + h / 2
            title = key + ("  [partitioned]" if node["partitioned"] else "")
            ax.text(x, top - 0.2, title, ha="center", va="center", weight="bold", zorder=3)
            ax.text(
                x,
                top - 0.45,
                f"{node['group']} · {', '.join(node['kinds'])}",
                ha="center",
                va="center",
                fontsize=7.5,
                color="#334155",
                zorder=3,
            )
            for i, (check, blocking) in enumerate(node["checks"]):
                ax.text(
                    x,
                    top - 0.68 - 0.2 * i,
                    f"{'◆' if blocking else '◇'} {check}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="#7f1d1d" if blocking else "#92400e",
                    zorder=3,
                )
        groups = sorted({n["group"] for n in structure["nodes"]})
        handles = [
            Patch(facecolor=GROUP_COLOURS.get(g, DEFAULT_COLOUR), edgecolor="#334155", label=g)
            for g in groups
        ]
        ax.legend(
            handles=handles,
            loc="upper right",
            frameon=False,
            fontsize=8,
            title="group",
            title_fontsize=8,
        )
        ax.text(
            0,
            -0.45,
            "◆ blocking check   ◇ warning check   (generated by scripts/docs.py from "
            "mlplatform.definitions)",
            fontsize=7,
            color="#64748b",
        )
        out = io.BytesIO()
        fig.savefig(
            out,
            format="svg",
            bbox_inches="tight",
            metadata={
                "Date": None,
                "Title": "mlplatform asset graph",
                GRAPH_METADATA_KEY: json.dumps(structure, sort_keys=True),
            },
        )
        plt.close(fig)
    return out.getvalue()


def embedded_structure(svg: str) -> dict[str, Any]:
    """The nodes and edges embedded in a generated SVG."""
    match = re.search(r"<dc:description>(.*?)</dc:description>", svg, re.DOTALL)
    if match is None:
        raise ValueError("the SVG has no embedded asset graph (dc:description)")
    import html

    loaded: dict[str, Any] = json.loads(html.unescape(match[1]))
    return loaded


# --- the configuration reference ----------------------------------------------------------


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _value(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value) if isinstance(value, list | dict | bool) else str(value)
    text = text.replace(f"file://{HOME_PLACEHOLDER}", "file://$MLPLATFORM_HOME")
    text = text.replace(f"sqlite:///{HOME_PLACEHOLDER}", "sqlite:///$MLPLATFORM_HOME")
    return text.replace(HOME_PLACEHOLDER, "$MLPLATFORM_HOME")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _field_default(info: Any) -> Any:
    from pydantic_core import PydanticUndefined

    if info.default_factory is not None:
        return info.default_factory()
    return "(required)" if info.default is PydanticUndefined else info.default


def _config_classes(defs: Any) -> list[tuple[str, str, type]]:
    """(op or asset name, job it runs in, Config class) for every configurable step."""
    import dagster as dg

    found: dict[str, tuple[str, str, type]] = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        for node in job.nodes:
            op = node.definition
            if not isinstance(op, dg.OpDefinition) or op.name in found:
                continue
            hints = typing.get_type_hints(op.compute_fn.decorated_fn)
            config = hints.get("config")
            if isinstance(config, type) and issubclass(config, dg.Config):
                found[op.name] = (op.name, job.name, config)
    return [found[k] for k in sorted(found)]


def _job_of(defs: Any, asset: str) -> str:
    names = []
    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue
        if asset in {n.name for n in job.nodes}:
            names.append(job.name)
    return ", ".join(sorted(names)) or "(materialize from the UI)"


def configuration_reference(defs: Any) -> str:
    """``docs/configuration.md``."""
    from mlplatform.cli import build_parser
    from mlplatform.core.schema import dataset_spec_from_mapping
    from mlplatform.settings import ENVIRONMENT

    out: list[str] = [
        "# Configuration reference",
        "",
        "<!-- generated by `python scripts/docs.py` from the code; a test fails when it is "
        "stale. Do not edit by hand. -->",
        "",
        "Every setting of the platform, its default and where it is set: environment "
        "variables, the run config of each asset and op (Dagster launchpad, `mlplatform run` "
        "flags), the resources, the dataset spec file and the command line.",
        "",
        "## Environment variables",
        "",
        "| variable | default | what it changes |",
        "|---|---|---|",
    ]
    for setting in ENVIRONMENT:
        note = " *(set by the platform for the tools it starts)*" if setting.set_by_platform else ""
        out.append(
            f"| `{setting.name}` | {_cell(setting.default)} | {_cell(setting.description)}{note} |"
        )
    out += [
        "",
        "## Run configuration of assets and ops",
        "",
        "Set in the Dagster launchpad as `ops: {<step>: {config: {<field>: <value>}}}`, "
        "or through the `mlplatform run` flags listed under the command line below.",
    ]
    for name, _, config in _config_classes(defs):
        out += [
            "",
            f"### `{name}`",
            "",
            f"{_first_paragraph(config)} Config class `{config.__module__}.{config.__name__}`; "
            f"job(s): {_job_of(defs, name)}.",
            "",
            "| field | type | default | description |",
            "|---|---|---|---|",
        ]
        for field_name, info in config.model_fields.items():
            out.append(
                f"| `{field_name}` | `{_cell(_type_name(info.annotation))}` | "
                f"`{_cell(_value(_field_default(info)))}` | {_cell(info.description or '')} |"
            )
    out += [
        "",
        "## Resources",
        "",
        "Chosen in one place, `mlplatform/defs/resources.py` (`build_resources`). *Value* is "
        "what the embedded deployment sets (with none of the environment variables above "
        "set); *class default* applies where a deployment does not set the field.",
    ]
    for key, resource in sorted(defs.resources.items()):
        if isinstance(resource, list):
            members = ", ".join(f"`{type(r).__name__}`" for r in resource)
            out += ["", f"### `{key}`", "", f"A list of resources: {members} (see above)."]
            continue
        cls = type(resource)
        out += [
            "",
            f"### `{key}`: `{cls.__name__}`",
            "",
            f"{_first_paragraph(cls)} (`{cls.__module__}`)",
            "",
            "| field | type | class default | value | description |",
            "|---|---|---|---|---|",
        ]
        for field_name, info in cls.model_fields.items():
            out.append(
                f"| `{field_name}` | `{_cell(_type_name(info.annotation))}` | "
                f"`{_cell(_value(_field_default(info)))}` | "
                f"`{_cell(_value(getattr(resource, field_name)))}` | "
                f"{_cell(info.description or '')} |"
            )
    out += [
        "",
        "## Dataset spec file (`MLPLATFORM_DATASET`)",
        "",
        "A YAML, TOML or JSON file; a worked example is `docs/examples/new-dataset.md`. "
        "Its keys, from `mlplatform.core.schema.dataset_spec_from_mapping`:",
        "",
        "```text",
        _parameters_section(dataset_spec_from_mapping),
        "```",
        "",
        "## Command line",
        "",
        "`mlplatform <command> --help` prints the same.",
    ]
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, command in sub.choices.items():
        out += [
            "",
            f"### `mlplatform {name}`",
            "",
            _cell(helps.get(name) or ""),
            "",
        ]
        rows = [
            a
            for a in command._actions
            if not isinstance(a, argparse._HelpAction) and a.dest != "func"
        ]
        if not rows:
            out.append("No options.")
            continue
        out += ["| argument | default | help |", "|---|---|---|"]
        for action in rows:
            flag = ", ".join(action.option_strings) or action.metavar or action.dest
            default = "(required)" if action.required else _value(action.default)
            out.append(f"| `{flag}` | `{_cell(default)}` | {_cell(action.help or '')} |")
    return "\n".join(out) + "\n"


def _parameters_section(fn: Any) -> str:
    doc = inspect.getdoc(fn) or ""
    match = re.search(r"Parameters\n-+\n(.*?)(?:\n\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.DOTALL)
    return (match[1] if match else doc).rstrip()


# --- the command --------------------------------------------------------------------------


def generated() -> dict[Path, bytes]:
    """Every generated file and its content."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with _clean_environment():
        defs = _definitions()
        return {
            GRAPH_SVG: draw_asset_graph(asset_graph_structure(defs)),
            CONFIGURATION_MD: configuration_reference(defs).encode(),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = parser.parse_args()
    stale = []
    for path, content in generated().items():
        current = path.read_bytes() if path.exists() else None
        if current == content:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(
            "stale (regenerate with `.venv/bin/python scripts/docs.py`): "
            + ", ".join(str(p) for p in stale)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
