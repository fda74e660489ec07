"""The docs generated from the code are current: the asset-graph picture and the
configuration reference (``scripts/docs.py``), and every environment variable the
package reads is declared in :mod:`mlplatform.settings`."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "mlplatform"


def _docs_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_mlplatform_docs", REPO / "scripts/docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs() -> ModuleType:
    return _docs_script()


@pytest.fixture(scope="module")
def generated(docs: ModuleType) -> dict[Path, bytes]:
    return docs.generated()


def test_asset_graph_picture_is_drawn_from_the_current_definitions(docs: ModuleType) -> None:
    from mlplatform.definitions import build_definitions
    from mlplatform.paths import StatePaths

    committed = docs.GRAPH_SVG.read_text(encoding="utf-8")
    structure = docs.asset_graph_structure(build_definitions(StatePaths(Path("/unused"))))
    # nodes, groups, kinds, checks and edges, not pixels
    assert docs.embedded_structure(committed) == structure, (
        "docs/asset-graph.svg is stale: run `.venv/bin/python scripts/docs.py`"
    )
    # and the picture shows each of them (text is kept as text in the SVG)
    labels = set(re.findall(r"<text[^>]*>([^<]+)</text>", committed))
    for node in structure["nodes"]:
        assert any(label.startswith(node["key"]) for label in labels), node["key"]
        for check, _ in node["checks"]:
            assert any(label.endswith(f" {check}") for label in labels), check
    # the README shows this picture
    assert "](docs/asset-graph.svg)" in (REPO / "README.md").read_text()


def test_asset_graph_structure_has_every_asset_and_lineage_edge(docs: ModuleType) -> None:
    from mlplatform.definitions import build_definitions
    from mlplatform.paths import StatePaths

    defs = build_definitions(StatePaths(Path("/unused")))
    structure = docs.asset_graph_structure(defs)
    graph = defs.resolve_asset_graph()
    assert {n["key"] for n in structure["nodes"]} == {
        k.to_user_string() for k in graph.get_all_asset_keys()
    }
    edges = {(p, c) for p, c in structure["edges"]}
    assert ("raw_observations", "feature_table") in edges
    assert ("gate_decision", "champion_model") in edges
    assert len(edges) == sum(len(graph.get(k).parent_keys) for k in graph.get_all_asset_keys())


def test_a_changed_graph_is_detected(docs: ModuleType) -> None:
    """The staleness check can fail: a drawn graph missing an edge differs."""
    from mlplatform.definitions import build_definitions
    from mlplatform.paths import StatePaths

    structure = docs.asset_graph_structure(build_definitions(StatePaths(Path("/unused"))))
    fewer = {**structure, "edges": structure["edges"][1:]}
    svg = docs.draw_asset_graph(fewer).decode()
    assert docs.embedded_structure(svg) == fewer != structure


def test_generated_files_are_committed_as_generated(
    docs: ModuleType, generated: dict[Path, bytes]
) -> None:
    for path, content in generated.items():
        assert path.exists(), f"{path} missing: run `.venv/bin/python scripts/docs.py`"
        if path.suffix == ".md":  # byte for byte; the SVG is compared by structure above
            assert path.read_bytes() == content, (
                f"{path.relative_to(REPO)} is stale: run `.venv/bin/python scripts/docs.py`"
            )


def test_configuration_reference_lists_every_setting(generated: dict[Path, bytes]) -> None:
    import dagster as dg

    from mlplatform.defs import evaluation, features, ingestion, training
    from mlplatform.defs.resources import build_resources
    from mlplatform.paths import StatePaths
    from mlplatform.settings import ENVIRONMENT

    text = next(c for p, c in generated.items() if p.name == "configuration.md").decode()
    for setting in ENVIRONMENT:
        assert f"| `{setting.name}` |" in text
    for config in (
        training.TrainingConfig,
        training.SplitConfig,
        evaluation.GateConfig,
        evaluation.EvaluationConfig,
        features.FeatureTableConfig,
        ingestion.IngestConfig,
    ):
        assert issubclass(config, dg.Config)
        for field in config.model_fields:
            assert f"| `{field}` |" in text, f"{config.__name__}.{field}"
    # a default is shown as the code has it
    assert "| `min_recall` | `float` | `0.7` |" in text
    assert "| `test_size` | `float` | `0.3` |" in text
    for key, resource in build_resources(StatePaths(Path("/x"))).items():
        if not isinstance(resource, list):
            assert f"### `{key}`: `{type(resource).__name__}`" in text
            for field in type(resource).model_fields:
                assert f"| `{field}` |" in text
    # state paths are shown relative to the state folder, not a machine's path
    assert "`sqlite:///$MLPLATFORM_HOME/ledger.db`" in text
    for command in ("run", "score", "versions", "champion", "promote", "rollback"):
        assert f"### `mlplatform {command}`" in text


# --- environment variables -------------------------------------------------------------------

# os.environ itself, not any mapping that happens to be called environ
_ENV_CALLS = {
    ("os", "getenv"),
    ("os.environ", "get"),
    ("os.environ", "setdefault"),
    ("os.environ", "pop"),
    ("dg", "EnvVar"),
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _resolver(tree: ast.Module, module_name: str) -> Any:
    """Resolves a name in the module: a literal, a module constant, or an imported constant
    (also one imported inside a function)."""
    imported = {
        alias.asname or alias.name: (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }

    def name_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if not isinstance(node, ast.Name):
            return None
        if node.id in imported:
            source, attr = imported[node.id]
            value: Any = getattr(importlib.import_module(source), attr, None)
        else:
            value = getattr(importlib.import_module(module_name), node.id, None)
        return value if isinstance(value, str) else None

    return name_of


def environment_variables_used() -> dict[str, list[str]]:
    """Every environment variable the package's source reads or sets, with where."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module_name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        name_of = _resolver(tree, module_name.removesuffix(".__init__"))
        for node in ast.walk(tree):
            arg: ast.expr | None = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                if (_dotted(node.func.value), node.func.attr) in _ENV_CALLS:
                    arg = node.args[0]
            elif isinstance(node, ast.Subscript) and _dotted(node.value) == "os.environ":
                arg = node.slice
            if arg is None:
                continue
            var = name_of(arg)
            assert var is not None, f"{path}:{node.lineno}: an environment variable by expression"
            found.setdefault(var, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_environment_variable_is_declared_and_documented() -> None:
    from mlplatform.settings import ENVIRONMENT

    used = environment_variables_used()
    declared = {s.name for s in ENVIRONMENT}
    undeclared = {k: v for k, v in used.items() if k not in declared}
    assert not undeclared, (
        f"declare these in mlplatform/settings.py (ENVIRONMENT), then run scripts/docs.py: "
        f"{undeclared}"
    )
    # a variable may also be read through a mapping of its own (e.g. settings parsed from
    # os.environ as a whole): its name then appears as a literal in the package's source
    literals = {
        node.value
        for path in PACKAGE.rglob("*.py")
        if path.name != "settings.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    unused = declared - set(used) - literals
    assert not unused, f"declared in mlplatform/settings.py but never used: {sorted(unused)}"
    assert {"MLPLATFORM_HOME", "MLFLOW_TRACKING_URI", "MLPLATFORM_LEDGER_URL"} <= set(used)
