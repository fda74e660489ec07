"""The child processes of ``test_registry_faults.py``: the real code, in a process of its own.

``python -m mlplatform_tests.registry_faults_child <command> ...``, one command per fault:

``promote STATE [--stall-at PHASE --marker FILE] [--ledger-url URL]``
    Materializes ``registered_model`` and ``champion_model`` (the register and promote
    steps of the training job, upstream values read from STATE's asset storage). With
    ``--stall-at``, one real MLflow call is wrapped: at that phase the child writes
    ``--marker`` (JSON) and sleeps, so that the parent's SIGKILL lands exactly there:

    - ``artifact_copy``: while MLflow copies the model's files into the artifact store,
      half of ``model.skops`` written;
    - ``version_created``: right after ``create_model_version`` returned (version tags,
      ledger entry and alias move not done yet);
    - ``alias_moved``: right after the champion alias moved in MLflow (the ledger entry
      still pending).

``race STATE --ledger-url URL --rounds N --me I --barrier DIR --out FILE``
    Each round: wait for the other racer, register a new version (a run with a dataset
    digest and a passed gate tag; no model files: the race is about numbering, the
    alias and the ledger), read the champion as its gate would have compared with it,
    wait again, and promote it through
    :func:`~mlplatform.resources.ledger.move_champion` against that champion. One JSON
    line per round.

``faults STATE --batch KEY --new-batch KEY --out FILE [--file-size-limit BYTES]``
    Three writes whose folder fails: ingest the planned batch ``--new-batch`` into the
    feature store, score batch ``--batch`` with the champion into the predictions, log
    and register the stored candidate in MLflow. The parent runs this as ``nobody``
    (permission denied), or as itself with ``--file-size-limit``: ``RLIMIT_FSIZE`` is
    lowered around each write, SIGXFSZ ignored, so a write past it fails with EFBIG,
    as on a full disk. Reads (the champion, the stored rows) happen before the limit.
    Writes one JSON object: per operation, the error's type, errno and message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from mlplatform.resources.mlflow_registry import MlflowRegistry

STALL_PHASES = ("artifact_copy", "version_created", "alias_moved")
FAULT_OPERATIONS = ("ingest", "score", "register")
STALL_SECONDS = 600


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``path`` in one rename, so that the parent never reads half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def _stall(marker: Path, phase: str, **facts: Any) -> NoReturn:
    """Tell the parent which phase was reached, then wait for its SIGKILL."""
    _write_json(marker, {"phase": phase, "pid": os.getpid(), **facts})
    time.sleep(STALL_SECONDS)
    sys.exit(f"not killed within {STALL_SECONDS} s of reaching {phase}")


def _install_stall(phase: str, marker: Path, artifact_dir: Path) -> None:
    """Wrap the real MLflow call of ``phase`` so that the process stalls inside it."""
    import shutil

    import mlflow

    if phase == "artifact_copy":
        # MLflow's LocalArtifactRepository.log_artifacts copies a model folder file by
        # file with shutil.copy2: stall half-way through the model's own file
        copy2 = shutil.copy2

        def copy_half_then_stall(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            into_store = Path(dst).resolve().is_relative_to(artifact_dir)
            if Path(src).name != "model.skops" or not into_store:
                return copy2(src, dst, *args, **kwargs)
            data = Path(src).read_bytes()
            half = len(data) // 2
            with open(dst, "wb") as fh:
                fh.write(data[:half])
                fh.flush()
                os.fsync(fh.fileno())
            _stall(marker, phase, path=str(dst), written=half, size=len(data))

        shutil.copy2 = copy_half_then_stall
    elif phase == "version_created":
        create = mlflow.MlflowClient._create_model_version

        def create_then_stall(self: Any, *args: Any, **kwargs: Any) -> Any:
            version = create(self, *args, **kwargs)
            _stall(marker, phase, version=str(version.version))

        mlflow.MlflowClient._create_model_version = create_then_stall  # type: ignore[method-assign]
    elif phase == "alias_moved":
        set_alias = mlflow.MlflowClient.set_registered_model_alias

        def set_alias_then_stall(self: Any, name: str, alias: str, version: Any) -> None:
            set_alias(self, name, alias, version)
            _stall(marker, phase, version=str(version))

        mlflow.MlflowClient.set_registered_model_alias = set_alias_then_stall  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown phase {phase!r}; one of {STALL_PHASES}")


def promote(args: argparse.Namespace) -> int:
    """Register the stored candidate and promote it, as the training job's last two steps."""
    import dagster as dg

    from mlplatform.defs.resources import build_resources
    from mlplatform.paths import StatePaths
    from mlplatform_tests.defs.helpers import ASSETS

    state = StatePaths(Path(args.state))
    if args.stall_at:
        _install_stall(args.stall_at, Path(args.marker), (state.mlflow_dir / "artifacts").resolve())
    resources = build_resources(state, ledger_url=args.ledger_url)
    result = dg.materialize(
        ASSETS,
        selection=["registered_model", "champion_model"],
        resources=resources,
        raise_on_error=False,
    )
    return 0 if result.success else 1


def _wait_for_all(barrier: Path, name: str, me: int, parties: int) -> None:
    """Both racers reach ``name`` before either goes on (a file each, polled)."""
    (barrier / f"{name}.{me}").touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.glob(f"{name}.*"))) < parties:
        if time.monotonic() > deadline:
            sys.exit(f"the other racer never reached {name}")
        time.sleep(0.001)


def register_version(registry: MlflowRegistry, experiment_id: str) -> str:
    """A new version of the registry's model: a finished run with a dataset digest, and a
    passed gate tag; no model files (what matters here is numbering, alias and ledger)."""
    from mlflow.exceptions import MlflowException

    from mlplatform.defs.registry import GATE_PASSED_TAG
    from mlplatform.resources.mlflow_registry import DATASET_DIGEST_TAG

    client = registry._client()
    run = client.create_run(experiment_id)
    client.set_tag(run.info.run_id, DATASET_DIGEST_TAG, f"{run.info.run_id:0<64}")
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(MlflowException):  # registered already, maybe by the other racer
        client.create_registered_model(registry.model_name)
    created = client.create_model_version(
        registry.model_name,
        source=f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        tags={GATE_PASSED_TAG: "true"},
    )
    return str(created.version)


def race(args: argparse.Namespace) -> int:
    """Register and promote in lockstep with another racer; one JSON line per round."""
    from mlplatform.defs.resources import build_resources
    from mlplatform.paths import StatePaths
    from mlplatform.resources.ledger import (
        ChampionChangeError,
        GateChampion,
        PromotionLedger,
        move_champion,
    )

    registry = build_resources(StatePaths(Path(args.state)))["mlflow_registry"]
    ledger = PromotionLedger(url=args.ledger_url)
    barrier, out = Path(args.barrier), Path(args.out)
    client = registry._client()
    _wait_for_all(barrier, "start", args.me, 2)  # both create the experiment, if need be
    experiment_id = registry._experiment_id(client)
    with out.open("a") as log:
        for round_ in range(args.rounds):
            _wait_for_all(barrier, f"register-{round_}", args.me, 2)
            version = register_version(registry, experiment_id)
            # the champion this version's gate compares it with (both racers see the same)
            seen = registry.champion()
            gate = GateChampion(seen.version if seen else None)
            _wait_for_all(barrier, f"promote-{round_}", args.me, 2)
            outcome: dict[str, Any] = {
                "round": round_,
                "racer": args.me,
                "version": version,
                "gate_champion": gate.version,
            }
            try:
                entry = move_champion(
                    registry,
                    ledger,
                    action="promote",
                    to_version=str(version),
                    reason=f"gate PASSED (racer {args.me}, round {round_})",
                    gate_passed=True,
                    dagster_run_id=f"racer-{args.me}-round-{round_}",
                    gate_champion=gate,
                )
                outcome["entry"] = None if entry is None else entry.id
            except ChampionChangeError as exc:
                outcome["refused"] = f"{type(exc).__name__}: {exc}"
            log.write(json.dumps(outcome) + "\n")
            log.flush()
    return 0


@contextlib.contextmanager
def _file_size_limit(limit: int | None) -> Iterator[None]:
    """Files this process writes cannot grow past ``limit`` bytes meanwhile (None: no limit)."""
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _outcome(operation: Callable[[], object], limit: int | None) -> dict[str, Any]:
    try:
        with _file_size_limit(limit):
            operation()
    except Exception as exc:
        # the errno of the OSError at the root, when the platform wrapped it
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__
        return {
            "error": type(exc).__name__,
            "errno": cause.errno if isinstance(cause, OSError) else None,
            "message": str(exc),
        }
    return {"error": None}


def faults(args: argparse.Namespace) -> int:
    """Ingest, score and register while the output folders refuse writes."""
    import joblib
    import pandas as pd

    from mlplatform.core.digest import frame_digest
    from mlplatform.core.features import model_inputs
    from mlplatform.core.serving import TrainingReference, pipeline_threshold
    from mlplatform.core.split import SPLIT_COLUMN
    from mlplatform.defs.common import DATASET
    from mlplatform.defs.registry import TRAINING_REFERENCE_DOC
    from mlplatform.defs.resources import build_resources
    from mlplatform.paths import StatePaths
    from mlplatform.resources.batch_scoring import score_dataset
    from mlplatform.resources.ingestion import ingest_batch

    # a write past the limit fails with EFBIG instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    state = StatePaths(Path(args.state))
    resources = build_resources(state)
    store, landing = resources["feature_store"], resources["landing"]
    registry, predictions = resources["mlflow_registry"], resources["prediction_store"]

    # everything read first: the fault is in writing
    champion = registry.champion()
    assert champion is not None, "the parent registers a champion first"
    pipeline = registry.load(champion)
    reference = TrainingReference.from_dict(
        registry.load_document(champion, TRAINING_REFERENCE_DOC) or {}
    )
    threshold = pipeline_threshold(pipeline)
    plan = store.load_plan(args.new_batch)
    rows = store.batch_paths(args.batch)
    stored = state.asset_storage
    candidate = joblib.load(stored / "candidate_model.joblib")
    evaluation = joblib.load(stored / "model_evaluation.joblib")
    split = pd.read_parquet(stored / "train_test_split.parquet")
    train = split[split[SPLIT_COLUMN] == "train"]

    def ingest() -> object:
        return ingest_batch(plan, landing, store, DATASET)

    def score() -> object:
        return score_dataset(
            rows,
            pipeline,
            DATASET,
            reference,
            out_dir=predictions.batch_dir(args.batch),
            partition=f"v{champion.version}",
            model_name=champion.name,
            model_version=champion.version,
            alias=registry.champion_alias,
            threshold=float("nan") if threshold is None else threshold,
            run_id="registry-faults",
            scored_at=datetime.now(UTC),
        )

    def register() -> object:
        return registry.log_and_register(
            pipeline=candidate.pipeline,
            params={"model_name": candidate.model_name},
            metrics=evaluation.candidate.metrics(),
            run_tags={"dagster_run_id": "registry-faults"},
            version_tags={"gate.passed": "true"},
            input_example=model_inputs(train.head(5), DATASET),
            training_frame=train,
            dataset_digest=frame_digest(train),
            training_ids=train[DATASET.entity_id],
            documents={TRAINING_REFERENCE_DOC: reference.to_dict()},
            images=evaluation.plots,
        )

    operations = {"ingest": ingest, "score": score, "register": register}
    report: dict[str, Any] = {
        name: _outcome(op, args.file_size_limit) for name, op in operations.items()
    }
    report["uid"] = os.getuid()
    _write_json(Path(args.out), report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registry_faults_child")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("promote")
    p.add_argument("state")
    p.add_argument("--stall-at", choices=STALL_PHASES, default=None)
    p.add_argument("--marker", default=None)
    p.add_argument("--ledger-url", default=None)
    p.set_defaults(func=promote)

    r = sub.add_parser("race")
    r.add_argument("state")
    r.add_argument("--ledger-url", required=True)
    r.add_argument("--rounds", type=int, required=True)
    r.add_argument("--me", type=int, required=True)
    r.add_argument("--barrier", required=True)
    r.add_argument("--out", required=True)
    r.set_defaults(func=race)

    f = sub.add_parser("faults")
    f.add_argument("state")
    f.add_argument("--batch", required=True)
    f.add_argument("--new-batch", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--file-size-limit", type=int, default=None)
    f.set_defaults(func=faults)

    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
