"""`facectx register` logs the served model the way MLflow 3 asks (models from code, not a pickled
object; a typed predict): MLflow has nothing to warn about, and nothing is pickled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import facectx


def test_register_prints_no_mlflow_warning(tiny_cascade, lfw_dir, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"methods": {"cascade": {"fd": 10.0, "identity_match": 0.5}}}))
    photo = lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    command = [sys.executable, "-m", "facectx.cli", "--params", str(tiny_cascade.params_file), "register"]
    command += ["--checkpoint", str(tiny_cascade.checkpoint), "--metrics", str(metrics), "--example-photo", str(photo)]
    # What a person sees: Python's default warning filters, a store of this test's own.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    source = str(Path(facectx.__file__).resolve().parents[1])  # this facectx, from any working directory
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "registered facectx" in result.stdout and "version 1 as challenger" in result.stdout, result.stdout
    warnings = [line for line in result.stderr.splitlines() if "mlflow" in line.lower() and "warn" in line.lower()]
    assert warnings == [], result.stderr

    # Logged from code: the model's files hold the code file, and no pickled model.
    files = {path.name for path in (tmp_path / "mlartifacts").rglob("*") if path.is_file()}
    assert {"MLmodel", "served_model.py", "model.safetensors"} <= files and "python_model.pkl" not in files, files
