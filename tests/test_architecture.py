"""The architecture, held: imports run one way (orchestrators -> steps -> training / evaluation /
registry / serving -> inference, tracking -> losses, checkpoint -> models, data -> config, io),
nothing imports in a circle, no module or function outgrows its limit, and each DVC stage's code
dependencies are the modules its step really imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from architecture import REPO, code_files, covering, cycles, import_graph, module_files

# Each unit (a top-level module or package) and its layer: a module imports only units of lower
# layers, or modules of its own unit. Equal numbers are siblings that must not import each other.
LAYERS = {
    "facectx.cli": 9,
    "pipelines": 8,  # compiles and submits the Kubeflow pipeline (facectx.cli's `pipeline` commands call it)
    "facectx.airgap": 8,
    "components": 7,
    "facectx.steps": 6,
    "facectx.served_model": 6,  # the file MLflow runs to load the registered model (models from code)
    "facectx.training": 5,
    "facectx.evaluation": 5,
    "facectx.registry": 5,
    "facectx.serving": 5,
    "facectx.bulk": 5,  # hallucinate-dataset: a dataset through a trained model, in shards
    "facectx.inference": 4,
    "facectx.tracking": 4,
    "facectx.losses": 3,
    "facectx.checkpoint": 3,  # records the data version (data.shards) of what it was trained on
    "facectx.data": 2,
    "facectx.models": 2,
    "facectx.assets": 1,
    "facectx.weights": 1,
    "facectx.tfjs": 1,
    "facectx.layout": 1,
    "facectx.config": 0,
    "facectx.io_utils": 0,
    "facectx.tensors": 0,
    "facectx.ssim": 0,
    "facectx.progress": 0,  # progress bars / periodic log lines of long steps
    "facectx": 0,  # the package's __init__ (its version)
}


def unit_of(module: str) -> str:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    raise KeyError(module)


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files() if unit_of(m) == "facectx" and m != "facectx"]
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


# Each DVC stage's command runs one step module; its code dependencies are that module's import
# graph. Tracking is left out where a stage makes files: what it logs to MLflow is not in them.
STAGE_STEPS = {
    "ingest": ("facectx.steps.ingest", ("facectx.tracking",)),
    "validate": ("facectx.steps.validate", ("facectx.tracking",)),
    "prepare": ("facectx.steps.prepare", ("facectx.tracking",)),
    "train": ("facectx.steps.train", ("facectx.tracking",)),
    "train_variant": ("facectx.steps.train", ("facectx.tracking",)),
    "evaluate": ("facectx.steps.evaluate", ("facectx.tracking",)),
    "register": ("facectx.steps.register", ()),
    "hallucinate": ("facectx.steps.hallucinate_dataset", ("facectx.tracking",)),
}
# dvc.yaml files: the default pipeline, and hallucinate/dvc.yaml (run only when named: a whole dataset).
DVC_FILES = ("dvc.yaml", "hallucinate/dvc.yaml")
# Code a stage runs without importing it: the registered model's loader, which MLflow runs by path.
STAGE_EXTRA = {"register": {REPO / "src/facectx/served_model.py"}}


def declared_code(deps: list[str]) -> set[Path]:
    files = set()
    for dep in deps:
        path = REPO / dep
        if dep.startswith("src/"):
            files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return files


def dvc_stages() -> dict[str, dict]:
    return {
        name: stage for file in DVC_FILES for name, stage in yaml.safe_load((REPO / file).read_text())["stages"].items()
    }


@pytest.mark.parametrize("stage", sorted(STAGE_STEPS))
def test_dvc_code_dependencies_are_the_step_import_graph(stage):
    stages = dvc_stages()
    declared = stages[stage]["do"]["deps"] if "foreach" in stages[stage] else stages[stage]["deps"]
    entry, leave_out = STAGE_STEPS[stage]
    expected = code_files(entry, leave_out) | STAGE_EXTRA.get(stage, set())
    got = declared_code(declared)
    missing = sorted(p.relative_to(REPO).as_posix() for p in expected - got)
    stale = sorted(p.relative_to(REPO).as_posix() for p in got - expected)
    assert not missing and not stale, (
        f"dvc stage {stage}: code it runs but does not depend on {missing}; code it depends on but "
        f"does not run {stale}. Its code dependencies: {covering(expected)}"
    )


def test_every_stage_command_has_its_step():
    """A new DVC stage gets its entry in STAGE_STEPS (so its code dependencies are checked)."""
    assert set(dvc_stages()) == set(STAGE_STEPS)


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60


def test_small_modules_and_functions():
    """No module in src/, components/ or pipelines/ over 300 lines, no function over 60."""
    too_long = []
    for module, path in module_files().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}.{node.name}: {length} lines")
    assert not too_long, too_long
