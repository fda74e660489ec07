"""Names and small metadata helpers shared by the asset modules.

``DATASET`` is the dataset every asset works on: the AI4I declaration, or the spec
file named by ``MLPLATFORM_DATASET`` (YAML, TOML or JSON; see
:func:`mlplatform.core.schema.load_dataset_spec`). It is read once, when the code
location loads.
"""

import ast
import base64
import hashlib
import os
from pathlib import Path
from types import ModuleType

import dagster as dg
import pandas as pd

# pandas' to_markdown imports tabulate on first use (0.02-0.14 s): loaded with the code
# location, not in the middle of a run's first Markdown metadata
import tabulate  # noqa: F401

from mlplatform.core.schema import AI4I, DatasetSpec, load_dataset_spec
from mlplatform.settings import DATASET_ENV

__all__ = [
    "DATASET",
    "EVALUATION",
    "FEATURES",
    "INFERENCE",
    "INGESTION",
    "REGISTRY",
    "TRAINING",
    "code_version",
    "dataset_from_env",
    "image_md",
    "preview_md",
]

INGESTION = "ingestion"
FEATURES = "features"
TRAINING = "training"
EVALUATION = "evaluation"
REGISTRY = "registry"
INFERENCE = "inference"

OWNER = "team:ml-platform"


def dataset_from_env() -> DatasetSpec:
    """The spec file named by ``MLPLATFORM_DATASET``, else the AI4I declaration."""
    path = os.environ.get(DATASET_ENV)
    return load_dataset_spec(path) if path else AI4I


DATASET: DatasetSpec = dataset_from_env()


def code_version(module_file: str, *names: str, uses: tuple[ModuleType, ...] = ()) -> str:
    """A code version that changes whenever the code behind an asset changes.

    Hashes the source of the top-level functions and classes ``names`` of
    ``module_file`` (the asset function, its config class, private helpers) and
    the whole source of the modules in ``uses`` (the core logic it calls). The
    dataset spec is part of it too: another dataset is other code for every asset.
    Edits elsewhere in the same file leave the version unchanged.
    """
    source = Path(module_file).read_text(encoding="utf-8")
    tree = ast.parse(source)
    found = {
        node.name: ast.get_source_segment(source, node) or ""
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    }
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"code_version: {module_file} defines no {missing}")
    digest = hashlib.sha256()
    for name in names:
        digest.update(found[name].encode())
    for module in uses:
        if module.__file__ is None:
            raise ValueError(f"code_version: module {module.__name__} has no source file")
        digest.update(Path(module.__file__).read_bytes())
    digest.update(_spec_fingerprint(DATASET).encode())
    return digest.hexdigest()[:12]


def _spec_fingerprint(spec: DatasetSpec) -> str:
    columns = [repr(c) for c in spec.columns]
    derived = [(d.name, d.expression or d.compute.__qualname__) for d in spec.derived]
    return repr((spec.name, spec.entity_id, spec.target, spec.event_time, columns, derived))


def preview_md(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    """The first ``rows`` rows as a Markdown table."""
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False, floatfmt=".4g"))


def image_md(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG embedded in Markdown metadata, shown inline by the Dagster UI."""
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")
