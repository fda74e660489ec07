"""``mlplatform``: run the lifecycle once, show its state, open the UI, move the champion.

Every command works on the state folder named by ``MLPLATFORM_HOME`` (default
``./data``), with ``DAGSTER_HOME`` inside it, so ``mlplatform ui`` shows exactly
the runs and materializations that ``mlplatform run`` made. ``rollback`` and
``promote`` change the champion alias through the same code path as the pipeline,
and every change is in the promotion ledger (``mlplatform ledger``). Runs started
here carry the run tag ``mlplatform/trigger=manual``.

A wrong name, version or path is reported as one ``error:`` line on stderr with
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.paths import HOME_ENV, StatePaths
from mlplatform.settings import DATASET_ENV

if TYPE_CHECKING:
    from mlplatform.core.ledger import LedgerEntry
    from mlplatform.resources.feature_store import FeatureStore
    from mlplatform.resources.landing import LandingArea
    from mlplatform.resources.ledger import PromotionLedger
    from mlplatform.resources.mlflow_registry import MlflowRegistry
    from mlplatform.resources.predictions import PredictionStore

__all__ = ["main", "training_lock"]

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_GATE_FAILED = 3
EXIT_INPUT_REJECTED = 4

DEFAULT_SAMPLE_ROWS = 10_000
TRAINING_LOCK = "training.lock"
GENERATE_LOCK = "generate.lock"


class CliError(Exception):
    """A mistake the operator can fix (a wrong name, version or path): shown without traceback."""


def _manual_tags() -> dict[str, str]:
    from mlplatform.core.triggers import Trigger

    return Trigger.MANUAL.tags()


def _instance_yaml() -> Path:
    """The local instance settings: the checkout's ``dagster.yaml``, else the packaged copy."""
    checkout = Path(__file__).resolve().parents[1] / "dagster.yaml"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("mlplatform") / "dagster.yaml"))


def prepare_state(paths: StatePaths) -> None:
    """Create the state folders and point ``DAGSTER_HOME`` at the one inside them."""
    if paths.root.exists() and not paths.root.is_dir():
        raise CliError(f"{HOME_ENV}={paths.root} is a file, not a state folder")
    try:
        paths.ensure()
    except OSError as exc:
        raise CliError(f"cannot use the state folder {HOME_ENV}={paths.root}: {exc}") from exc
    os.environ[HOME_ENV] = str(paths.root)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # progress bars of artifact downloads would clutter every command's output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    target = paths.dagster_home / "dagster.yaml"
    source = _instance_yaml()
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)


def _instance(paths: StatePaths) -> Any:
    """The Dagster instance of the state folder, created one command at a time.

    Its SQLite storage is created on first use; two commands starting together on a
    new state folder would both create the tables, and one would fail.
    """
    import fcntl

    import dagster as dg

    with open(paths.dagster_home / ".instance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return dg.DagsterInstance.get()


def training_lock(paths: StatePaths, *, poll_seconds: float = 0.2) -> AbstractContextManager[None]:
    """Hold the state folder's training lock: one training run at a time.

    Concurrent training runs on one state folder would share the IO manager's files
    (``assets/``): one run's step could load the value another run's upstream step
    wrote. The daemon runs one training run at a time (``dagster.yaml``'s tag
    concurrency on ``mlplatform/kind=training``); this mirrors it for the command: an
    exclusive ``flock`` on ``DAGSTER_HOME/training.lock``, which holds the holder's pid.
    A second command says which process it waits for and proceeds when that one is
    done (the kernel releases the lock when its holder exits, even by SIGKILL).
    """
    return _turn_lock(paths.dagster_home / TRAINING_LOCK, "training run", poll_seconds)


@contextmanager
def _turn_lock(path: Path, what: str, poll_seconds: float = 0.2) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, which holds the holder's pid; a waiter says whom
    it waits for, and goes on once the holder is done (or killed: the kernel releases it)."""
    import fcntl

    with open(path, "a+") as lock:  # never truncated before it is held
        waited_since = None
        announced = None
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "unknown"
                if holder != announced:
                    print(
                        f"waiting for another {what} (pid {holder}) to finish ({path})",
                        flush=True,
                    )
                    announced = holder
                    waited_since = waited_since or time.monotonic()
                time.sleep(poll_seconds)
        if waited_since is not None:
            print(
                f"the other {what} finished after {time.monotonic() - waited_since:.1f} s "
                "of waiting: going on",
                flush=True,
            )
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield  # the lock is released when the file closes


def _generate(paths: StatePaths, rows: int, seed: int | None) -> list[str]:
    """Generate ``rows`` sample rows: most as a landed CSV file, a fifth into the SQL table.

    Two commands generating at once take turns (an exclusive ``flock`` on
    ``DAGSTER_HOME/generate.lock``), so each one's entity ids start after the other's.
    """
    with _turn_lock(paths.dagster_home / GENERATE_LOCK, "sample generation"):
        return _generate_unlocked(paths, rows, seed)


def _generate_unlocked(paths: StatePaths, rows: int, seed: int | None) -> list[str]:
    import pandas as pd

    from mlplatform.core.generator import generate_ai4i
    from mlplatform.core.schema import AI4I
    from mlplatform.defs.common import DATASET
    from mlplatform.defs.resources import SQL_EVENT_TIME, SQL_TABLE, SQL_WATERMARK
    from mlplatform.resources.sample_data import max_entity_id, write_sql_readings

    if DATASET is not AI4I:
        raise CliError(
            f"the sample generator makes AI4I 2020 rows, but the dataset is {DATASET.name!r} "
            f"(from {_dataset_env()}): drop your own files into landing/ and use --rows 0"
        )

    resources_ = _resources(paths)
    store: FeatureStore = resources_["feature_store"]
    landing: LandingArea = resources_["landing"]
    sql_url = resources_["sql_source"].url
    stored = store.as_of(DATASET)
    last_id = int(stored[DATASET.entity_id].max()) if not stored.empty else 0
    last_id = max(last_id, max_entity_id(sql_url, SQL_TABLE, DATASET.entity_id))
    for pending in landing.pending():
        if pending.path.suffix != ".csv" or pending.path.is_symlink():
            continue  # a link is never followed; ingestion rejects it
        try:
            ids = pd.read_csv(pending.path, usecols=["UDI"])["UDI"]
            last_id = max(last_id, int(ids.max()) if len(ids) else 0)
        except (ValueError, TypeError, OverflowError, OSError):
            continue  # malformed (no UDI, not UTF-8, text ids): ingestion rejects or quarantines it
    batch_seed = seed if seed is not None else last_id
    frame = generate_ai4i(rows, seed=batch_seed, start_udi=last_id + 1)
    to_sql = rows // 5
    to_file = frame.iloc[: rows - to_sql]
    written = [
        str(landing.drop(to_file, f"sample_{last_id + 1:08d}_{last_id + len(to_file):08d}.csv"))
    ]
    if to_sql:
        write_sql_readings(
            sql_url,
            DATASET,
            frame.iloc[rows - to_sql :],
            table=SQL_TABLE,
            watermark=SQL_WATERMARK,
            event_time=SQL_EVENT_TIME,
        )
        written.append(f"{to_sql:,} rows into {SQL_TABLE} at {sql_url}")
    return written


def _ingest(paths: StatePaths, defs: Any, instance: Any) -> tuple[list[str], list[str], list[str]]:
    """Plan every new batch and ingest each in its own run: (ingested keys, rejected, failed).

    Rejected inputs were moved to ``rejected/`` with their reason. Failed batches were
    not stored, yet their data still waits (a write of ours failed: a full disk, a
    folder we may not write; or the source was unavailable): the next run retries them.
    """
    from mlplatform.defs.ingestion import register_new_batches
    from mlplatform.defs.jobs import INGEST
    from mlplatform.resources.landing import LANDING_SOURCE

    resources_ = _resources(paths)
    found = register_new_batches(instance, resources_["sources"], resources_["feature_store"])
    for name in found.duplicates:
        print(f"{name}: already ingested (same content), archived without adding rows")
    for error in found.errors:
        print(f"SOURCE UNAVAILABLE {error}")
    if not found.to_ingest:
        print("no new source batches")
    for plan in found.retry:
        print(f"retrying {plan.label} ({plan.key}): planned earlier, never stored")
    rejected = []
    failed = [f"source {e}" for e in found.errors]
    ingested = []
    runs = _run_partitions(defs, instance, INGEST, [p.key for p in found.to_ingest])
    for plan, result in zip(found.to_ingest, runs, strict=True):
        if result.success:
            ingested.append(plan.key)
            meta = _materialization_metadata(result, "raw_observations")
            print(
                f"ingested {plan.label} ({plan.key}): {meta.get('rows_landed', '?'):,} landed, "
                f"{meta.get('rows_stored', '?'):,} stored, "
                f"{meta.get('rows_quarantined', '?'):,} quarantined"
            )
            continue
        reason, input_rejected = _step_failure(result)
        if input_rejected:
            print(f"REJECTED {plan.label} ({plan.key}): {reason}")
            rejected.append(f"{plan.label}: {reason}")
            continue
        waits = (
            "the file stays in landing and will be retried"
            if plan.source == LANDING_SOURCE
            else f"its rows stay in source {plan.source!r} and will be retried"
        )
        print(f"FAILED {plan.label} ({plan.key}): {reason}; {waits}")
        failed.append(f"{plan.label}: {reason}")
    return ingested, rejected, failed


_DAGSTER_WRAPPERS = {"DagsterExecutionStepExecutionError", "RetryRequestedFromPolicy"}


def _step_failure(result: Any) -> tuple[str, bool]:
    """A failed run's first step failure: (message, whether it rejected its input).

    Only the ingestion asset's rejection (a ``dg.Failure`` with the file and reason
    as metadata) moved the input to ``rejected/``. Any other error (an ``OSError``
    of a write of ours) left the input where it was; its message is the error raised
    in the step (naming the path), not Dagster's wrapper of it.
    """
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        if data is None:
            continue
        if data.user_failure_data is not None:
            metadata = data.user_failure_data.metadata or {}
            described = data.user_failure_data.description or "see the run's logs"
            return described, {"file", "reason"} <= set(metadata)
        error = data.error
        # the error the step raised, not Dagster's wrappers of it (its retry policy's too)
        while error.cause is not None and error.cls_name in _DAGSTER_WRAPPERS:
            error = error.cause
        return error.message.strip(), False
    return "see the run's logs", False


def _run_partitions(defs: Any, instance: Any, job_name: str, keys: list[str]) -> Iterator[Any]:
    """One in-process run of ``job_name`` per partition key, in order, never raising."""
    job = defs.resolve_job_def(job_name)
    for key in keys:
        yield job.execute_in_process(
            instance=instance,
            partition_key=key,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            tags=_manual_tags(),
            raise_on_error=False,
        )


def _score(defs: Any, instance: Any, keys: list[str]) -> bool:
    """Score each newly ingested batch with the champion, one run each; False on a failure."""
    from mlplatform.defs.jobs import BATCH_INFERENCE

    ok = True
    for key, result in zip(
        keys, _run_partitions(defs, instance, BATCH_INFERENCE, keys), strict=True
    ):
        meta = _materialization_metadata(result, "batch_predictions")
        if not result.success:
            ok = False
            print(f"scoring {key} FAILED: see run {result.run_id}")
        elif meta:
            print(
                f"scored {key}: {meta['rows']:,} rows by version {meta['model_version']}, "
                f"{meta['predicted_positive_rate']:.1%} predicted to fail -> {meta['path']}"
            )
        else:
            print(f"{key}: not scored (no champion yet)")
    return ok


def _materialization_metadata(result: Any, step: str) -> dict[str, Any]:
    for event in result.all_events:
        if event.is_step_materialization and event.step_key == step:
            return {
                k: getattr(v, "value", v)
                for k, v in event.event_specific_data.materialization.metadata.items()
            }
    return {}


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    training: dict[str, Any] = {}
    if args.model:
        training["model_name"] = args.model
    if args.threshold is not None:
        training["decision_threshold"] = args.threshold
    if args.tune_threshold:
        training["tune_threshold"] = True
    if training:
        ops["candidate_model"] = {"config": training}
    gate: dict[str, Any] = {}
    if args.min_recall is not None:
        gate["min_recall"] = args.min_recall
    if args.min_precision is not None:
        gate["min_precision"] = args.min_precision
    if gate:
        ops["gate_decision"] = {"config": gate}
    # Progress, warnings and errors on the terminal; every event stays in the run's log.
    config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if ops:
        config["ops"] = ops
    return config


def _dataset_env() -> str:
    return f"{DATASET_ENV}={os.environ.get(DATASET_ENV, '')}"


def _check_run_args(args: argparse.Namespace) -> None:
    """Reject a wrong candidate name or an impossible threshold before anything runs."""
    from mlplatform.core.models import CANDIDATES

    if args.model is not None and args.model not in CANDIDATES:
        raise CliError(
            f"unknown candidate {args.model!r}; choose from {', '.join(sorted(CANDIDATES))}"
        )
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise CliError(f"--threshold must be between 0 and 1 (exclusive), got {args.threshold}")
    for flag, value in (("--min-recall", args.min_recall), ("--min-precision", args.min_precision)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise CliError(f"{flag} must be between 0 and 1, got {value}")
    if args.rows is not None and args.rows < 0:
        raise CliError(f"--rows must be 0 or more, got {args.rows}")


def cmd_run(args: argparse.Namespace) -> int:
    """Generate a sample batch (unless told not to) and materialize the whole graph."""
    from mlplatform.core.schema import AI4I
    from mlplatform.defs.common import DATASET

    _check_run_args(args)
    paths = StatePaths.from_env()
    prepare_state(paths)
    rows = args.rows
    if rows is None:  # sample data only where the generator fits the dataset
        rows = DEFAULT_SAMPLE_ROWS if DATASET is AI4I else 0
        if DATASET is not AI4I:
            print(f"dataset {DATASET.name!r}: no sample data generated (using landing/ as is)")
    if rows > 0:
        for written in _generate(paths, rows, args.seed):
            print(f"generated sample rows -> {written}")

    from mlplatform.definitions import build_definitions
    from mlplatform.defs.jobs import TRAIN_AND_SCORE

    defs = build_definitions(paths)
    job = defs.resolve_job_def(TRAIN_AND_SCORE)
    started = time.perf_counter()
    with _instance(paths) as instance:
        ingested, rejected, failed = _ingest(paths, defs, instance)
        with training_lock(paths):
            result = job.execute_in_process(
                instance=instance,
                run_config=_run_config(args),
                tags=_manual_tags(),
                raise_on_error=False,
            )
        # new data is scored by whichever model is champion now (a failed gate leaves
        # the previous champion serving)
        scored = _score(defs, instance, ingested)
    elapsed = time.perf_counter() - started
    status = "SUCCESS" if result.success else "FAILURE"
    print(
        f"\nrun {result.run_id} ({TRAIN_AND_SCORE}): {status} in {elapsed:.1f} s (with ingestion)"
    )
    code = _report(paths, result)
    if not scored and code == EXIT_OK:
        code = EXIT_RUN_FAILED
    if failed:
        print(
            f"\n{len(failed)} batch(es) not stored (see FAILED / SOURCE UNAVAILABLE above): "
            "their data waits where it was and the next run retries it; the model was "
            "trained on what the store holds"
        )
        if code == EXIT_OK:
            code = EXIT_RUN_FAILED
    if rejected and code == EXIT_OK:
        print(
            f"\n{len(rejected)} input(s) rejected (moved to {paths.rejected} with the reason); "
            f"the model was trained on the rest (exit code {EXIT_INPUT_REJECTED})"
        )
        code = EXIT_INPUT_REJECTED
    print(f"\nopen the Dagster UI on this state:  {_ui_hint(paths)}")
    return code


def _ui_hint(paths: StatePaths) -> str:
    exe = Path(sys.executable).parent
    return (
        f"{HOME_ENV}={paths.root} {exe / 'mlplatform'} ui   "
        f"(= DAGSTER_HOME={paths.dagster_home} {exe / 'dagster'} dev -w workspace.yaml)"
    )


def _report(paths: StatePaths, result: Any) -> int:
    import dagster as dg

    gate = None
    if any(e.step_key == "gate_decision" and e.is_successful_output for e in result.all_events):
        gate = result.output_for_node("gate_decision")
        print(f"  {gate.summary()}")
    gate_failed = gate is not None and not gate.passed
    refusal = _materialization_metadata(result, "champion_model").get("not_promoted")
    if refusal:
        print(f"  {refusal}")
    check_failed = False
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            data = event.event_specific_data
            print(f"  check {data.check_name}: {'passed' if data.passed else 'FAILED'}")
            check_failed |= not data.passed
    # A failed blocking gate check is the gate doing its job, not a broken run.
    failures = [
        e
        for e in result.all_events
        if e.is_step_failure and not (gate_failed and e.step_key.endswith("recall_gate"))
    ]
    for event in failures:
        error = event.step_failure_data.error
        print(f"  step {event.step_key} failed: {error.message.strip() if error else ''}")
    _print_state(paths)
    if failures:
        return EXIT_RUN_FAILED
    if gate_failed or check_failed:
        print("\ngate failed: the champion is unchanged (exit code 3)")
        return EXIT_GATE_FAILED
    return EXIT_OK


def _resources(paths: StatePaths) -> dict[str, Any]:
    from mlplatform.defs.resources import LEDGER_URL_ENV, build_resources

    return build_resources(
        paths,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
        ledger_url=os.environ.get(LEDGER_URL_ENV),
    )


def _champion_control(paths: StatePaths) -> tuple[MlflowRegistry, PromotionLedger]:
    resources_ = _resources(paths)
    return resources_["mlflow_registry"], resources_["ledger"]


def _describe_entry(entry: LedgerEntry, *, reason_chars: int | None = None) -> str:
    run = f", run {entry.dagster_run_id}" if entry.dagster_run_id else ""
    reason = entry.reason
    if reason_chars is not None and len(reason) > reason_chars:
        reason = reason[: reason_chars - 1] + "…"
    return f"{entry.describe()} at {entry.recorded_at:%Y-%m-%d %H:%M:%S} UTC{run}: {reason}"


def _reconcile(registry: MlflowRegistry, ledger: PromotionLedger) -> None:
    from mlplatform.resources.ledger import reconcile_champion

    for entry in reconcile_champion(registry, ledger):
        print(f"reconciled an interrupted alias change: ledger entry {entry.describe()}")
    for entry in ledger.pending(registry.model_name):
        print(
            f"in flight: ledger entry {entry.describe()} began at "
            f"{entry.recorded_at:%Y-%m-%d %H:%M:%S} UTC (settled after "
            f"{ledger.in_flight_seconds:g} s if its process died)"
        )


def _print_state(paths: StatePaths) -> int:
    from mlplatform.core.ledger import ledger_champion
    from mlplatform.resources.asset_storage import SNAPSHOT_SUFFIX

    resources_ = _resources(paths)
    registry: MlflowRegistry = resources_["mlflow_registry"]
    ledger: PromotionLedger = resources_["ledger"]
    predictions: PredictionStore = resources_["prediction_store"]
    champion = registry.champion()
    print(f"\nstate folder:  {paths.root}")
    if champion is None:
        print("champion:      none yet (no model has passed the recall gate)")
    else:
        metrics = registry.run_metrics(champion)
        print(
            f"champion:      models:/{champion.name}@{registry.champion_alias} = version "
            f"{champion.version} (MLflow run {champion.run_id})"
        )
        shown = ("recall", "precision", "f1", "roc_auc", "pr_auc")
        print("metrics:       " + ", ".join(f"{k} {metrics[k]:.4f}" for k in shown if k in metrics))
    entries = ledger.entries(registry.model_name)
    committed = [e for e in entries if e.state == "committed"]
    last = _describe_entry(committed[-1], reason_chars=60) if committed else "none recorded"
    print(f"last change:   {last}")
    recorded = ledger_champion(entries)
    alias = champion.version if champion else None
    if committed and recorded != alias:
        print(
            f"WARNING:       the ledger says version {recorded} is champion but the alias "
            f"points at {alias or 'nothing'}: it was moved outside mlplatform"
        )
    print(
        f"MLflow store:  {registry.tracking_uri}   (browse: "
        f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri "
        f"{registry.tracking_uri})"
    )
    files = predictions.files()
    print(f"predictions:   {files[-1] if files else 'none yet'}")
    snapshot_file = paths.feature_store / f"feature_table{SNAPSHOT_SUFFIX}"
    print(
        f"feature table: {snapshot_file if snapshot_file.is_file() else 'none yet'}   (one "
        "Parquet file: mlplatform features --out table.parquet)"
    )
    store: FeatureStore = resources_["feature_store"]
    current = store.latest()
    rows = sum(m.rows_stored for m in current)
    held = sum(m.rows_quarantined for m in current)
    print(f"feature store: {len(current)} batches, {rows:,} rows stored, {held:,} quarantined")
    rejected = sorted(p for p in paths.rejected.glob("*") if not p.name.endswith(".reason.txt"))
    if rejected:
        print(f"rejected:      {len(rejected)} file(s) in {paths.rejected}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Print the champion, its metrics, its latest ledger entry and where the outputs are."""
    paths = StatePaths.from_env()
    prepare_state(paths)
    _reconcile(*_champion_control(paths))
    return _print_state(paths)


def cmd_ledger(args: argparse.Namespace) -> int:
    """Print every entry of the promotion ledger, oldest first (settling interrupted ones)."""
    from tabulate import tabulate

    paths = StatePaths.from_env()
    prepare_state(paths)
    registry, ledger = _champion_control(paths)
    _reconcile(registry, ledger)
    entries = ledger.entries(registry.model_name)
    if not entries:
        print(f"the promotion ledger of {registry.model_name} is empty")
        return EXIT_OK
    gate = {True: "passed", False: "FAILED", None: "-"}
    rows = [
        [
            e.id,
            f"{e.recorded_at:%Y-%m-%d %H:%M:%S}",
            e.action,
            e.from_version or "-",
            e.to_version,
            e.state,
            gate[e.gate_passed],
            e.dagster_run_id[:8] if e.dagster_run_id else "-",
            e.data_digest[:12] if e.data_digest else "-",
            e.reason,
        ]
        for e in entries
    ]
    headers = ["id", "recorded (UTC)", "action", "from", "to", "state", "gate", "run", "data"]
    print(f"promotion ledger of {registry.model_name} ({ledger.url})")
    print(tabulate(rows, headers=[*headers, "reason"], tablefmt="simple"))
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """Move the champion back to the previous champion and record why."""
    from mlplatform.defs.operations import rollback
    from mlplatform.resources.ledger import ChampionChangeError

    paths = StatePaths.from_env()
    prepare_state(paths)
    registry, ledger = _champion_control(paths)
    try:
        entry = rollback(registry, ledger, reason=args.reason)
    except ChampionChangeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"champion of {entry.model_name}: version {entry.from_version} -> version "
        f"{entry.to_version}\nrecorded: {_describe_entry(entry)}"
    )
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    """Make a version champion whatever its gate decided (an override, recorded with why)."""
    from mlplatform.defs.operations import override
    from mlplatform.resources.ledger import ChampionChangeError

    paths = StatePaths.from_env()
    prepare_state(paths)
    registry, ledger = _champion_control(paths)
    try:
        entry = override(registry, ledger, version=args.version, reason=args.reason)
    except ChampionChangeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if entry is None:
        print(
            f"version {args.version} of {registry.model_name} already is the champion: "
            "nothing changed, nothing recorded"
        )
        return EXIT_OK
    gate = {True: "passed", False: "FAILED", None: "unknown"}[entry.gate_passed]
    print(
        f"champion of {entry.model_name}: version {entry.from_version or '(none)'} -> version "
        f"{entry.to_version} (override; its gate {gate})\nrecorded: {_describe_entry(entry)}"
    )
    return EXIT_OK


def _gate_lines(tags: dict[str, str]) -> list[str]:
    """The gate decision recorded on a model version, one line per criterion."""
    import json

    from mlplatform.core.gate import Criterion
    from mlplatform.defs.registry import GATE_DECISION_TAG

    raw = tags.get(GATE_DECISION_TAG)
    if raw is None:
        return ["gate:          no decision recorded on this version"]
    decision = json.loads(raw)
    head = "PASSED" if decision["passed"] else "FAILED"
    rule = " (no champion yet: absolute criteria only)" if decision.get("first_model") else ""
    lines = [f"gate:          {head}{rule}"]
    lines += [f"  {Criterion(**c).describe()}" for c in decision["criteria"]]
    return lines


def cmd_champion(args: argparse.Namespace) -> int:
    """Print the champion (or ``--version``): its candidate, metrics and gate decision."""
    from mlplatform.defs.registry import CANDIDATE_TAG, GATE_PASSED_TAG

    paths = StatePaths.from_env()
    prepare_state(paths)
    registry, ledger = _champion_control(paths)
    _reconcile(registry, ledger)
    champion = registry.champion()
    if args.version is not None:
        ref = _version(registry, args.version)
    elif champion is None:
        known = ", ".join(r.version for r in registry.versions()) or "none"
        print(
            f"no champion yet for {registry.model_name!r} (registered versions: {known}); a "
            "version becomes champion when it passes the gate, or by `mlplatform promote`"
        )
        return EXIT_OK
    else:
        ref = champion
    tags = registry.version_tags(ref)
    metrics = registry.run_metrics(ref)
    is_champion = champion is not None and champion.version == ref.version
    alias = f" (= @{registry.champion_alias})" if is_champion else " (not the champion)"
    print(
        f"{'champion:' if is_champion else 'version:':<15}models:/{ref.name}/{ref.version}{alias}"
    )
    print(f"candidate:     {tags.get(CANDIDATE_TAG, 'not recorded')}")
    print(f"MLflow run:    {ref.run_id}")
    print(f"Dagster run:   {tags.get('dagster_run_id', 'not recorded')}")
    shown = ("recall", "precision", "f1", "roc_auc", "pr_auc")
    print("test metrics:  " + ", ".join(f"{k} {metrics[k]:.4f}" for k in shown if k in metrics))
    for line in _gate_lines(tags):
        print(line)
    if tags.get(GATE_PASSED_TAG) == "false" and is_champion:
        print("note:          champion by an operator override (its gate failed)")
    entries = [e for e in ledger.entries(registry.model_name) if e.to_version == ref.version]
    for entry in entries:
        print(f"ledger:        {_describe_entry(entry, reason_chars=100)}")
    return EXIT_OK


def _version(registry: MlflowRegistry, version: str) -> Any:
    try:
        return registry.get_version(version)
    except LookupError as exc:
        raise CliError(str(exc)) from exc


def cmd_versions(args: argparse.Namespace) -> int:
    """Print every registered version: candidate, test metrics, gate verdict, champion mark."""
    from tabulate import tabulate

    from mlplatform.defs.registry import CANDIDATE_TAG, GATE_PASSED_TAG

    paths = StatePaths.from_env()
    prepare_state(paths)
    registry, ledger = _champion_control(paths)
    _reconcile(registry, ledger)
    versions = registry.versions()
    if not versions:
        print(f"no registered versions of {registry.model_name!r} yet (run `mlplatform run`)")
        return EXIT_OK
    champion = registry.champion()
    gate = {"true": "passed", "false": "FAILED"}
    rows = []
    for ref in versions:
        tags = registry.version_tags(ref)
        metrics = registry.run_metrics(ref)
        rows.append(
            [
                ref.version,
                "*" if champion is not None and champion.version == ref.version else "",
                tags.get(CANDIDATE_TAG, "-"),
                *(f"{metrics[k]:.4f}" if k in metrics else "-" for k in ("recall", "precision")),
                gate.get(tags.get(GATE_PASSED_TAG, ""), "-"),
                tags.get("dagster_run_id", "-")[:8],
                ref.run_id[:8],
            ]
        )
    headers = ["version", "champion", "candidate", "recall", "precision", "gate", "run", "mlflow"]
    print(f"registered versions of {registry.model_name} (* = @{registry.champion_alias})")
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    """Score a CSV or Parquet file with the champion (or ``--version``) into a predictions file."""
    import uuid

    from mlplatform.core.serving import TrainingReference, pipeline_threshold
    from mlplatform.defs.common import DATASET
    from mlplatform.defs.registry import TRAINING_REFERENCE_DOC
    from mlplatform.resources.file_scoring import SUPPORTED_SUFFIXES, score_file

    source, out = Path(args.file), Path(args.out)
    if not source.is_file():
        raise CliError(f"no such file: {source}")
    for what, path in (("FILE", source), ("--out", out)):
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise CliError(f"{what} {path}: use a .csv or .parquet file")
    if not out.parent.is_dir():
        raise CliError(f"--out {out}: the folder {out.parent} does not exist")
    if out.resolve() == source.resolve():
        raise CliError(f"--out {out} is the input file; choose another path")
    paths = StatePaths.from_env()
    prepare_state(paths)
    registry, _ = _champion_control(paths)
    if args.version is not None:
        ref, role = _version(registry, args.version), "pinned"
    else:
        champion = registry.champion()
        if champion is None:
            raise CliError(
                f"no champion yet for {registry.model_name!r}: run the pipeline "
                "(`mlplatform run`) or pass --version"
            )
        ref, role = champion, registry.champion_alias
    document = registry.load_document(ref, TRAINING_REFERENCE_DOC)
    if document is None:
        raise CliError(
            f"{ref.name} version {ref.version} has no {TRAINING_REFERENCE_DOC} (registered "
            "before train/serve checks existed); pass a newer --version"
        )
    pipeline = registry.load(ref)
    threshold = pipeline_threshold(pipeline)
    try:
        result = score_file(
            source,
            out,
            pipeline,
            DATASET,
            TrainingReference.from_dict(document),
            model_name=ref.name,
            model_version=ref.version,
            alias=role,
            threshold=float("nan") if threshold is None else threshold,
            run_id=f"cli-score-{uuid.uuid4().hex[:12]}",
            batch_rows=args.batch_rows,
        )
    except ValueError as exc:  # unreadable file, a missing column, not a single valid row
        raise CliError(str(exc)) from exc
    summary = result.summary
    print(
        f"scored {summary.rows:,} of {result.rows_read:,} rows of {source} by {ref.name} "
        f"version {ref.version} ({role}); {summary.positive_rate:.1%} predicted positive "
        f"-> {out}"
    )
    flagged = {k: v for k, v in summary.out_of_range.items() if v}
    if flagged:
        print(f"outside the training range (scored, flagged): {flagged}")
    if result.invalid_rows_file is not None:
        print(
            f"{result.rows_invalid:,} invalid rows not scored (row, column, value, reason) "
            f"-> {result.invalid_rows_file}"
        )
        return EXIT_INPUT_REJECTED
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """Start ``dagster dev`` on the same state (replaces this process)."""
    paths = StatePaths.from_env()
    prepare_state(paths)
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    argv = [dagster, "dev", "-h", args.host, "-p", str(args.port)]
    if workspace.is_file():
        argv += ["-w", str(workspace)]
    else:
        argv += ["-m", "mlplatform.definitions"]
    os.execv(dagster, argv)
    return EXIT_OK  # pragma: no cover


def cmd_generate(args: argparse.Namespace) -> int:
    """Drop a generated sample batch into the landing folder."""
    paths = StatePaths.from_env()
    prepare_state(paths)
    for written in _generate(paths, args.rows, args.seed):
        print(f"generated sample rows -> {written}")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest every new source batch (landed files, new SQL rows), one run per batch."""
    paths = StatePaths.from_env()
    prepare_state(paths)
    from mlplatform.definitions import build_definitions

    defs = build_definitions(paths)
    with _instance(paths) as instance:
        _, rejected, failed = _ingest(paths, defs, instance)
    return _ingest_exit_code(rejected, failed)


def _ingest_exit_code(rejected: list[str], failed: list[str]) -> int:
    """``mlplatform ingest``'s exit code: 1 when a batch could not be stored, 4 when an
    input was rejected, else 0."""
    if failed:
        return EXIT_RUN_FAILED
    return EXIT_INPUT_REJECTED if rejected else EXIT_OK


def cmd_features(args: argparse.Namespace) -> int:
    """Write the feature table as the store knew it at ``--as-of`` (default now) to ``--out``.

    The same snapshot the ``feature_table`` asset makes for that time: the same rows
    and the same digest (a training run records both), written as one Parquet file.
    """
    from mlplatform.core.batches import parse_time
    from mlplatform.core.features import table_columns
    from mlplatform.defs.common import DATASET
    from mlplatform.resources.feature_tables import read_features
    from mlplatform.resources.files import write_parquet_atomic

    paths = StatePaths.from_env()
    prepare_state(paths)
    store: FeatureStore = _resources(paths)["feature_store"]
    try:
        when = parse_time(args.as_of) if args.as_of else None
    except ValueError as exc:
        raise CliError(f"--as-of {args.as_of!r} is not an ISO-8601 time: {exc}") from exc
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CliError(f"--out {out}: the folder {out.parent} does not exist")
    snapshot = store.snapshot(DATASET, when)
    if not snapshot.num_rows:
        print(f"the feature store has no rows as of {args.as_of or 'now'}", file=sys.stderr)
        return EXIT_RUN_FAILED
    stored = store.table(snapshot)
    table = read_features(stored, DATASET, table_columns(DATASET, stored.columns))
    write_parquet_atomic(table, out)
    print(f"{len(table):,} rows as of {snapshot.as_of} -> {out}")
    print(f"dataset digest: {snapshot.digest}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="mlplatform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate sample data and run the whole lifecycle once")
    run.add_argument(
        "--rows",
        type=int,
        default=None,
        help=f"sample rows to generate first (default {DEFAULT_SAMPLE_ROWS:,} for the AI4I "
        "dataset, 0 for any other; 0: use only what is in landing/ and the SQL source)",
    )
    run.add_argument("--seed", type=int, default=None, help="generator seed")
    run.add_argument("--model", default=None, help="candidate to train")
    run.add_argument("--threshold", type=float, default=None, help="decision threshold")
    run.add_argument(
        "--tune-threshold",
        action="store_true",
        help="tune the threshold on out-of-fold training predictions",
    )
    run.add_argument("--min-recall", type=float, default=None, help="gate: minimum recall")
    run.add_argument("--min-precision", type=float, default=None, help="gate: minimum precision")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser(
        "status", help="show the champion, its metrics, its latest ledger entry and the outputs"
    )
    status.set_defaults(func=cmd_status)

    ledger = sub.add_parser("ledger", help="print every champion alias change, oldest first")
    ledger.set_defaults(func=cmd_ledger)

    rollback = sub.add_parser(
        "rollback", help="move the champion back to the previous champion (recorded)"
    )
    rollback.add_argument("--reason", required=True, help="why (recorded in the ledger)")
    rollback.set_defaults(func=cmd_rollback)

    promote = sub.add_parser(
        "promote",
        help="make VERSION champion even if its gate failed (an override, recorded with why)",
    )
    promote.add_argument("version", metavar="VERSION", help="registered model version")
    promote.add_argument("--reason", required=True, help="why (recorded in the ledger)")
    promote.set_defaults(func=cmd_promote)

    champion = sub.add_parser(
        "champion", help="show the champion: candidate, test metrics and its gate decision"
    )
    champion.add_argument(
        "--version", default=None, help="show this registered version instead of the champion"
    )
    champion.set_defaults(func=cmd_champion)

    versions = sub.add_parser(
        "versions", help="list every registered version with its metrics and gate verdict"
    )
    versions.set_defaults(func=cmd_versions)

    score = sub.add_parser(
        "score", help="score a CSV or Parquet file with the champion into a predictions file"
    )
    score.add_argument("file", metavar="FILE", help="rows to score (.csv or .parquet)")
    score.add_argument("--out", required=True, help="predictions file to write (.parquet or .csv)")
    score.add_argument(
        "--version", default=None, help="score with this registered version, not the champion"
    )
    score.add_argument(
        "--batch-rows", type=int, default=65_536, help="rows scored at a time (the memory bound)"
    )
    score.set_defaults(func=cmd_score)

    ui = sub.add_parser("ui", help="open the Dagster UI on the same state (dagster dev)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    gen = sub.add_parser("generate", help="drop generated sample data into landing/")
    gen.add_argument("--rows", type=int, default=10_000)
    gen.add_argument("--seed", type=int, default=None)
    gen.set_defaults(func=cmd_generate)

    ingest = sub.add_parser(
        "ingest", help="ingest new landed files and SQL rows (one Dagster run per batch)"
    )
    ingest.set_defaults(func=cmd_ingest)

    features = sub.add_parser(
        "features", help="write the feature table as of a past time (rebuild a training set)"
    )
    features.add_argument("--as-of", default=None, help="ISO-8601 time, UTC if no zone")
    features.add_argument("--out", required=True, help="Parquet file to write")
    features.set_defaults(func=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlplatform`` command."""
    from mlplatform.core.ingest import FileRejected
    from mlplatform.core.schema import DatasetSpecError
    from mlplatform.core.serving import ServingInputError
    from mlplatform.resources.feature_tables import SnapshotChanged
    from mlplatform.resources.ledger import ChampionChangeError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (
        CliError,
        ChampionChangeError,
        DatasetSpecError,
        FileRejected,
        ServingInputError,
        SnapshotChanged,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
