"""Jobs, named for what they do.

The asset jobs are defined here; ``rollback_champion`` is an op job (it moves an
alias, it does not compute an asset) defined in :mod:`mlplatform.defs.operations`.
Every job carries ``mlplatform/trigger=manual`` by default (a run launched from the
UI or the CLI); sensors and schedules override it with why they started the run.
"""

import dagster as dg

from mlplatform.core.triggers import Trigger
from mlplatform.defs.common import INFERENCE, INGESTION
from mlplatform.defs.inference import INFERENCE_WINDOWS
from mlplatform.defs.ingestion import SOURCE_BATCHES
from mlplatform.defs.monitoring import MONITORING

TRAIN_AND_SCORE = "train_and_score"
BATCH_INFERENCE = "batch_inference"
WINDOW_INFERENCE = "window_inference"
INGEST = "ingest"
EVALUATE_LIVE = "evaluate_live_performance"
ROLLBACK_CHAMPION = "rollback_champion"
KIND_TAG = "mlplatform/kind"
TRAINING_KIND = "training"

train_and_score_job = dg.define_asset_job(
    TRAIN_AND_SCORE,
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(INGESTION, INFERENCE, MONITORING),
    tags={KIND_TAG: TRAINING_KIND, **Trigger.MANUAL.tags()},
    description="Build the feature table from the store, split, train, evaluate, gate, "
    "register and promote. Ingestion (ingest) and scoring (batch_inference) run per "
    "source batch.",
)
batch_inference_job = dg.define_asset_job(
    BATCH_INFERENCE,
    selection=dg.AssetSelection.assets("batch_predictions"),
    partitions_def=SOURCE_BATCHES,
    tags={KIND_TAG: "inference", **Trigger.MANUAL.tags()},
    description="Score one source batch with the champion (or pinned versions), streamed.",
)
window_inference_job = dg.define_asset_job(
    WINDOW_INFERENCE,
    selection=dg.AssetSelection.assets("window_predictions"),
    partitions_def=INFERENCE_WINDOWS,
    tags={KIND_TAG: "inference", **Trigger.MANUAL.tags()},
    description="Score every stored row of one twelve-hour event-time window with the "
    "champion; scheduled after each window closes, backfill missed windows from the UI.",
)
ingest_job = dg.define_asset_job(
    INGEST,
    selection=dg.AssetSelection.groups(INGESTION),
    partitions_def=SOURCE_BATCHES,
    tags={KIND_TAG: "ingestion", **Trigger.MANUAL.tags()},
    description="Ingest one source batch (a landed file or a SQL pull): one run per partition.",
)
evaluate_live_job = dg.define_asset_job(
    EVALUATE_LIVE,
    selection=dg.AssetSelection.assets("live_performance"),
    tags={KIND_TAG: "evaluation", **Trigger.MANUAL.tags()},
    description="Join true outcomes (labels files) with the champion's predictions: live "
    "recall and precision per twelve-hour window.",
)
