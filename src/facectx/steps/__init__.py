"""The pipeline steps, one module per step: the CLI (and so DVC) and the Kubeflow components call
these functions, so both orchestrators run the same code.

Each module imports only what its step runs (nothing is re-exported here), so a step's import
graph is its DVC stage's code dependencies (tests/test_architecture.py checks dvc.yaml against it).
"""
