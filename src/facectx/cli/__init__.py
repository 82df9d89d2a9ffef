"""The facectx command line (the `facectx` console script; `python -m facectx.cli`).

main assembles the commands; each group's module defines its commands' options beside their
handlers: data (ingest, validate, prepare), training (train-stage, train), evaluation (evaluate,
register, promote), airgap (pack, run, import), pipeline (Kubeflow compile, submit), serving
(serve, hallucinate); options holds the folder options they share.
"""

from facectx.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
