"""The experiment, pipeline runs and model runs that steps running at the same moment share, made
so that they converge: Kubeflow starts the cascade's and each variant's first stage together, and
on a fresh MLflow every one of them finds no experiment and no pipeline run yet.

- The experiment: created, and on "already exists" (another step created it first) looked up.
  Its name is unique in MLflow's store, so exactly one creation succeeds.
- A pipeline or model run: MLflow has no unique key for runs (nor a compare-and-set), so each
  creator searches again after creating, and every step keeps the same run, the earliest (start
  time, then run id); a creator whose run is not that one ends it KILLED, tags it as a duplicate
  of the one kept, and deletes it.
- The earliest run found is trusted only once it is SETTLE_SECONDS old. A start time is the
  creator's clock before its request, and the run is listed only when the request lands, so a
  search can miss a run that is earlier but still in flight; a step that took the earliest it saw
  at once could be handed a run its creator then retires (CI met this: "Cannot start run ... in
  the deleted state"). Once the earliest is that old, every earlier-stamped run has landed, unless
  a create request (or the skew between two creators' clocks) took longer than SETTLE_SECONDS.
  Only steps that meet a run younger than that wait: the first steps of a pipeline run.
"""

from __future__ import annotations

import time
from pathlib import Path

from facectx.tracking.settings import KEY_TAG

DUPLICATE_TAG = "facectx.duplicate_of"  # on a deleted run a concurrent step created and then gave up
SETTLE_SECONDS = 2.0  # longer than a create request takes to land, plus clock skew between pods


def experiment_id_of(client, uri: str, experiment: str) -> str:
    """The id of experiment `experiment` at `uri`, created if new (by whichever step asks first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            return _create_experiment(client, uri, experiment)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(experiment)  # another step created it meanwhile
    if found.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {experiment!r} at {uri} is deleted: restore it (mlflow experiments restore "
            f"--experiment-id {found.experiment_id}) or set another tracking.experiment"
        )
    return found.experiment_id


def _create_experiment(client, uri: str, experiment: str) -> str:
    if uri.startswith("sqlite:"):
        # Next to the local store, absolute: a temporary working copy must not take the artifacts with it.
        return client.create_experiment(experiment, artifact_location=Path("mlartifacts").resolve().as_uri())
    return client.create_experiment(experiment)


def pipeline_run(client, experiment_id: str, key: str) -> str:
    """The parent run of pipeline run `key` (its tag), created if none exists yet."""
    return one_run(
        client,
        experiment_id,
        f"tags.`{KEY_TAG}` = '{key}'",
        lambda: client.create_run(experiment_id, run_name=f"pipeline-{key[:12]}", tags={KEY_TAG: key}),
    )


def model_run(client, experiment_id: str, parent_id: str, model: str) -> str:
    """The run of one model (the cascade, a compared variant) under the pipeline run `parent_id`."""
    tags = {"mlflow.parentRunId": parent_id, "facectx.model_run": model}
    return one_run(
        client,
        experiment_id,
        " and ".join(f"tags.`{name}` = '{value}'" for name, value in tags.items()),
        lambda: client.create_run(experiment_id, run_name=model, tags=tags),
    )


def one_run(client, experiment_id: str, filter_string: str, create) -> str:
    """The id of the one live run matching `filter_string`: the earliest found, else one `create()`
    makes. After creating, search again: of runs created at the same moment by other steps, all
    keep the earliest, and this step retires its own if it is not that one."""

    def earliest() -> str | None:
        while True:
            found = client.search_runs(
                [experiment_id],
                filter_string=filter_string,
                max_results=1,
                order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            )
            if not found:
                return None
            young_for = found[0].info.start_time / 1000 + SETTLE_SECONDS - time.time()
            if young_for <= 0:
                return found[0].info.run_id
            time.sleep(young_for)  # then search again: an earlier run may have landed meanwhile

    existing = earliest()
    if existing:
        return existing
    created = create().info.run_id
    kept = earliest() or created
    if kept != created:
        # Ended first, so that nothing shows RUNNING even where deleted runs are listed.
        client.set_tag(created, DUPLICATE_TAG, kept)
        client.set_terminated(created, "KILLED")
        client.delete_run(created)
    return kept
