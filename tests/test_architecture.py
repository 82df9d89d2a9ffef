"""The architecture, held: imports run one way (orchestrators -> steps -> training / evaluation /
registry -> models, losses, data -> config, io), nothing imports in a circle, and each DVC stage's
code dependencies are the modules its step really imports."""

from __future__ import annotations

import pytest
from architecture import cycles, import_graph, module_files

# Each unit (a top-level module or package) and its layer: a module imports only units of lower
# layers, or modules of its own unit. Equal numbers are siblings that must not import each other.
LAYERS = {
    "facectx.cli": 9,
    "pipelines": 8,  # compiles and submits the Kubeflow pipeline (facectx.cli's `pipeline` commands call it)
    "facectx.airgap": 8,
    "components": 7,
    "facectx.steps": 6,
    "facectx.training": 5,
    "facectx.evaluation": 5,
    "facectx.registry": 5,
    "facectx.serving": 5,
    "facectx.inference": 4,
    "facectx.tracking": 4,
    "facectx.losses": 3,
    "facectx.data": 2,
    "facectx.models": 2,
    "facectx.checkpoint": 2,
    "facectx.assets": 1,
    "facectx.weights": 1,
    "facectx.tfjs": 1,
    "facectx.layout": 1,
    "facectx.config": 0,
    "facectx.io_utils": 0,
    "facectx.tensors": 0,
    "facectx.ssim": 0,
    "facectx": 0,  # the package's __init__ (its version)
}


def unit_of(module: str) -> str:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    raise KeyError(module)


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files() if not any(m == u or m.startswith(u + ".") for u in LAYERS)]
    assert not unplaced, f"modules with no layer in LAYERS: {unplaced}"


def test_imports_run_one_way():
    wrong = []
    for module, targets in import_graph().items():
        unit = unit_of(module)
        for target in targets:
            other = unit_of(target)
            if other != unit and LAYERS[other] >= LAYERS[unit]:
                wrong.append(f"{module} (layer {LAYERS[unit]}) imports {target} (layer {LAYERS[other]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    assert cycles() == []


def test_the_layer_rule_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """The check itself: a data module importing the trainer is caught."""
    graph = dict(import_graph())
    graph["facectx.data"] = graph["facectx.data"] | {"facectx.training"}
    monkeypatch.setattr("test_architecture.import_graph", lambda: graph)
    with pytest.raises(AssertionError, match="facectx.data .layer 2. imports facectx.training"):
        test_imports_run_one_way()
