"""The model registry on a real tiny model: register versions as challenger, promote to champion
only when the challenger wins on every gate metric, and log every decision."""

from __future__ import annotations

import dataclasses
import json

import pytest
from mlflow.tracking import MlflowClient

from facectx import registry
from facectx.steps.register import promote_step, register_step

NAME = "facectx-test-cascade"
GATES = ("fd:lower", "identity_match:higher", "perceptual:lower")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)  # artifacts (mlartifacts/) land beside the store
        yield uri


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_cascade):
    """The session's trained tiny cascade: its params and its last stage's checkpoint."""
    return tiny_cascade.params, tiny_cascade.checkpoint


def _aliases(client, name):
    return dict(client.get_registered_model(name).aliases)


def test_register_and_promote_only_a_better_challenger(tiny_checkpoint, prepared_data, store, tmp_path):
    tiny, checkpoint = tiny_checkpoint
    tiny = dataclasses.replace(tiny, registry=dataclasses.replace(tiny.registry, model_name=NAME, gate_metrics=GATES))
    client = MlflowClient(store)

    # Version 1 through the register step: pyfunc model logged in a run, metrics from metrics.json.
    first = {"fd": 10.0, "identity_match": 0.50, "perceptual": 0.30, "ssim": 0.6}
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"methods": {"cascade": first, "telea": {"fd": 1.0}}}))
    result = register_step(
        tiny, checkpoint, metrics_file, prepared_dir=prepared_data, raw_dir=prepared_data.parent / "raw"
    )
    assert result["version"] == 1 and result["metrics"] == first
    assert _aliases(client, NAME) == {"challenger": 1}
    version = client.get_model_version(NAME, "1")
    assert registry.version_metrics(version) == first and version.run_id == result["run_id"]
    assert client.get_run(result["run_id"]).data.metrics["fd"] == 10.0

    decision = promote_step(tiny)
    assert decision["promoted"] and decision["champion_before"] is None and decision["champion_after"] == 1
    assert _aliases(client, NAME) == {"challenger": 1, "champion": 1}

    # Version 2: better on two gate metrics, worse on fd -> not promoted.
    worse = {"fd": 12.0, "identity_match": 0.60, "perceptual": 0.20}
    assert registry.register(result["model_uri"], NAME, worse, result["run_id"]) == 2
    assert _aliases(client, NAME) == {"challenger": 2, "champion": 1}
    decision = registry.promote(NAME, GATES)
    assert not decision["promoted"] and "fd" in decision["reason"]
    assert _aliases(client, NAME)["champion"] == 1
    assert decision["challenger"] == {"version": 2, "metrics": worse}
    assert decision["champion_before"] == {"version": 1, "metrics": first}
    assert {row["metric"]: row["better"] for row in decision["comparisons"]} == {
        "fd": False,
        "identity_match": True,
        "perceptual": True,
    }
    run = client.get_run(decision["run_id"])
    assert run.data.tags["facectx.decision"] == "rejected" and run.data.tags["facectx.champion_version_after"] == "1"
    assert run.data.metrics["challenger.fd"] == 12.0 and run.data.metrics["champion.fd"] == 10.0
    logged = json.loads(
        client.download_artifacts(run.info.run_id, "promotion_decision.json", str(tmp_path))
        and (tmp_path / "promotion_decision.json").read_text()
    )
    assert logged["challenger"]["metrics"] == worse and logged["champion_before"]["metrics"] == first
    assert client.get_model_version(NAME, "2").tags["facectx.promotion"] == "rejected"

    # Version 3: better on every gate metric -> champion. A pipeline that registered version 2
    # must not promote version 3 in its place: nothing changes.
    better = {"fd": 9.0, "identity_match": 0.55, "perceptual": 0.25}
    assert registry.register(result["model_uri"], NAME, better, result["run_id"]) == 3
    with pytest.raises(ValueError, match="the challenger is version 3, not 2"):
        registry.promote(NAME, GATES, expected_version=2)
    assert _aliases(client, NAME) == {"challenger": 3, "champion": 1}
    decision = registry.promote(NAME, GATES, expected_version=3)
    assert decision["promoted"] and decision["champion_before"]["version"] == 1 and decision["champion_after"] == 3
    assert _aliases(client, NAME) == {"challenger": 3, "champion": 3}
    assert client.get_run(decision["run_id"]).data.tags["facectx.decision"] == "promoted"

    # Promoting again changes nothing.
    again = registry.promote(NAME, GATES)
    assert not again["promoted"] and "already the champion" in again["reason"]
    assert _aliases(client, NAME)["champion"] == 3


def test_versions_measured_differently_are_not_compared(tiny_checkpoint, prepared_data, store, tmp_path):
    """Better numbers from another feature space or test set prove nothing: no promotion unless forced."""
    tiny, checkpoint = tiny_checkpoint
    name = f"{NAME}-protocol"
    tiny = dataclasses.replace(tiny, registry=dataclasses.replace(tiny.registry, model_name=name, gate_metrics=GATES))
    client = MlflowClient(store)
    evaluation = {
        "matcher": "faceres",
        "fd_network": "faceres conv_pw_5",
        "perceptual_network": "faceres",
        "photos": 200,
        "methods": {"cascade": {"fd": 30.0, "identity_match": 0.6, "perceptual": 0.5}},
    }
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps(evaluation))
    register_step(tiny, checkpoint, metrics_file, prepared_dir=prepared_data, raw_dir=prepared_data.parent / "raw")
    assert registry.version_protocol(client.get_model_version(name, "1"))["fd_network"] == "faceres conv_pw_5"
    assert promote_step(tiny)["promoted"]

    evaluation.update(
        fd_network="InceptionV3", methods={"cascade": {"fd": 10.0, "identity_match": 0.7, "perceptual": 0.4}}
    )
    metrics_file.write_text(json.dumps(evaluation))
    assert (
        register_step(tiny, checkpoint, metrics_file, prepared_dir=prepared_data, raw_dir=prepared_data.parent / "raw")[
            "version"
        ]
        == 2
    )
    decision = promote_step(tiny)
    assert not decision["promoted"] and "not comparable" in decision["reason"] and "fd_network" in decision["reason"]
    assert _aliases(client, name) == {"challenger": 2, "champion": 1}

    forced = promote_step(tiny, force=True)
    assert forced["promoted"] and forced["forced"] and _aliases(client, name) == {"challenger": 2, "champion": 2}
    assert client.get_run(forced["run_id"]).data.tags["facectx.decision"] == "forced"


def test_gate_needs_every_metric():
    rows = registry.compare({"fd": 1.0}, {"fd": 2.0, "identity_match": 0.5}, ["fd:lower", "identity_match:higher"])
    assert [row["better"] for row in rows] == [True, False]
    with pytest.raises(ValueError, match="metric:higher"):
        registry.parse_gates(["fd:smaller"])


def test_promote_without_challenger_is_a_clear_error(store):
    with pytest.raises(ValueError, match="no 'challenger' version"):
        registry.promote("facectx-never-registered", GATES)
