"""The MLflow model registry: register a model version as `challenger`; promote it to `champion`
only when it beats the champion on every gate metric.

Aliases, not stages (deprecated in MLflow 3). A version's evaluation metrics are stored as its
tags `metric.<name>`, so the gate compares versions without reading their runs. Every promotion
decision is logged as an MLflow run (tags + `promotion_decision.json`) in the facectx experiment.
What MLflow is asked goes through facectx.tracking (its ModelRegistry and step runs).
"""

from __future__ import annotations

import json
import math
import time

from facectx import tracking
from facectx.config import parse_gates  # the one parser of registry.gate_metrics (also checked when params load)

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_TAG = "metric."
PROTOCOL_TAG = "protocol."


def register(
    model_uri: str,
    name: str,
    metrics: dict,
    run_id: str | None = None,
    protocol: dict | None = None,
    tracking_uri: str | None = None,
    data_tags: dict[str, str] | None = None,
) -> int:
    """Register `model_uri` as a new version of `name`, alias it `challenger`, keep `metrics` as tags.
    protocol: how the metrics were measured (networks, test photos); kept as tags so the gate only
    compares versions measured the same way. tracking_uri: the registry's (default: facectx.tracking's).
    data_tags: further tags of the version: the version of the data it was trained on (a Kubeflow
    run's .dvc pointers), the weights it serves (facectx.weights)."""
    models = tracking.ModelRegistry(tracking_uri)
    tags = {f"{METRIC_TAG}{key}": repr(float(value)) for key, value in metrics.items()}
    tags.update({f"{PROTOCOL_TAG}{key}": str(value) for key, value in (protocol or {}).items()})
    if run_id:
        tags["facectx.run_id"] = run_id
    tags.update(data_tags or {})
    version = models.register(model_uri, name, tags)
    models.set_alias(name, CHALLENGER, version)
    return version


def version_metrics(version) -> dict[str, float]:
    return {key[len(METRIC_TAG) :]: float(value) for key, value in version.tags.items() if key.startswith(METRIC_TAG)}


def version_protocol(version) -> dict[str, str]:
    return {key[len(PROTOCOL_TAG) :]: value for key, value in version.tags.items() if key.startswith(PROTOCOL_TAG)}


def compare(challenger: dict[str, float], champion: dict[str, float], gates) -> list[dict]:
    """One row per gate: is the challenger strictly better? (A value the champion lacks counts as beaten.)"""
    rows = []
    for metric, direction in parse_gates(gates):
        new, old = challenger.get(metric), champion.get(metric)
        if new is None or math.isnan(new):
            better, note = False, "challenger has no value"
        elif old is None or math.isnan(old):
            better, note = True, "champion has no value"
        else:
            better = new > old if direction == "higher" else new < old
            note = ""
        rows.append(
            {
                "metric": metric,
                "direction": direction,
                "challenger": new,
                "champion": old,
                "better": better,
                **({"note": note} if note else {}),
            }
        )
    return rows


def promote(
    name: str,
    gate_metrics,
    expected_version: int | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> dict:
    """Make the challenger champion if there is none, or if it wins on every gate metric; log the decision.
    expected_version: refuse (change nothing) unless the challenger is that version -- a pipeline
    promotes the version it registered, not one another run registered in between.
    Metrics measured another way (other networks or test photos) are not comparable: no promotion
    unless `force` (a person's decision, logged as such).
    tracking_uri, experiment: the registry's and the decision run's (default: facectx.tracking's)."""
    models = tracking.ModelRegistry(tracking_uri)
    challenger = _challenger(models, name, expected_version)
    champion = models.by_alias(name, CHAMPION)
    challenger_metrics = version_metrics(challenger)
    champion_metrics = version_metrics(champion) if champion is not None else None
    comparisons = compare(challenger_metrics, champion_metrics or {}, gate_metrics)
    differences = (
        [] if champion is None else _protocol_differences(version_protocol(challenger), version_protocol(champion))
    )
    promoted, reason = _verdict(challenger, champion, comparisons, differences, force)
    if promoted:
        models.set_alias(name, CHAMPION, challenger.version)
    decision = {
        "model_name": name,
        "promoted": promoted,
        "reason": reason,
        "gate_metrics": list(gate_metrics),
        "forced": force,
        "challenger": {"version": int(challenger.version), "metrics": challenger_metrics},
        "champion_before": None
        if champion is None
        else {"version": int(champion.version), "metrics": champion_metrics},
        "champion_after": int(challenger.version)
        if promoted
        else (None if champion is None else int(champion.version)),
        "comparisons": comparisons,
        "protocol_differences": differences,
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    decision["run_id"] = _log_decision(decision, tracking_uri, experiment)
    models.set_tag(name, challenger.version, "facectx.promotion", _outcome(decision))
    return decision


def _challenger(models, name: str, expected_version: int | None):
    """The `challenger` version of `name`; an error when there is none, or it is not expected_version."""
    challenger = models.by_alias(name, CHALLENGER)
    if challenger is None:
        raise ValueError(f"registered model {name!r} has no {CHALLENGER!r} version: run `facectx register` first")
    if expected_version is not None and int(challenger.version) != int(expected_version):
        raise ValueError(
            f"registered model {name!r}: the challenger is version {challenger.version}, not "
            f"{expected_version}; another run registered since -- nothing was promoted"
        )
    return challenger


def _verdict(challenger, champion, comparisons: list[dict], differences: list[str], force: bool) -> tuple[bool, str]:
    """(promoted, reason), the first rule that applies deciding."""
    if champion is not None and champion.version == challenger.version:
        return False, f"version {challenger.version} is already the champion"
    if force:
        return True, "forced by hand: the gate was not applied"
    if champion is None:
        return True, "no champion yet: the challenger becomes champion"
    if differences:
        return False, (
            f"not comparable: measured differently ({'; '.join(differences)}); re-register the "
            "champion's model with the same evaluation, or `facectx promote --force`"
        )
    losing = [row["metric"] for row in comparisons if not row["better"]]
    if not losing:
        return True, "the challenger is better on every gate metric"
    return False, f"the challenger is not better on {', '.join(losing)}"


def _outcome(decision: dict) -> str:
    if not decision["promoted"]:
        return "rejected"
    return "forced" if decision["forced"] else "promoted"


def _protocol_differences(challenger: dict[str, str], champion: dict[str, str]) -> list[str]:
    return [
        f"{key}: champion {champion.get(key, 'unrecorded')!r}, challenger {challenger.get(key, 'unrecorded')!r}"
        for key in sorted(set(challenger) | set(champion))
        if challenger.get(key) != champion.get(key)
    ]


def _log_decision(decision: dict, tracking_uri: str | None = None, experiment: str | None = None) -> str:
    champion = decision["champion_before"]
    tags = {
        "facectx.stage": "promote",
        "facectx.registered_model": decision["model_name"],
        "facectx.decision": _outcome(decision),
        "facectx.reason": decision["reason"],
        "facectx.challenger_version": str(decision["challenger"]["version"]),
        "facectx.champion_version_before": str(champion["version"]) if champion else "none",
        "facectx.champion_version_after": str(decision["champion_after"]),
    }
    run_name = f"promote-{decision['model_name']}-v{decision['challenger']['version']}"
    with tracking.step_run(run_name, tags, tracking_uri, experiment) as run_id:
        metrics = {f"challenger.{k}": v for k, v in decision["challenger"]["metrics"].items()}
        if champion:
            metrics.update({f"champion.{k}": v for k, v in champion["metrics"].items()})
        tracking.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})
        tracking.log_dict(json.loads(json.dumps(decision)), "promotion_decision.json")
        return run_id
