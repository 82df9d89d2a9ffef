"""Compile facectx's Kubeflow pipelines to YAML:
python -m pipelines.compile [--out build/pipelines] [--params params.yaml] [--image IMG]"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import yaml
from kfp import compiler

from components.image import IMAGE_ENV
from facectx.config import DEFAULT_PARAMS_FILE, load_params
from pipelines.training import build_training_pipeline


def compile_pipeline(
    params_file: str | os.PathLike,
    out_path: str | os.PathLike,
    image: str | None = None,
    gpus_per_stage: int = 1,
    parallelism: int = 0,
    *,
    caching: bool = True,
) -> Path:
    """The training pipeline for a params file (its stage list; its text is the pipeline's default
    params_yaml) as Kubeflow YAML at out_path.

    image: runs every step in this image; default: $FACECTX_IMAGE when set (read now, never at
    import), else the components' own (components.image: the package version's).
    caching=False: no task in any DAG reuses a cached result. kfp.Client's enable_caching=False
    only rewrites the root DAG's tasks, not those inside a ParallelFor (the compared models).
    """
    image = image or os.environ.get(IMAGE_ENV) or None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_training_pipeline(params_file, gpus_per_stage=gpus_per_stage, parallelism=parallelism)
    # Written beside the target and renamed over it, so a reader (or a submit racing a compile)
    # never sees half a file. kfp insists on a .yaml ending.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp.yaml")
    try:
        compiler.Compiler().compile(pipeline, str(tmp))
        if image or not caching:
            _rewrite(tmp, image, caching)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _rewrite(path: Path, image: str | None, caching: bool) -> None:
    text = path.read_text()
    # kfp's header comment (name, inputs and their defaults) is not part of the documents: keep it.
    header = "".join(itertools.takewhile(lambda line: line.startswith("#"), text.splitlines(keepends=True)))
    spec, *platform = yaml.safe_load_all(text)
    if image:
        for executor in spec["deploymentSpec"]["executors"].values():
            if "container" in executor:  # importer/resolver executors run no image of ours
                executor["container"]["image"] = image
    if not caching:
        dags = [spec["root"]["dag"]] + [
            component["dag"] for component in spec["components"].values() if "dag" in component
        ]
        for dag in dags:
            for task in dag["tasks"].values():
                task.setdefault("cachingOptions", {})["enableCache"] = False
    # sort_keys as kfp's own writer does, so a rewritten file diffs cleanly against a plain compile.
    path.write_text(header + yaml.safe_dump_all([spec, *platform], sort_keys=True))


def compile_all(
    out_dir: str | os.PathLike,
    params_file: str | os.PathLike = DEFAULT_PARAMS_FILE,
    image: str | None = None,
    gpus_per_stage: int = 1,
    parallelism: int = 0,
) -> list[Path]:
    load_params(params_file)  # an invalid params file fails here, with the key it is about
    return [compile_pipeline(params_file, Path(out_dir) / "training.yaml", image, gpus_per_stage, parallelism)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="build/pipelines", help="folder for the YAML files (default: %(default)s)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: %(default)s)")
    parser.add_argument(
        "--image", help="container image for every step (default: FACECTX_IMAGE, else the package version's)"
    )
    parser.add_argument("--gpus-per-stage", type=int, default=1, help="GPUs per training step (default: %(default)s)")
    parser.add_argument(
        "--parallelism", type=int, default=0, help="compared models trained at once (default: %(default)s, all)"
    )
    args = parser.parse_args()
    for path in compile_all(
        args.out,
        params_file=args.params,
        image=args.image,
        gpus_per_stage=args.gpus_per_stage,
        parallelism=args.parallelism,
    ):
        print(path)
