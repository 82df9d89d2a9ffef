"""The Kubeflow pipeline compiles with the stage list, retries, caching and run id it needs on a
cluster, and runs end to end with kfp.local on real photos."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import yaml
from kfp import compiler
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


def _all_tasks(spec: dict):
    """Every container task of every DAG: the root's and those inside ParallelFor sub-DAGs."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return [(name, task) for dag in dags for name, task in dag["tasks"].items() if _executor_of(spec, task)]


def _stages(tasks: list[dict]) -> list[int]:
    return [task["inputs"]["parameters"]["stage"]["runtimeValue"]["constant"] for task in tasks]


def test_pipeline_compiles_for_a_cluster(tmp_path, monkeypatch, params):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak-into-yaml")
    text, spec, executors = _compile(REPO / "params.yaml", tmp_path / "training.yaml", gpus_per_stage=2, parallelism=1)
    assert "must-not-leak-into-yaml" not in text
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    run_parameters = {"source", "profile", "compare", "params_yaml", "mlflow_tracking_uri", "s3_endpoint"}
    assert run_parameters | {"resume_uri", "dvc_remote"} <= set(inputs)
    assert inputs["dvc_remote"]["defaultValue"] == "s3://facectx-data/dvc"
    assert "isOptional" not in inputs["source"]  # required: no machine-local default
    # The services are run parameters, defaulting to their in-cluster names (infra/k8s).
    assert inputs["s3_endpoint"]["defaultValue"] == "http://object-store.facectx.svc.cluster.local:8333"
    assert inputs["mlflow_tracking_uri"]["defaultValue"] == "http://mlflow.facectx.svc.cluster.local:5000"
    default_params = yaml.safe_load(inputs["params_yaml"]["defaultValue"])
    assert default_params["ingest"]["source"] == "" and inputs["profile"]["defaultValue"] == "paper"

    tasks = spec["root"]["dag"]["tasks"]
    by_component = _by_component(spec, tasks)
    steps = {"resolve_params", "ingest", "validate", "prepare", "version_data", "evaluate", "register", "promote"}
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
    # Only the version step takes the data; the later steps take its pointers (and fetch what they read).
    assert set(step["version_data"]["inputs"]["artifacts"]) == {"raw", "prepared"}
    for task in [step["evaluate"], step["register"], *train]:
        artifacts = task["inputs"]["artifacts"]
        assert "prepared" not in artifacts and "raw" not in artifacts, task["taskInfo"]
        assert artifacts["data"]["taskOutputArtifact"]["producerTask"] == "version-data"
        assert task["inputs"]["parameters"]["dvc_remote"] == {"componentInputParameter": "dvc_remote"}
    # Caching off in every DAG (kfp's default switch), the ParallelFor's too: nothing could hit.
    assert all(
        "cachingOptions" in task and not task["cachingOptions"].get("enableCache") for _, task in _all_tasks(spec)
    )
    # Every step that reaches the object store gets the run's endpoint as an input, no constant env.
    for name in ("ingest", "evaluate", "register", "promote"):
        assert step[name]["inputs"]["parameters"]["s3_endpoint"] == {"componentInputParameter": "s3_endpoint"}
    for label, executor in spec["deploymentSpec"]["executors"].items():
        assert not [e for e in executor["container"].get("env", []) if "ENDPOINT" in e["name"]], label
    # the Kubeflow run id reaches MLflow as an input of every step that tracks
    for task in [step["evaluate"], step["register"], step["promote"], *train]:
        run_id = task["inputs"]["parameters"]["pipeline_run_id"]["runtimeValue"]["constant"]
        assert run_id == "{{$.pipeline_job_uuid}}", task["taskInfo"]
    for task in train:
        assert task["retryPolicy"]["maxRetryCount"] == 3
        assert task["inputs"]["parameters"]["s3_endpoint"] == {"componentInputParameter": "s3_endpoint"}
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
        accelerator = spec["deploymentSpec"]["executors"][trainer]["container"]["resources"]["accelerator"]
        assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "2")
        assert executors[trainer]["secretAsEnv"][0]["secretName"] == "facectx-s3"
    # Secrets by name: the S3 keys for the steps that reach the object store, the MLflow login only
    # for those that track (MLflow runs behind basic auth).
    secrets = {
        name: sorted(s["secretName"] for s in executors.get(_executor_of(spec, step[name]), {}).get("secretAsEnv", []))
        for name in ("ingest", "validate", "prepare", "version_data", "evaluate", "register", "promote")
    }
    tracked = ["facectx-mlflow", "facectx-s3"]
    assert secrets == {
        "ingest": ["facectx-s3"],
        "validate": [],
        "prepare": [],
        "version_data": ["facectx-s3"],
        "evaluate": tracked,
        "register": tracked,
        "promote": tracked,
    }
    assert all(
        sorted(s["secretName"] for s in executors[_executor_of(spec, t)]["secretAsEnv"]) == tracked for t in train
    )
    # evaluate scores on a GPU too, placed like the training steps
    scorer = _executor_of(spec, step["evaluate"])
    accelerator = spec["deploymentSpec"]["executors"][scorer]["container"]["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1")
    # Placed by the GPU limit alone: no node label required; only the GPU resource's own taint tolerated.
    for task in [*train, step["evaluate"]]:
        config = executors[_executor_of(spec, task)]
        assert "nodeSelector" not in config and "nodeAffinity" not in config
        assert config["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "gpu.present" not in text


def test_a_cpu_pipeline_asks_for_no_gpu(tmp_path):
    """gpus_per_stage 0 (the kfp.local rehearsal): no step asks for an accelerator or tolerates a
    GPU taint; the training steps are told they have no GPU (so none is required of the node)."""
    text, spec, executors = _compile(REPO / "params.yaml", tmp_path / "training.yaml", gpus_per_stage=0)
    assert not [
        label
        for label, e in spec["deploymentSpec"]["executors"].items()
        if "accelerator" in e["container"].get("resources", {})
    ]
    assert not [label for label, config in executors.items() if "tolerations" in config]
    for _, task in _all_tasks(spec):
        if "gpus" in task.get("inputs", {}).get("parameters", {}):
            assert task["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] == 0


def test_gpu_placement_options_compile_into_the_gpu_steps(tmp_path, params):
    from pipelines.gpu import GpuPlacement, Toleration

    placement = GpuPlacement(
        node_selector=(("cloud.google.com/gke-accelerator", "nvidia-h100-80gb"), ("pool", "train")),
        tolerations=(Toleration.parse("dedicated=ml:NoSchedule"), Toleration.parse("spot")),
        accelerator="nvidia.com/mig-3g.40gb",
    )
    _, spec, executors = _compile(REPO / "params.yaml", tmp_path / "training.yaml", placement=placement)
    gpu_steps = _by_component(spec, spec["root"]["dag"]["tasks"])
    placed = [*gpu_steps["train_stage"], *gpu_steps["evaluate"]]
    assert len(placed) == len(params.train.stages) + 1
    for task in placed:
        label = _executor_of(spec, task)
        assert spec["deploymentSpec"]["executors"][label]["container"]["resources"]["accelerator"]["resourceType"] == (
            "nvidia.com/mig-3g.40gb"
        )
        assert executors[label]["nodeSelector"]["labels"] == {
            "cloud.google.com/gke-accelerator": "nvidia-h100-80gb",
            "pool": "train",
        }
        assert executors[label]["tolerations"] == [
            {"key": "nvidia.com/mig-3g.40gb", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists"},
        ]
    for name in ("ingest", "validate", "prepare", "register", "promote"):  # CPU steps: anywhere
        config = executors.get(_executor_of(spec, gpu_steps[name][0]), {})
        assert "nodeSelector" not in config and "tolerations" not in config, name


def test_placement_options_are_checked():
    import pytest

    from pipelines.gpu import GpuPlacement, Toleration

    assert Toleration.parse("a=b:NoExecute") == Toleration("a", "b", "NoExecute")
    for bad in ("", "=x", "a=", "a:NoWhere"):
        with pytest.raises(ValueError, match="KEY\\[=VALUE\\]"):
            Toleration.parse(bad)
    with pytest.raises(ValueError, match="expected LABEL=VALUE"):
        GpuPlacement.parse_label("pool")


def test_compiled_chain_follows_params_stages(tmp_path, params):
    from conftest import with_stage_256

    _, spec, _ = _compile(_params_file(with_stage_256(params), tmp_path), tmp_path / "training.yaml")
    assert _stages(_by_component(spec, spec["root"]["dag"]["tasks"])["train_stage"]) == [8, 16, 32, 64, 128, 256]


def test_pipeline_runs_locally_with_a_256px_stage(sample_source, s3_server, kfp_local, tmp_path, params, monkeypatch):
    """A 256 px stage added in params trains through kfp.local: data from an S3 prefix reached
    through the run's s3_endpoint parameter, versioned with DVC in the object store, the six-stage
    cascade and the ProGAN chain, evaluation, registration and promotion, all in one MLflow
    pipeline run tagged with the data version."""
    from conftest import s3_client, tiny_training_params, with_stage_256
    from facectx.config import dump_params

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    # The photos in the object store; the steps get its credentials from the environment (as from
    # the Secret in a pod) but its endpoint only from the run parameter.
    client = s3_client(s3_server)
    client.create_bucket(Bucket="facectx-kfp-local")
    for photo in sorted(sample_source.rglob("*.jpg")):  # laid out as sample_source: images/ beside the split lists
        client.upload_file(
            str(photo), "facectx-kfp-local", f"faces/images/{photo.relative_to(sample_source).as_posix()}"
        )
    for name in ("peopleDevTrain.txt", "peopleDevTest.txt"):
        client.upload_file(str(sample_source.parent / name), "facectx-kfp-local", f"faces/{name}")
    for key, value in s3_server.items():
        if key != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
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
    pipeline = build_training_pipeline(_params_file(quick, tmp_path), gpus_per_stage=0)

    run = pipeline(
        source="s3://facectx-kfp-local/faces/images",
        params_yaml=dump_params(quick),
        profile="",
        mlflow_tracking_uri=store,
        s3_endpoint=s3_server["AWS_ENDPOINT_URL"],
        resume_uri="",
        dvc_remote="s3://facectx-kfp-local/dvc",
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

    _check_the_data_version(tmp_path, prepared[0], runs, champion, s3_server)


def _check_the_data_version(tmp_path, prepared, runs, champion, s3_server):
    """Every tracked run and the model version carry the run's data version; each step fetched
    only what it reads; a clone of the project holding the pointers gets the same bytes back."""
    from test_dvc_pipeline import _project_copy, _run

    from facectx.data.versioning import version_tags

    [pointers] = [p.parents[2] for p in (tmp_path / "kfp").rglob("data/prepared/train.dvc")]
    tags = version_tags(pointers)
    assert set(tags) >= {f"facectx.data.dvc.data/{name}" for name in ("raw", "prepared/train", "prepared/test")}
    tracked = [r for r in runs if r.info.run_name.startswith(("cascade/", "progan/", "evaluate", "register-"))]
    assert len(tracked) == 2 * 6 + 2
    for run in tracked:
        assert {k: run.data.tags.get(k) for k in tags} == tags, run.info.run_name
    assert {k: champion.tags.get(k) for k in tags} == tags
    above = [r for r in runs if r.info.run_name in ("cascade", "progan") or "facectx.pipeline_key" in r.data.tags]
    assert len(above) == 3  # the pipeline run and each model's run carry it too
    for run in above:
        assert {k: run.data.tags.get(k) for k in tags} == tags, run.info.run_name
        assert "facectx.data.bytes_fetched" not in run.data.tags  # a stage's own figure stays on its run
    size = sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file())
    fetched = {
        r.info.run_name: int(r.data.tags["facectx.data.bytes_fetched"]) for r in runs if "/stage_" in r.info.run_name
    }
    print(f"bytes fetched per training step, of {size} prepared: {fetched}")
    assert fetched["cascade/stage_8"] < 0.05 * size < fetched["cascade/stage_256"] <= size

    project = _project_copy(tmp_path / "clone")
    version = project / "versions" / "kfp-local"
    for pointer in pointers.rglob("*.dvc"):
        (version / pointer.relative_to(pointers)).parent.mkdir(parents=True, exist_ok=True)
        (version / pointer.relative_to(pointers)).write_bytes(pointer.read_bytes())
    dvc = str(Path(sys.executable).parent / "dvc")
    _run([dvc, "remote", "add", "-f", "-d", "kfp", "s3://facectx-kfp-local/dvc"], project)
    _run([dvc, "remote", "modify", "--local", "kfp", "endpointurl", s3_server["AWS_ENDPOINT_URL"]], project)
    _run([dvc, "pull", "-q", "-r", "kfp", *map(str, version.rglob("*.dvc"))], project)
    for split in ("train", "val", "test"):
        for path in (prepared / split).rglob("*"):
            if path.is_file():
                pulled = version / "data" / "prepared" / split / path.relative_to(prepared / split)
                assert pulled.read_bytes() == path.read_bytes(), pulled
