"""The one module that talks to MLflow: runs, model versions and the champion alias.

The embedded default is a SQLite backend store and a local artifact root inside
``MLPLATFORM_HOME``; a deployment points ``tracking_uri`` at an MLflow server.
MLflow is imported inside methods: it takes seconds to import and the code
location must load fast.

Every run this module starts is stamped with the host, pid and start time of its
process (``mlplatform.process.*`` tags). A process SIGKILLed while logging leaves its
run RUNNING and its logged model PENDING forever; before logging, the next training
run marks those of provably dead processes of this host FAILED
(:meth:`MlflowRegistry.fail_orphaned_runs`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from mlplatform.resources.processes import ProcessStamp, provably_dead, this_process

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

__all__ = [
    "DATASET_DIGEST_TAG",
    "RUN_HOST_TAG",
    "RUN_PID_TAG",
    "RUN_STARTED_TAG",
    "TRAINING_IDS_ARTIFACT",
    "MlflowRegistry",
    "ModelVersionRef",
    "RegistryWriteError",
    "process_tags",
]

TRAINING_IDS_ARTIFACT = "training_entity_ids.parquet"
DATASET_DIGEST_TAG = "dataset_digest"
# the process that logs a run: who may declare the run abandoned once that process is gone
RUN_HOST_TAG = "mlplatform.process.host"
RUN_PID_TAG = "mlplatform.process.pid"
RUN_STARTED_TAG = "mlplatform.process.started"

logger = logging.getLogger(__name__)


class RegistryWriteError(RuntimeError):
    """Logging or registering a version failed; the message names the MLflow store."""


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"


class MlflowRegistry(dg.ConfigurableResource):
    """Logs candidates, registers versions and moves the champion alias."""

    tracking_uri: str
    artifact_root: str | None = None
    experiment_name: str = "mlplatform"
    model_name: str = "ai4i-failure-classifier"
    champion_alias: str = "champion"

    def _client(self) -> MlflowClient:
        import mlflow

        # MLflow also exports the URIs as MLFLOW_TRACKING_URI (this platform's deployment
        # setting) and MLFLOW_REGISTRY_URI: put the environment back, so a later build of
        # the definitions in this process does not mistake this store for a configured
        # server, and processes started from this one do not inherit it
        from mlflow.environment_variables import MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_URI

        exported = [(var, var.get_raw()) for var in (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI)]
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        for var, value in exported:
            if value is None:
                var.unset()
            else:
                var.set(value)
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _experiment_id(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(
                client.create_experiment(self.experiment_name, artifact_location=self.artifact_root)
            )
        except MlflowException:
            # another process created it since the lookup (two first runs at once)
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def log_and_register(
        self,
        *,
        pipeline: Pipeline,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        run_tags: Mapping[str, str],
        version_tags: Mapping[str, str],
        input_example: pd.DataFrame,
        training_frame: pd.DataFrame,
        dataset_digest: str,
        training_ids: pd.Series,
        documents: Mapping[str, Mapping[str, Any]] | None = None,
        images: Mapping[str, bytes] | None = None,
    ) -> ModelVersionRef:
        """Log one run with the fitted ``pipeline`` and register it as a new version.

        Parameters
        ----------
        pipeline : Pipeline
            The fitted candidate, exactly as it will serve.
        params, metrics, run_tags : mapping
            Logged on the run.
        version_tags : mapping
            Set on the new model version (e.g. the gate decision).
        input_example : DataFrame
            A few model-input rows; also used to infer the signature.
        training_frame : DataFrame
            The training rows, logged as the run's dataset input (schema and digest).
        dataset_digest : str
            Digest of the training rows, logged as a tag and the dataset's digest.
        training_ids : Series
            Entity ids of the training rows, logged so that a later candidate can be
            compared with this model on rows neither has trained on.
        documents : mapping, optional
            JSON artifacts by file name.
        images : mapping, optional
            PNG artifacts by file name.
        """
        import mlflow
        import mlflow.sklearn
        import sklearn
        import skops.io
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.models import infer_signature

        client = self._client()
        experiment_id = self._experiment_id(client)
        with self._naming_the_store():
            self.fail_orphaned_runs()
        with _quiet_schema_hints():
            signature = infer_signature(input_example, pipeline.predict(input_example))
        # skops, not pickle: loading never runs arbitrary code. The types it must be told
        # to trust are exactly those of the pipeline we just fitted ourselves.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
        with (
            self._naming_the_store(),
            _quiet_schema_hints(),
            mlflow.start_run(experiment_id=experiment_id, tags=process_tags()) as run,
        ):
            mlflow.log_params({k: _param(v) for k, v in params.items()})
            mlflow.log_metrics(dict(metrics))
            mlflow.set_tags({**run_tags, DATASET_DIGEST_TAG: dataset_digest})
            dataset = from_pandas(training_frame, name="training_split", digest=dataset_digest[:36])
            mlflow.log_input(dataset, context="training")
            for name, doc in (documents or {}).items():
                mlflow.log_dict(dict(doc), name)
            with tempfile.TemporaryDirectory() as tmp:
                ids_path = Path(tmp) / TRAINING_IDS_ARTIFACT
                training_ids.rename("entity_id").to_frame().to_parquet(ids_path, index=False)
                mlflow.log_artifact(str(ids_path))
                for name, png in (images or {}).items():
                    p = Path(tmp) / name
                    p.write_bytes(png)
                    mlflow.log_artifact(str(p), artifact_path="plots")
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=signature,
                input_example=input_example,
                pip_requirements=[
                    f"scikit-learn=={sklearn.__version__}",
                    f"pandas=={pd.__version__}",
                ],
                registered_model_name=self.model_name,
                serialization_format="skops",
                skops_trusted_types=trusted,
            )
            run_id = run.info.run_id
        version = str(info.registered_model_version)
        ref = ModelVersionRef(self.model_name, version, run_id)
        self.set_version_tags(ref, version_tags)
        return ref

    def fail_orphaned_runs(self) -> list[str]:
        """Mark FAILED the experiment's RUNNING runs whose process is provably dead.

        A run counts as orphaned only when its ``mlplatform.process.*`` tags name this
        host and that process is gone (no such pid, a zombie, another process under
        that pid, or a reboot since; see :mod:`mlplatform.resources.processes`). A run
        of another host, of a live process, or without those tags is never touched.
        Each orphaned run is terminated as FAILED, and its logged models still PENDING
        (files never completely uploaded) are finalized as FAILED.

        Returns
        -------
        list of str
            One line per run marked FAILED (also logged as warnings).
        """
        from mlflow.entities import LoggedModelStatus, RunStatus

        client = self._client()
        experiment_id = self._experiment_id(client)
        running = f"attributes.status = '{RunStatus.to_string(RunStatus.RUNNING)}'"
        failed = []
        token = None
        while True:
            page = client.search_runs([experiment_id], running, page_token=token)
            for run in page:
                tags = run.data.tags
                stamp = ProcessStamp.parse(
                    tags.get(RUN_HOST_TAG), tags.get(RUN_PID_TAG), tags.get(RUN_STARTED_TAG)
                )
                if stamp is None or not provably_dead(stamp):
                    continue
                run_id = run.info.run_id
                client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
                models = [
                    m.model_id
                    for m in client.search_logged_models(
                        [experiment_id], filter_string=f"source_run_id = '{run_id}'"
                    )
                    if m.status == LoggedModelStatus.PENDING
                ]
                for model_id in models:
                    client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
                line = (
                    f"MLflow run {run_id} of experiment {self.experiment_name!r} was left "
                    f"RUNNING by {stamp.describe()}, which is gone: marked FAILED"
                    + (
                        f"; its PENDING logged models {', '.join(models)} marked FAILED"
                        if models
                        else ""
                    )
                )
                logger.warning(line)
                failed.append(line)
            token = page.token
            if not token:
                return failed

    @contextmanager
    def _naming_the_store(self) -> Iterator[None]:
        # MLflow's errors of a full disk or a refused folder do not say which store:
        # "(sqlite3.OperationalError) disk I/O error [SQL: INSERT INTO runs ...]"
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (OSError, MlflowException) as exc:
            artifacts = f" (artifacts {self.artifact_root})" if self.artifact_root else ""
            raise RegistryWriteError(
                f"cannot log and register a version of model {self.model_name!r} in the "
                f"MLflow store {self.tracking_uri}{artifacts}: {type(exc).__name__}: {exc}"
            ) from exc

    def set_version_tags(self, ref: ModelVersionRef, tags: Mapping[str, str]) -> None:
        """Set tags on a model version."""
        client = self._client()
        for key, value in tags.items():
            client.set_model_version_tag(ref.name, ref.version, key, value)

    def version_tags(self, ref: ModelVersionRef) -> dict[str, str]:
        """The tags of a model version."""
        mv = self._client().get_model_version(ref.name, ref.version)
        return dict(mv.tags)

    def champion(self) -> ModelVersionRef | None:
        """The version the champion alias points at, or None if there is none yet."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            mv = client.get_model_version_by_alias(self.model_name, self.champion_alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise
        return ModelVersionRef(self.model_name, str(mv.version), str(mv.run_id))

    def promote(self, ref: ModelVersionRef) -> None:
        """Point the champion alias at ``ref``."""
        self._client().set_registered_model_alias(ref.name, self.champion_alias, ref.version)

    def get_version(self, version: str) -> ModelVersionRef:
        """The registered version ``version`` of the model.

        Raises
        ------
        LookupError
            When the model has no such version; the message lists the versions it has.
        """
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            mv = client.get_model_version(self.model_name, str(version))
        except MlflowException as exc:
            if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                raise
            known = ", ".join(r.version for r in self.versions()) or "none"
            raise LookupError(
                f"model {self.model_name!r} has no version {version!r} "
                f"(registered versions: {known})"
            ) from exc
        return ModelVersionRef(self.model_name, str(mv.version), str(mv.run_id))

    def run_tags(self, ref: ModelVersionRef) -> dict[str, str]:
        """The tags of the MLflow run that produced ``ref``."""
        return dict(self._client().get_run(ref.run_id).data.tags)

    def dataset_digest(self, ref: ModelVersionRef) -> str | None:
        """Digest of the rows ``ref`` was trained on (None if its run did not log one)."""
        if ref.run_id in {"", "None"}:
            return None
        return self.run_tags(ref).get(DATASET_DIGEST_TAG)

    def versions(self) -> list[ModelVersionRef]:
        """Every registered version of the model, oldest first."""
        client = self._client()
        found = client.search_model_versions(f"name = '{self.model_name}'")
        refs = [ModelVersionRef(m.name, str(m.version), str(m.run_id)) for m in found]
        return sorted(refs, key=lambda r: int(r.version))

    def load(self, ref: ModelVersionRef) -> Pipeline:
        """The fitted pipeline of a registered version (from the registry, never a path)."""
        import mlflow.sklearn

        self._client()
        # Into a folder of our own: without dst_path, MLflow hands back a local artifact
        # store's own folder and writes a registered_model_meta file into it, so loading
        # the champion would need write access to the store (and free space on its disk).
        with tempfile.TemporaryDirectory() as tmp:
            model: Pipeline = mlflow.sklearn.load_model(ref.uri, dst_path=tmp)
        return model

    def training_ids(self, ref: ModelVersionRef) -> pd.Series:
        """Entity ids of the rows ``ref`` was trained on (empty if none were logged)."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        self._client()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=ref.run_id, artifact_path=TRAINING_IDS_ARTIFACT, dst_path=tmp
                )
            except (MlflowException, OSError):
                return pd.Series([], dtype="int64", name="entity_id")
            return pd.read_parquet(local)["entity_id"]

    def load_document(self, ref: ModelVersionRef, name: str) -> dict[str, Any] | None:
        """A JSON document logged with the version's run (``documents=``), or None."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        self._client()
        try:
            loaded: dict[str, Any] = mlflow.artifacts.load_dict(f"runs:/{ref.run_id}/{name}")
        except (MlflowException, OSError):
            return None
        return loaded

    def run_metrics(self, ref: ModelVersionRef) -> dict[str, float]:
        """The metrics logged on the version's run."""
        return dict(self._client().get_run(ref.run_id).data.metrics)


def process_tags() -> dict[str, str]:
    """The ``mlplatform.process.*`` tags of a run logged by this process."""
    me = this_process()
    return {
        RUN_HOST_TAG: me.host,
        RUN_PID_TAG: str(me.pid),
        RUN_STARTED_TAG: me.started or "",
    }


@contextmanager
def _quiet_schema_hints() -> Iterator[None]:
    # MLflow hints that int columns cannot hold missing values: the schema declares
    # them required, so that is exactly the contract we want.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        yield


def _param(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    return json.dumps(value, default=str, sort_keys=True)
