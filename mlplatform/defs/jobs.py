"""Jobs, named for what they do.

The asset jobs are defined here; ``rollback_champion`` is an op job (it moves an
alias, it does not compute an asset) defined in :mod:`mlplatform.defs.operations`.
"""

import dagster as dg

from mlplatform.defs.common import INFERENCE, INGESTION
from mlplatform.defs.ingestion import SOURCE_BATCHES

TRAIN_AND_SCORE = "train_and_score"
BATCH_INFERENCE = "batch_inference"
INGEST = "ingest"
ROLLBACK_CHAMPION = "rollback_champion"

train_and_score_job = dg.define_asset_job(
    TRAIN_AND_SCORE,
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(INGESTION, INFERENCE),
    tags={"mlplatform/kind": "training"},
    description="Build the feature table from the store, split, train, evaluate, gate, "
    "register and promote. Ingestion (ingest) and scoring (batch_inference) run per "
    "source batch.",
)
batch_inference_job = dg.define_asset_job(
    BATCH_INFERENCE,
    selection=dg.AssetSelection.groups(INFERENCE),
    partitions_def=SOURCE_BATCHES,
    description="Score one source batch with the champion (or pinned versions), streamed.",
)
ingest_job = dg.define_asset_job(
    INGEST,
    selection=dg.AssetSelection.groups(INGESTION),
    partitions_def=SOURCE_BATCHES,
    description="Ingest one source batch (a landed file or a SQL pull): one run per partition.",
)
