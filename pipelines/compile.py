"""Compile the training pipeline to Kubeflow YAML: the one implementation behind
`facectx pipeline compile` and `facectx pipeline submit`."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import yaml
from kfp import compiler

from components.image import IMAGE_ENV, default_image
from facectx.config import load_params
from pipelines.gpu import GpuPlacement
from pipelines.hallucinate import build_hallucinate_pipeline
from pipelines.training import build_training_pipeline


def compile_pipeline(
    params_file: str | os.PathLike,
    out_path: str | os.PathLike,
    image: str | None = None,
    gpus_per_stage: int = 1,
    parallelism: int = 0,
    placement: GpuPlacement | None = None,
    pipeline_name: str = "training",
) -> Path:
    """The training pipeline for a params file (its stage list; its text is the pipeline's default
    params_yaml) as Kubeflow YAML at out_path.

    image: every step runs it; default: $FACECTX_IMAGE when set (read now, never at import), else
    the tag `make image` gives an image of this checkout (components.image.default_image).
    placement: where the GPU steps land (pipelines.gpu.GpuPlacement; default: by the GPU limit).
    """
    load_params(params_file)  # an invalid params file fails here, with the key it is about
    image = image or os.environ.get(IMAGE_ENV) or default_image()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if pipeline_name == "hallucinate":  # facectx-hallucinate: its parallelism is a run parameter
        pipeline = build_hallucinate_pipeline(params_file, gpus_per_stage, placement)
    else:
        pipeline = build_training_pipeline(params_file, gpus_per_stage, parallelism, placement)
    # Written beside the target and renamed over it, so a reader (or a submit racing a compile)
    # never sees half a file. kfp insists on a .yaml ending.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp.yaml")
    try:
        compiler.Compiler().compile(pipeline, str(tmp))
        _set_image(tmp, image)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _set_image(path: Path, image: str) -> None:
    """Every step's image (the components are declared with a placeholder: components.image)."""
    text = path.read_text()
    # kfp's header comment (name, inputs and their defaults) is not part of the documents: keep it.
    header = "".join(itertools.takewhile(lambda line: line.startswith("#"), text.splitlines(keepends=True)))
    spec, *platform = yaml.safe_load_all(text)
    for executor in spec["deploymentSpec"]["executors"].values():
        if "container" in executor:  # importer/resolver executors run no image of ours
            executor["container"]["image"] = image
    # sort_keys as kfp's own writer does, so the file diffs cleanly against a plain compile.
    path.write_text(header + yaml.safe_dump_all([spec, *platform], sort_keys=True))
