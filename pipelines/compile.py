"""Compile every facectx pipeline to Kubeflow YAML: python -m pipelines.compile [--out build/pipelines]"""
import argparse
from pathlib import Path

from kfp import compiler

from pipelines.training import training_pipeline

PIPELINES = {"training": training_pipeline}


def compile_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in PIPELINES.items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="build/pipelines")
    for path in compile_all(Path(parser.parse_args().out)):
        print(path)
