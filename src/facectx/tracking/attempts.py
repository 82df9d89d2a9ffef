"""A stage run left RUNNING by an attempt that was killed (a preempted or evicted Kubeflow pod, a
SIGKILLed process), closed by the stage's next attempt.

A killed process cannot end its MLflow run, so the run would show RUNNING forever. When a stage
starts again under the same pipeline and model runs (a retried Kubeflow step keeps the pipeline
run key and the stage name), any run of that stage still RUNNING there belongs to an attempt that
is gone: the new attempt ends it KILLED, tags it with the run that superseded it, and tags its own
run with the runs it superseded. It closes rather than continues the old run: the new attempt
resumes from its last saved state, so steps the killed attempt logged after that state would be
logged twice into one run; two runs keep each attempt's curve whole and say which replaced which.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SUPERSEDED_BY_TAG = "facectx.superseded_by"
SUPERSEDES_TAG = "facectx.supersedes"


def close_earlier_attempts(client, experiment_id: str, run, stage: str) -> list[str]:
    """End KILLED every other RUNNING run of stage `stage` beside the new attempt's `run` (under
    the same parent run); the ids of the runs closed."""
    parent = run.data.tags.get("mlflow.parentRunId")
    if not parent:
        return []
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent}' and tags.`facectx.stage` = '{stage}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    earlier = [other.info.run_id for other in found if other.info.run_id != run.info.run_id]
    for run_id in earlier:
        client.set_tag(run_id, SUPERSEDED_BY_TAG, run.info.run_id)
        client.set_terminated(run_id, "KILLED")
        log.warning(
            "MLflow run %s of stage %s was left RUNNING by an attempt that did not end (killed or "
            "preempted): marked KILLED, superseded by run %s",
            run_id,
            stage,
            run.info.run_id,
        )
    if earlier:
        client.set_tag(run.info.run_id, SUPERSEDES_TAG, ",".join(earlier))
    return earlier
