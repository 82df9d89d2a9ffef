"""The Kubeflow pipeline compiles with the stage list, retries, caching and run id it needs on a
cluster, and runs end to end with kfp.local on real photos."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import yaml
from kfp import compiler, local
from mlflow.tracking import MlflowClient

from conftest import REPO
from pipelines.training import build_training_pipeline


def _params_file(params, folder):
    from facectx.config import dump_params

    path = folder / "params.yaml"
    path.write_text(dump_params(params))
    return path


def _compile(params_file, path, **options):
    compiler.Compiler().compile(build_training_pipeline(params_file, **options), str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    return path.read_text(), docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _executor_of(spec, task: dict) -> str | None:
    """The executor label of the container a task runs (None for a loop or other sub-DAG)."""
    return spec["components"][task["componentRef"]["name"]].get("executorLabel")


def _function_of(spec, task: dict) -> str | None:
    """The component a task runs, by the Python function its container executes: KFP numbers the
    names of tasks, components and executors (train-stage-2, ...) as it compiles, this one it keeps."""
    executor = _executor_of(spec, task)
    if executor is None:
        return None
    args = spec["deploymentSpec"]["executors"][executor]["container"]["args"]
    return args[args.index("--function_to_execute") + 1]


def _by_component(spec, tasks: dict) -> dict[str, list[dict]]:
    """{component function: its tasks}; a component's training tasks in stage order."""
    found: dict[str, list[dict]] = {}
    for task in tasks.values():
        found.setdefault(_function_of(spec, task), []).append(task)
    for task_list in found.values():
        task_list.sort(
            key=lambda task: task["inputs"]["parameters"].get("stage", {}).get("runtimeValue", {}).get("constant", 0)
        )
    return found


def _stages(tasks: list[dict]) -> list[int]:
    return [task["inputs"]["parameters"]["stage"]["runtimeValue"]["constant"] for task in tasks]


def test_pipeline_compiles_for_a_cluster(tmp_path, monkeypatch, params):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak-into-yaml")
    text, spec, executors = _compile(REPO / "params.yaml", tmp_path / "training.yaml", gpus_per_stage=2, parallelism=1)
    assert "must-not-leak-into-yaml" not in text
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert {"source", "profile", "compare", "params_yaml", "mlflow_tracking_uri", "resume_uri"} <= set(inputs)
    assert "isOptional" not in inputs["source"]  # required: no machine-local default
    default_params = yaml.safe_load(inputs["params_yaml"]["defaultValue"])
    assert default_params["ingest"]["source"] == "" and inputs["profile"]["defaultValue"] == "paper"

    tasks = spec["root"]["dag"]["tasks"]
    by_component = _by_component(spec, tasks)
    steps = {"resolve_params", "ingest", "validate", "prepare", "evaluate", "register", "promote"}
    assert steps <= set(by_component)
    assert all(len(by_component[step]) == 1 for step in steps)
    step = {name: by_component[name][0] for name in steps}
    train = by_component["train_stage"]
    assert _stages(train) == list(params.train.stages)  # the chain is params' stage list
    for before, after in zip(train, train[1:]):  # each stage starts from the previous stage's model
        upstream = after["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]["producerTask"]
        assert tasks[upstream] is before
    assert sorted(_function_of(spec, tasks[name]) for name in step["prepare"]["dependentTasks"]) == [
        "ingest",
        "resolve_params",
        "validate",
    ]
    # every step that logs or reads changing input runs every time; the pure data steps may be reused
    for task in [step[name] for name in ("resolve_params", "ingest", "evaluate", "register", "promote")] + train:
        assert not task.get("cachingOptions", {}).get("enableCache"), task["taskInfo"]
    assert step["validate"]["cachingOptions"]["enableCache"]
    # the Kubeflow run id reaches MLflow as an input of every step that tracks
    for task in [step["evaluate"], step["register"], step["promote"], *train]:
        run_id = task["inputs"]["parameters"]["pipeline_run_id"]["runtimeValue"]["constant"]
        assert run_id == "{{$.pipeline_job_uuid}}", task["taskInfo"]
    for task in train:
        assert task["retryPolicy"]["maxRetryCount"] == 3
        assert task["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] == 2
    [loop] = [name for name, task in tasks.items() if "iteratorPolicy" in task]
    assert tasks[loop]["iteratorPolicy"]["parallelismLimit"] == 1
    assert loop in step["evaluate"]["dependentTasks"]
    variant_tasks = spec["components"][tasks[loop]["componentRef"]["name"]]["dag"]["tasks"]
    assert _stages(_by_component(spec, variant_tasks)["train_stage"]) == list(params.train.stages)
    for label, executor in spec["deploymentSpec"]["executors"].items():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command, label  # kfp is in the image
        assert not any(e.get("name") == "FACECTX_PIPELINE_RUN" for e in executor["container"].get("env", []))
    for task in train:
        trainer = _executor_of(spec, task)
        assert (
            spec["deploymentSpec"]["executors"][trainer]["container"]["resources"]["accelerator"]["resourceCount"]
            == "2"
        )
        assert executors[trainer]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert executors[trainer]["secretAsEnv"][0]["secretName"] == "facectx-s3"


def test_compiled_chain_follows_params_stages(tmp_path, params):
    from conftest import with_stage_256

    _, spec, _ = _compile(_params_file(with_stage_256(params), tmp_path), tmp_path / "training.yaml")
    assert _stages(_by_component(spec, spec["root"]["dag"]["tasks"])["train_stage"]) == [8, 16, 32, 64, 128, 256]


def test_pipeline_runs_locally_with_a_256px_stage(sample_source, tmp_path, params, monkeypatch):
    """A 256 px stage added in params trains through kfp.local: data, the six-stage cascade and the
    ProGAN chain, evaluation, registration and promotion, all in one MLflow pipeline run."""
    from conftest import tiny_training_params, with_stage_256
    from facectx.config import dump_params

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)
    quick = with_stage_256(tiny_training_params(params, max_train_rows=8, val_rows=2))
    quick = dataclasses.replace(
        quick,
        evaluate=dataclasses.replace(params.evaluate, max_photos=4, batch_size=4, calibration_pairs=20),
        validate=dataclasses.replace(params.validate, workers=1, min_valid_fraction=0.5),
        prepare=dataclasses.replace(
            quick.prepare, workers=1, split=dataclasses.replace(params.prepare.split, val_fraction=0.4)
        ),
    )
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    pipeline = build_training_pipeline(_params_file(quick, tmp_path))

    run = pipeline(
        source=str(sample_source), params_yaml=dump_params(quick), profile="", mlflow_tracking_uri=store, resume_uri=""
    )
    assert run is not None
    metrics_files = list((tmp_path / "kfp").rglob("metrics.json"))
    prepared = [p.parent for p in metrics_files if (p.parent / "train" / "index.parquet").is_file()]
    assert len(prepared) == 1
    metrics = json.loads((prepared[0] / "metrics.json").read_text())
    assert (
        metrics["prepared"] + metrics["quarantined"]
        == metrics["photos_found"]
        == len(list(sample_source.rglob("*.jpg")))
    )
    assert len(pd.read_parquet(prepared[0] / "test" / "index.parquet")) > 0
    final = [json.loads(p.read_text()) for p in (tmp_path / "kfp").rglob("checkpoint/meta.json")]
    assert sorted(meta["model_args"]["kind"] for meta in final if meta["stage"] == 256) == ["cascade", "progan"]
    reports = list((tmp_path / "kfp").rglob("report.html"))
    assert reports and "cascade" in reports[0].read_text() and "progan" in reports[0].read_text()

    client = MlflowClient(store)
    champion = client.get_model_version_by_alias(quick.registry.model_name, "champion")
    assert int(champion.version) == 1 and float(champion.tags["metric.fd"]) > 0
    # One pipeline run, keyed by the kfp run id: a run per model holding its stages; evaluation,
    # registration and promotion beside them.
    runs = client.search_runs([client.get_experiment_by_name("facectx").experiment_id], max_results=200)
    parents = [r for r in runs if "facectx.pipeline_key" in r.data.tags]
    assert len(parents) == 1
    parent = parents[0].info.run_id
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert {"cascade", "progan", "evaluate", "register-facectx-cascade"} <= set(children)
    assert any(name.startswith("promote-") for name in children)
    cascade_stages = sorted(
        r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == children["cascade"].info.run_id
    )
    assert cascade_stages == sorted(f"cascade/stage_{s}" for s in quick.train.stages)
