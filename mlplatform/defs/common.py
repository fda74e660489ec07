"""Names and small metadata helpers shared by the asset modules."""

import base64

import dagster as dg
import pandas as pd

from mlplatform.core.schema import AI4I, DatasetSpec

__all__ = [
    "DATASET",
    "EVALUATION",
    "FEATURES",
    "INFERENCE",
    "INGESTION",
    "REGISTRY",
    "TRAINING",
    "image_md",
    "preview_md",
]

INGESTION = "ingestion"
FEATURES = "features"
TRAINING = "training"
EVALUATION = "evaluation"
REGISTRY = "registry"
INFERENCE = "inference"

DATASET: DatasetSpec = AI4I


def preview_md(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    """The first ``rows`` rows as a Markdown table."""
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False, floatfmt=".4g"))


def image_md(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG embedded in Markdown metadata, shown inline by the Dagster UI."""
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")
